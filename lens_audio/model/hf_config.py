"""Hugging Face configs of small Qwen2-Audio, AudioFlamingo3 and Voxtral models, shared by the workshop's training
and the tests' random models.

Sizes use this package's names (`d_model`, `n_layers`, ...); the audio context is `chunk_seconds` of
mel frames (50 encoder positions per second).
"""

from __future__ import annotations

from typing import Any


def qwen2_audio_config(
    vocab_size: int,
    audio_token_id: int,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_mlp: int = 128,
    audio_d_model: int = 48,
    audio_layers: int = 2,
    audio_heads: int = 4,
    n_mels: int = 16,
    chunk_seconds: int = 2,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    tie_word_embeddings: bool = False,
) -> Any:
    """A `transformers.Qwen2AudioConfig` of the given sizes (defaults: the tests' tiny model), rotary default."""
    from transformers import Qwen2AudioConfig

    return Qwen2AudioConfig(
        audio_config={
            "model_type": "qwen2_audio_encoder",
            "d_model": audio_d_model,
            "encoder_layers": audio_layers,
            "encoder_attention_heads": audio_heads,
            "encoder_ffn_dim": 2 * audio_d_model,
            "num_mel_bins": n_mels,
            "max_source_positions": chunk_seconds * 50,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": vocab_size,
            "hidden_size": d_model,
            "intermediate_size": d_mlp,
            "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "pad_token_id": pad_token_id,
            "eos_token_id": eos_token_id,
            "tie_word_embeddings": tie_word_embeddings,
        },
        audio_token_index=audio_token_id,
    )


def _audio_encoder(model_type: str, d: int, layers: int, heads: int, ffn: int, n_mels: int, chunk_seconds: int) -> dict:
    return {"model_type": model_type, "hidden_size": d, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": ffn, "num_mel_bins": n_mels, "max_source_positions": chunk_seconds * 50}


def _decoder(model_type: str, vocab_size: int, d_model: int, n_layers: int, n_heads: int, n_kv_heads: int,
             d_mlp: int, pad_token_id: int | None, eos_token_id: int | None, **extra: Any) -> dict:
    return {"model_type": model_type, "vocab_size": vocab_size, "hidden_size": d_model, "intermediate_size": d_mlp,
            "num_hidden_layers": n_layers, "num_attention_heads": n_heads, "num_key_value_heads": n_kv_heads,
            "max_position_embeddings": 4096, "pad_token_id": pad_token_id, "eos_token_id": eos_token_id, **extra}


def audioflamingo3_config(
    vocab_size: int, audio_token_id: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
    n_kv_heads: int = 2, d_mlp: int = 128, audio_d_model: int = 48, audio_layers: int = 2, audio_heads: int = 4,
    n_mels: int = 16, chunk_seconds: int = 2, pad_token_id: int | None = None, eos_token_id: int | None = None,
    projector_bias: bool = True,
) -> Any:
    """A `transformers.AudioFlamingo3Config` of the given sizes (Qwen2 decoder, MLP projector)."""
    from transformers import AudioFlamingo3Config

    return AudioFlamingo3Config(
        audio_config=_audio_encoder("audioflamingo3_encoder", audio_d_model, audio_layers, audio_heads,
                                    2 * audio_d_model, n_mels, chunk_seconds),
        text_config=_decoder("qwen2", vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_mlp, pad_token_id,
                             eos_token_id, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        audio_token_id=audio_token_id,
        projector_bias=projector_bias,
    )


def voxtral_config(
    vocab_size: int, audio_token_id: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
    n_kv_heads: int = 2, d_head: int = 24, d_mlp: int = 128, audio_d_model: int = 48, audio_layers: int = 2,
    audio_heads: int = 4, n_mels: int = 16, chunk_seconds: int = 2, pad_token_id: int | None = None,
    eos_token_id: int | None = None, attention_bias: bool = False,
) -> Any:
    """A `transformers.VoxtralConfig` of the given sizes (Llama decoder with `d_head * n_heads != d_model`, as in
    Voxtral Mini; the encoder's ffn width is 4 x its width, so the projector stacks 4 frames)."""
    from transformers import VoxtralConfig

    return VoxtralConfig(
        audio_config=_audio_encoder("voxtral_encoder", audio_d_model, audio_layers, audio_heads, 4 * audio_d_model,
                                    n_mels, chunk_seconds),
        text_config=_decoder("llama", vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_mlp, pad_token_id,
                             eos_token_id, head_dim=d_head, attention_bias=attention_bias,
                             rope_parameters={"rope_type": "default", "rope_theta": 100000000.0}),
        audio_token_id=audio_token_id,
    )


def qwen25_omni_thinker_config(
    vocab_size: int, audio_token_id: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
    n_kv_heads: int = 2, d_mlp: int = 128, audio_d_model: int = 48, audio_layers: int = 2, audio_heads: int = 4,
    n_mels: int = 16, chunk_seconds: int = 2, n_window: int = 25, mrope_section: tuple[int, ...] | None = None,
    pad_token_id: int | None = None, eos_token_id: int | None = None,
) -> Any:
    """A `transformers.Qwen2_5OmniThinkerConfig` of the given sizes: attention windows of `2 * n_window` mel frames
    (the released model: 100, i.e. 2 s windows; the default here cuts a 2 s clip into 4), TMRoPE sections
    `mrope_section` (default: the head's frequencies split 2:3:3, as the released [16, 24, 24]) and a one-block vision
    tower (built by transformers, never run by the port)."""
    from transformers import Qwen2_5OmniThinkerConfig

    half = d_model // n_heads // 2
    sections = list(mrope_section or (half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8))
    audio = {**_audio_encoder("qwen2_5_omni_audio_encoder", audio_d_model, audio_layers, audio_heads,
                              2 * audio_d_model, n_mels, chunk_seconds), "n_window": n_window, "output_dim": d_model}
    return Qwen2_5OmniThinkerConfig(
        audio_config=audio,
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                       "out_hidden_size": d_model, "fullatt_block_indexes": [0]},
        text_config=_decoder("qwen2_5_omni_text", vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_mlp,
                             pad_token_id, eos_token_id, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                          "mrope_section": sections}),
        audio_token_index=audio_token_id, audio_start_token_id=audio_token_id + 1,
        audio_end_token_id=audio_token_id + 2,
        image_token_index=audio_token_id + 3, video_token_index=audio_token_id + 4,
        vision_start_token_id=audio_token_id + 5,  # read by get_rope_index, not declared by the config class
    )


