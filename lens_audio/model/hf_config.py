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
