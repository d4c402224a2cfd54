"""Hugging Face configs of small Qwen2-Audio models, shared by the workshop's training and the tests' random models.

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
