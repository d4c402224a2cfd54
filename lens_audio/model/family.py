"""Model families: where Qwen2-Audio, AudioFlamingo3 and Voxtral differ, and nowhere else.

All three are "Whisper-style audio encoder -> projector -> embeddings written over placeholder tokens of a
decoder-only LM". A `Family` names one checkpoint type and says, in `AudioLMConfig` fields, how it differs:

| family         | encoder output -> audio tokens               | projector                  | decoder          |
|----------------|----------------------------------------------|----------------------------|------------------|
| qwen2-audio    | padding keys masked; AvgPool(2), ln_post     | Linear (bias)              | Qwen2: q/k/v bias|
| audioflamingo3 | padding keys masked; AvgPool(2), ln_post     | Linear, GELU, Linear (bias)| Qwen2: q/k/v bias|
| voxtral        | no mask; ln_post, then 4 frames stacked      | Linear, GELU, Linear       | Llama: no biases |

Voxtral also keeps its encoder's positions in float32 in every dtype (transformers' `_keep_in_fp32_modules`).

Qwen2-Audio and AudioFlamingo3 splice each clip's first `n_audio_tokens(valid frames)` rows; Voxtral splices
every row of every 30 s chunk (its processor pads audio to whole chunks). The prompt templates differ too
(see docs/families.md); the processor of each checkpoint renders them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """One checkpoint type: its config `model_type`, transformers class, and the config fields that set it apart."""

    name: str
    model_type: str
    hf_class: str
    text_model_types: tuple[str, ...]
    hub_ids: tuple[str, ...]
    feature_mask_kwarg: str | None  # the HF forward's name for the mel-frame mask; None: the model takes none
    fields: Callable[[Any], dict[str, Any]]  # HF config -> the family's `AudioLMConfig` / `AudioEncoderConfig` fields

    def hf_inputs(self, input_ids: Any, attention_mask: Any, input_features: Any, feature_mask: Any) -> dict:
        """The keyword arguments of this family's transformers forward / generate."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "input_features": input_features}
        if self.feature_mask_kwarg is not None:
            inputs[self.feature_mask_kwarg] = feature_mask
        return inputs


def _qwen2_audio(hf_config: Any) -> dict[str, Any]:
    return dict(projector="linear", projector_bias=True, qkv_bias=True, o_bias=False,
                audio_fields=dict(downsample="avg_pool", mask_padding=True))


def _audioflamingo3(hf_config: Any) -> dict[str, Any]:
    _check_gelu(hf_config)
    return dict(projector="mlp", projector_bias=bool(hf_config.projector_bias), qkv_bias=True, o_bias=False,
                audio_fields=dict(downsample="avg_pool", mask_padding=True))


def _voxtral(hf_config: Any) -> dict[str, Any]:
    _check_gelu(hf_config)
    text, audio = hf_config.text_config, hf_config.audio_config
    if getattr(text, "mlp_bias", False):
        raise ValueError("this Voxtral checkpoint's decoder has MLP biases (mlp_bias=True), which is not implemented.")
    stack, rest = divmod(audio.encoder_ffn_dim, audio.d_model)  # the projector reads encoder_ffn_dim-wide rows
    if rest or audio.max_source_positions % stack:
        raise ValueError(
            f"Voxtral stacks encoder frames into rows of audio_config.intermediate_size ({audio.encoder_ffn_dim}): "
            f"it must be a multiple of d_model ({audio.d_model}) that divides max_source_positions "
            f"({audio.max_source_positions})."
        )
    bias = bool(getattr(text, "attention_bias", False))
    return dict(projector="mlp", projector_bias=False, qkv_bias=bias, o_bias=bias,
                audio_fields=dict(downsample="stack", stack=stack, mask_padding=False, fp32_positions=True))


def _check_gelu(hf_config: Any) -> None:
    if hf_config.projector_hidden_act != "gelu":
        raise ValueError(f"projector_hidden_act={hf_config.projector_hidden_act!r}; only 'gelu' is implemented.")


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("qwen2-audio", "qwen2_audio", "Qwen2AudioForConditionalGeneration", ("qwen2",),
               ("Qwen/Qwen2-Audio-7B-Instruct", "Qwen/Qwen2-Audio-7B", "mispeech/r1-aqa"),
               "feature_attention_mask", _qwen2_audio),
        Family("audioflamingo3", "audioflamingo3", "AudioFlamingo3ForConditionalGeneration", ("qwen2",),
               ("nvidia/audio-flamingo-3-hf",), "input_features_mask", _audioflamingo3),
        Family("voxtral", "voxtral", "VoxtralForConditionalGeneration", ("llama", "mistral"),
               ("mistralai/Voxtral-Mini-3B-2507", "mistralai/Voxtral-Small-24B-2507"), None, _voxtral),
    )
}
FAMILY_BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES.values()}
KNOWN_HUB_IDS: tuple[str, ...] = tuple(i for f in FAMILIES.values() for i in f.hub_ids)


def family_of(model_type: str | None, name: str) -> Family:
    """The family of a config's `model_type`, or a ValueError naming the ones this port loads."""
    family = FAMILIES.get(str(model_type))
    if family is None:
        known = ", ".join(f"{f.model_type!r} ({f.hf_class}, e.g. {f.hub_ids[0]})" for f in FAMILIES.values())
        raise ValueError(f"{name!r} is a {model_type!r} checkpoint; HookedAudioLM loads {known}.")
    return family
