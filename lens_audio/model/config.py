"""Configuration of a hooked Qwen2-Audio model, in TransformerLens vocabulary.

`AudioLMConfig` is what `HookedAudioLM.cfg` holds. Its field names follow
TransformerLens (`n_layers`, `d_model`, `n_heads`, `d_head`, `d_mlp`,
`d_vocab`, `normalization_type`, ...) because `ActivationCache` helpers read
them; the audio encoder's shape lives in a nested `AudioEncoderConfig`.
Both are built from a Hugging Face `Qwen2AudioConfig` by
`AudioLMConfig.from_hf_config`, which refuses features the port does not
implement instead of silently computing something else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

AttentionImplementation = Literal["auto", "sdpa", "eager"]


@dataclass
class AudioEncoderConfig:
    """Shape of the Whisper-style audio encoder (`Qwen2AudioEncoder`)."""

    n_mels: int = 128
    n_layers: int = 32
    n_heads: int = 20
    d_model: int = 1280
    d_mlp: int = 5120
    n_ctx: int = 1500  # positions after the stride-2 conv (max_source_positions)
    activation: str = "gelu"
    scale_embedding: bool = False

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_frames(self) -> int:
        """Mel frames the encoder expects (the processor pads to this)."""
        return 2 * self.n_ctx


@dataclass
class AudioLMConfig:
    """Configuration of the language backbone plus its audio encoder.

    Attributes mirror TransformerLens 4's `TransformerLensConfig` where TransformerLens reads
    them (`ActivationCache` uses `n_layers`, `n_heads`, `d_model`, `d_mlp`,
    `attn_only`, `normalization_type`).
    """

    n_layers: int
    d_model: int
    n_heads: int
    n_key_value_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    audio_token_id: int
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    eps: float = 1e-6
    rotary_base: float = 10000.0
    n_ctx: int = 32768
    act_fn: str = "silu"
    pad_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    normalization_type: str = "RMS"
    positional_embedding_type: str = "rotary"
    attn_only: bool = False
    final_rms: bool = True
    use_attn_result: bool = False
    use_split_qkv_input: bool = False  # TransformerLens switches; see HookedAudioLM.set_use_split_qkv_input etc.
    use_hook_mlp_in: bool = False
    ungroup_grouped_query_attention: bool = False
    attn_implementation: AttentionImplementation = "auto"
    model_name: str = "qwen2-audio"
    tokenizer_name: str | None = None
    original_architecture: str = "Qwen2AudioForConditionalGeneration"
    gated_mlp: bool = True
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (grouped-query attention)."""
        return self.n_heads // self.n_key_value_heads

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    def check_heads(self, heads: "Iterable[tuple[int, int]]", caller: str) -> None:
        """Raise a ValueError naming the first (layer, head) pair that this decoder does not have."""
        for layer, head in heads:
            if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
                raise ValueError(
                    f"{caller}: head ({layer}, {head}) does not exist: this model has layers 0-{self.n_layers - 1} "
                    f"and heads 0-{self.n_heads - 1} per layer."
                )

    @classmethod
    def from_hf_config(cls, hf_config: Any, model_name: str = "qwen2-audio") -> "AudioLMConfig":
        """Build from a `transformers.Qwen2AudioConfig` (or its dict form).

        Raises:
            ValueError: if the config is not a Qwen2-Audio config, or uses a
                feature this port does not implement (sliding-window
                attention, non-default rotary scaling, another activation).
        """
        model_type = getattr(hf_config, "model_type", None)
        if model_type != "qwen2_audio":
            raise ValueError(
                f"{model_name!r} is a {model_type!r} checkpoint, not 'qwen2_audio': HookedAudioLM "
                "only loads Qwen2AudioForConditionalGeneration checkpoints "
                "(e.g. Qwen/Qwen2-Audio-7B-Instruct, mispeech/r1-aqa)."
            )
        text, audio = hf_config.text_config, hf_config.audio_config
        if getattr(text, "use_sliding_window", False):
            raise ValueError(f"{model_name!r} uses sliding-window attention, which HookedAudioLM does not implement.")
        rope = getattr(text, "rope_parameters", None) or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(
                f"{model_name!r} uses rope_type={rope_type!r}; only the default rotary embedding is implemented."
            )
        if text.hidden_act != "silu" or audio.activation_function != "gelu":
            raise ValueError(
                f"{model_name!r} uses activations {text.hidden_act!r}/{audio.activation_function!r}; "
                "HookedAudioLM implements silu (decoder) and gelu (encoder)."
            )
        n_heads = text.num_attention_heads
        d_head = getattr(text, "head_dim", None) or text.hidden_size // n_heads
        return cls(
            n_layers=text.num_hidden_layers,
            d_model=text.hidden_size,
            n_heads=n_heads,
            n_key_value_heads=text.num_key_value_heads or n_heads,
            d_head=d_head,
            d_mlp=text.intermediate_size,
            d_vocab=text.vocab_size,
            audio_token_id=hf_config.audio_token_id,
            audio=AudioEncoderConfig(
                n_mels=audio.num_mel_bins,
                n_layers=audio.encoder_layers,
                n_heads=audio.encoder_attention_heads,
                d_model=audio.d_model,
                d_mlp=audio.encoder_ffn_dim,
                n_ctx=audio.max_source_positions,
                activation=audio.activation_function,
                scale_embedding=bool(audio.scale_embedding),
            ),
            eps=text.rms_norm_eps,
            rotary_base=float(rope.get("rope_theta", 10000.0)),
            n_ctx=text.max_position_embeddings,
            pad_token_id=text.pad_token_id,
            eos_token_id=text.eos_token_id,
            model_name=model_name,
            tokenizer_name=model_name,
        )

    def replace(self, **changes: Any) -> "AudioLMConfig":
        return dataclasses.replace(self, **changes)
