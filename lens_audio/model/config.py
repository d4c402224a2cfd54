"""Configuration of a hooked audio-language model (Qwen2-Audio, AudioFlamingo3, Voxtral), in TransformerLens vocabulary.

`AudioLMConfig` is what `HookedAudioLM.cfg` holds. Its field names follow
TransformerLens (`n_layers`, `d_model`, `n_heads`, `d_head`, `d_mlp`,
`d_vocab`, `normalization_type`, ...) because `ActivationCache` helpers read
them; the audio encoder's shape lives in a nested `AudioEncoderConfig`.
Both are built from a Hugging Face config of one of the families in
`lens_audio.model.family` by `AudioLMConfig.from_hf_config`, which refuses
features the port does not implement instead of silently computing something else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from lens_audio.model.family import family_of, unwrap

AttentionImplementation = Literal["auto", "sdpa", "eager"]
Downsample = Literal["avg_pool", "stack"]


@dataclass
class AudioEncoderConfig:
    """Shape of the Whisper-style audio encoder, and how its frames become audio tokens (see `model.family`)."""

    n_mels: int = 128
    n_layers: int = 32
    n_heads: int = 20
    d_model: int = 1280
    d_mlp: int = 5120
    n_ctx: int = 1500  # positions after the stride-2 conv (max_source_positions)
    activation: str = "gelu"
    scale_embedding: bool = False
    downsample: Downsample = "avg_pool"  # AvgPool1d(2) before ln_post, or `stack` frames concatenated after it
    stack: int = 4  # frames per audio token when downsample == "stack"
    mask_padding: bool = True  # mask keys past a clip's end and splice only its valid tokens
    fp32_positions: bool = False  # positions kept in float32 whatever the dtype, added before rounding (Voxtral)
    window_frames: int | None = None  # Omni thinkers: attention within windows of these many frames (omni_audio)
    time_rotary: tuple[float, float, float] | None = None  # Music Flamingo: (rope_theta, partial factor, frame step)
    conv2d_hidden: int | None = None  # Qwen3-Omni: channels of the Conv2d front end (lens_audio.model.qwen3_omni_audio)
    n_window_infer: int | None = None  # Qwen3-Omni: mel frames per attention window of the encoder

    @property
    def tokens_per_chunk(self) -> int:
        """Audio-token rows the encoder gives per clip (padding included)."""
        return self.n_ctx // 2 if self.downsample == "avg_pool" else self.n_ctx // self.stack

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
    use_attn_in: bool = False  # refused with grouped-query attention, as in TransformerLens
    num_experts: int | None = None  # TransformerLens 4.x's mixture-of-experts fields: None for a dense decoder
    experts_per_token: int | None = None
    use_hook_mlp_in: bool = False
    ungroup_grouped_query_attention: bool = False
    attn_implementation: AttentionImplementation = "auto"
    model_name: str = "qwen2-audio"
    family: str = "qwen2-audio"  # a name in lens_audio.model.family.FAMILY_BY_NAME
    projector: Literal["linear", "mlp"] = "linear"  # one Linear, or Linear -> GELU -> Linear
    projector_bias: bool = True
    qkv_bias: bool = True  # decoder attention biases (Qwen2: q/k/v only; Llama: attention_bias on all four)
    o_bias: bool = False
    mrope_section: tuple[int, ...] | None = None  # Qwen Omni thinkers' TMRoPE sections (lens_audio.model.mrope)
    mrope_interleaved: bool = False  # Qwen3-Omni: sections interleaved over the frequencies (mrope.py)
    qk_norm: bool = False  # Qwen3: RMSNorm over each query/key head before rotary (hook_q_normed / hook_k_normed)
    moe_layers: tuple[int, ...] = ()  # decoder layers whose MLP is a mixture of experts (lens_audio.model.moe)
    d_expert: int | None = None  # width of each expert's MLP (moe_intermediate_size)
    norm_topk_prob: bool = True  # the chosen experts' router probabilities renormalised to sum to 1
    tokenizer_name: str | None = None
    original_architecture: str = "Qwen2AudioForConditionalGeneration"
    gated_mlp: bool = True
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    # Qwen's tokenizer has no BOS and transformers prepends none, so text helpers prepend none by default; with
    # prepend_bos=True they prepend the tokenizer's bos_token, which is its EOS when it has none (as in
    # TransformerLens). `tokenizer_prepends_bos` is set when a processor is attached (`len(encode("")) > 0`).
    default_prepend_bos: bool = False
    tokenizer_prepends_bos: bool | None = None

    @property
    def n_rep(self) -> int:
        """How many query heads share one key/value head (grouped-query attention)."""
        return self.n_heads // self.n_key_value_heads

    @property
    def d_vocab_out(self) -> int:
        return self.d_vocab

    @property
    def rotary_dim(self) -> int:
        """Rotary embedding covers the whole head (Qwen2 / Llama)."""
        return self.d_head

    @property
    def attn_scale(self) -> float:
        """What attention scores are divided by: `sqrt(d_head)` (scores = `rot_q . rot_k / attn_scale`)."""
        return self.d_head**0.5

    @property
    def use_attn_scale(self) -> bool:
        return True

    @property
    def uses_rms_norm(self) -> bool:
        """TransformerLens 4.x's flag: the decoder's norms are RMSNorm (weighted, or folded: "RMSPre")."""
        return self.normalization_type in ("RMS", "RMSPre")

    @property
    def layer_norm_folding(self) -> bool:
        """TransformerLens 4.x's flag: the norm weights are folded into the next weights (`fold_ln`)."""
        return self.normalization_type == "RMSPre"

    @property
    def attention_dir(self) -> Literal["causal"]:
        """The decoder's attention is causal (the audio encoder's, under `audio.`, is bidirectional)."""
        return "causal"

    @property
    def n_params(self) -> int:
        """TransformerLens's count of "hidden weight" parameters: attention (`4 * d_model * d_head * n_heads` per
        layer, counted per query head as TransformerLens does, even with grouped-query attention) plus MLP weights
        (`3 * d_model * d_mlp`, gated); no embeddings, biases, norms or audio encoder. `sum(p.numel() for p in
        model.parameters())` is the full count. A mixture-of-experts layer (`moe_layers`) counts every expert
        (`3 * d_model * d_expert` each) and the router (`d_model * num_experts`), as TransformerLens counts MoE."""
        attention = self.d_model * self.d_head * self.n_heads * 4
        mlp = 0 if self.attn_only else self.d_model * self.d_mlp * (2 + self.gated_mlp)
        n_moe = 0 if self.attn_only else len(self.moe_layers)
        moe = self.d_model * (self.num_experts or 0) * (3 * (self.d_expert or 0) + 1)
        return self.n_layers * (attention + mlp) + n_moe * (moe - mlp)

    def to_dict(self) -> dict[str, Any]:
        """Every field (the audio encoder's as a nested dict) and the derived TransformerLens fields, as
        `HookedTransformerConfig.to_dict()` gives them."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["audio"] = dataclasses.asdict(self.audio)
        derived = ("n_rep", "d_vocab_out", "rotary_dim", "attention_dir", "n_params", "attn_scale", "use_attn_scale",
                   "uses_rms_norm", "layer_norm_folding")
        return out | {name: getattr(self, name) for name in derived}

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
        """Build from a transformers config of a supported family (`Qwen2AudioConfig`, `AudioFlamingo3Config`,
        `VoxtralConfig`) or its dict form.

        Raises:
            ValueError: if the config is of another architecture, or uses a
                feature this port does not implement (sliding-window
                attention, non-default rotary scaling, another activation).
        """
        hf_config = unwrap(hf_config)
        family = family_of(getattr(hf_config, "model_type", None), model_name)
        text, audio = hf_config.text_config, hf_config.audio_config
        if text.model_type not in family.text_model_types:
            raise ValueError(
                f"{model_name!r}: a {family.name} checkpoint with a {text.model_type!r} decoder; this port implements "
                f"{family.name} with {' or '.join(family.text_model_types)} decoders."
            )
        if getattr(text, "use_sliding_window", False) or getattr(text, "sliding_window", None):
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
        fields = family.fields(hf_config)
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
                **fields.pop("audio_fields"),
            ),
            eps=text.rms_norm_eps,
            rotary_base=float(rope.get("rope_theta", 10000.0)),
            n_ctx=text.max_position_embeddings,
            pad_token_id=text.pad_token_id,
            eos_token_id=text.eos_token_id,
            model_name=model_name,
            tokenizer_name=model_name,
            original_architecture=family.hf_class,
            family=family.name,
            **fields,
        )

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "AudioLMConfig":
        """The config `to_dict` describes (derived entries such as `n_params` are recomputed, not read)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in fields.items() if k in names}
        if isinstance(kept.get("audio"), dict):
            kept["audio"] = AudioEncoderConfig(**kept["audio"])
        return cls(**kept)

    def replace(self, **changes: Any) -> "AudioLMConfig":
        return dataclasses.replace(self, **changes)