def musicflamingo_config(
    vocab_size: int, audio_token_id: int, *, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
    n_kv_heads: int = 2, d_mlp: int = 128, audio_d_model: int = 48, audio_layers: int = 2, audio_heads: int = 4,
    n_mels: int = 16, chunk_seconds: int = 2, pad_token_id: int | None = None, eos_token_id: int | None = None,
    partial_rotary_factor: float = 0.25,
) -> Any:
    """A `transformers.MusicFlamingoConfig` of the given sizes: AudioFlamingo3's plus the time rotation (theta 1200,
    the released value; a quarter of the 48 encoder channels turned per axis by default, the released factor is 0.2).
    `<|sound_bos|>` and `<|sound_eos|>` follow the audio token, as the offline processor lays them out."""
    from transformers import MusicFlamingoConfig

    base = audioflamingo3_config(vocab_size, audio_token_id, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                                 n_kv_heads=n_kv_heads, d_mlp=d_mlp, audio_d_model=audio_d_model,
                                 audio_layers=audio_layers, audio_heads=audio_heads, n_mels=n_mels,
                                 chunk_seconds=chunk_seconds, pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    return MusicFlamingoConfig(
        audio_config=base.audio_config.to_dict(), text_config=base.text_config.to_dict(), audio_token_id=audio_token_id,
        audio_bos_token_id=audio_token_id + 1, audio_eos_token_id=audio_token_id + 2,
        rope_parameters={"rope_type": "default", "rope_theta": 1200.0, "partial_rotary_factor": partial_rotary_factor},
    )


def qwen3_omni_moe_thinker_config(
    vocab_size: int, audio_token_id: int, *, d_model: int = 64, n_layers: int = 3, n_heads: int = 4,
    n_kv_heads: int = 2, d_mlp: int = 96, d_expert: int = 32, n_experts: int = 6, experts_per_token: int = 2,
    mlp_only_layers: tuple[int, ...] = (1,), decoder_sparse_step: int = 1, audio_d_model: int = 48,
    audio_layers: int = 2, audio_heads: int = 4, n_mels: int = 16, chunk_seconds: int = 2, n_window: int = 50,
    n_window_infer: int = 200, mrope_section: tuple[int, ...] | None = None, pad_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> Any:
    """A `transformers.Qwen3OmniMoeThinkerConfig` of the given sizes: mixture-of-experts MLPs on every layer but
    `mlp_only_layers` (default: layer 1 dense between two sparse ones), interleaved TMRoPE sections `mrope_section`
    (default 2:3:3 of the head's frequencies; the released [24, 20, 20]), q/k RMSNorm, and an audio encoder reading
    chunks of `2 * n_window` mel frames (1 s, as released: transformers' processor and model count 13 audio tokens
    per whole chunk, right for 100 frames only) with attention windows of `n_window_infer` frames (released: 800;
    here 2 chunks). A one-block vision tower is built by transformers and
    never run by the port."""
    from transformers import Qwen3OmniMoeThinkerConfig

    half = d_model // n_heads // 2
    sections = list(mrope_section or (half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8))
    audio = {**_audio_encoder("qwen3_omni_moe_audio_encoder", audio_d_model, audio_layers, audio_heads,
                              2 * audio_d_model, n_mels, chunk_seconds),
             "n_window": n_window, "n_window_infer": n_window_infer, "output_dim": d_model,
             "downsample_hidden_size": 8}
    text = _decoder("qwen3_omni_moe_text", vocab_size, d_model, n_layers, n_heads, n_kv_heads, d_mlp, pad_token_id,
                    eos_token_id, head_dim=d_model // n_heads, moe_intermediate_size=d_expert, num_experts=n_experts,
                    num_experts_per_tok=experts_per_token, mlp_only_layers=list(mlp_only_layers),
                    decoder_sparse_step=decoder_sparse_step, norm_topk_prob=True,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections})
    return Qwen3OmniMoeThinkerConfig(
        audio_config=audio,
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
                       "out_hidden_size": d_model, "deepstack_visual_indexes": []},
        text_config=text,
        audio_token_id=audio_token_id, audio_start_token_id=audio_token_id + 1,
        image_token_id=audio_token_id + 3, video_token_id=audio_token_id + 4,
        vision_start_token_id=audio_token_id + 5,
    )
