"""Model families: where Qwen2-Audio, AudioFlamingo3, Voxtral and the Qwen2.5-Omni thinker differ, and nowhere else.

All are "Whisper-style audio encoder -> projector -> embeddings written over placeholder tokens of a
decoder-only LM". A `Family` names one checkpoint type and says, in `AudioLMConfig` fields, how it differs:

| family         | encoder output -> audio tokens               | projector                  | decoder          |
|----------------|----------------------------------------------|----------------------------|------------------|
| qwen2-audio    | padding keys masked; AvgPool(2), ln_post     | Linear (bias)              | Qwen2: q/k/v bias|
| audioflamingo3 | padding keys masked; AvgPool(2), ln_post     | Linear, GELU, Linear (bias)| Qwen2: q/k/v bias|
| voxtral        | no mask; ln_post, then 4 frames stacked      | Linear, GELU, Linear       | Llama: no biases |
| musicflamingo  | as audioflamingo3, then rotated by time (RoTE)| Linear, GELU, Linear (bias)| Qwen2: q/k/v bias|
| qwen2.5-omni   | 2*n_window-frame windows; AvgPool(2), ln_post| the tower's proj (Linear)  | Qwen2 + TMRoPE   |
| qwen3-omni-moe | Conv2d per 1 s chunk, windows; ln_post       | proj1, GELU, proj2         | Qwen3-MoE+TMRoPE |

Voxtral also keeps its encoder's positions in float32 in every dtype (transformers' `_keep_in_fp32_modules`).
Music Flamingo is AudioFlamingo3 plus a rotary time embedding on the encoder's rows (`lens_audio.model.music_flamingo`).
The Qwen2.5-Omni thinker's encoder attends within windows and uses fixed sinusoidal positions
(`lens_audio.model.omni_audio`); its decoder's rotary positions are TMRoPE (`lens_audio.model.mrope`). Its Hub
checkpoints are whole Omni models (`model_type` "qwen2_5_omni", the thinker's weights under `thinker.`, next to the
talker's and token2wav's, which are not read); a saved thinker alone is "qwen2_5_omni_thinker". The Qwen3-Omni-MoE
thinker (`lens_audio.model.qwen3_omni_audio`, `lens_audio.model.moe`) adds q/k RMSNorm, interleaved TMRoPE and
mixture-of-experts MLPs on the layers transformers makes sparse (`decoder_sparse_step`, `mlp_only_layers`).

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
    wrappers: tuple[str, ...] = ()  # model types of checkpoints that hold this one as their `thinker_config`

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


def _musicflamingo(hf_config: Any) -> dict[str, Any]:
    rope = hf_config.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"Music Flamingo with time rope_type={rope['rope_type']!r}; only 'default' is implemented.")
    time_rotary = (float(rope["rope_theta"]), float(rope.get("partial_rotary_factor", 1.0)),
                   float(hf_config.audio_frame_step))
    return _audioflamingo3(hf_config) | {"audio_fields": dict(downsample="avg_pool", mask_padding=True,
                                                              time_rotary=time_rotary)}


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


def _omni_sections(hf_config: Any, projection: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """A Qwen Omni thinker's TMRoPE sections (transformers' `default` when absent), after checking that its audio
    encoder's `projection` writes decoder-wide rows and the sections cover the head."""
    text, audio = hf_config.text_config, hf_config.audio_config
    if audio.output_dim != text.hidden_size:
        raise ValueError(f"audio_config.output_dim ({audio.output_dim}) must equal text_config.hidden_size "
                         f"({text.hidden_size}): the encoder's {projection} writes decoder embeddings.")
    d_head = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    sections = tuple((text.rope_parameters or {}).get("mrope_section", default))
    if sum(sections) != d_head // 2:
        raise ValueError(f"rope_parameters['mrope_section'] = {list(sections)} must sum to head_dim // 2 = "
                         f"{d_head // 2}.")
    return sections


def _qwen25_omni(hf_config: Any) -> dict[str, Any]:
    audio = hf_config.audio_config
    sections = _omni_sections(hf_config, "proj", (16, 24, 24))
    return dict(projector="linear", projector_bias=True, qkv_bias=True, o_bias=False, mrope_section=sections,
                audio_fields=dict(downsample="avg_pool", mask_padding=True, window_frames=2 * audio.n_window))


def _qwen3_omni_moe(hf_config: Any) -> dict[str, Any]:
    text, audio = hf_config.text_config, hf_config.audio_config
    sections = _omni_sections(hf_config, "proj2", (24, 20, 20))
    step, dense = int(text.decoder_sparse_step), set(text.mlp_only_layers or ())
    moe = tuple(layer for layer in range(text.num_hidden_layers)  # transformers' DecoderLayer rule
                if layer not in dense and text.num_experts > 0 and (layer + 1) % step == 0)
    bias = bool(getattr(text, "attention_bias", False))
    return dict(projector="linear", projector_bias=True, qkv_bias=bias, o_bias=bias, mrope_section=sections,
                mrope_interleaved=True, qk_norm=True, moe_layers=moe, d_expert=int(text.moe_intermediate_size),
                num_experts=int(text.num_experts) if moe else None,
                experts_per_token=int(text.num_experts_per_tok) if moe else None,
                norm_topk_prob=bool(text.norm_topk_prob),
                audio_fields=dict(downsample="avg_pool", mask_padding=True, window_frames=2 * audio.n_window,
                                  conv2d_hidden=int(audio.downsample_hidden_size),
                                  n_window_infer=int(audio.n_window_infer)))


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
        Family("musicflamingo", "musicflamingo", "MusicFlamingoForConditionalGeneration", ("qwen2",),
               ("nvidia/music-flamingo-2601-hf",), "input_features_mask", _musicflamingo),
        Family("qwen2.5-omni", "qwen2_5_omni_thinker", "Qwen2_5OmniThinkerForConditionalGeneration",
               ("qwen2_5_omni_text",), ("Qwen/Qwen2.5-Omni-7B", "Qwen/Qwen2.5-Omni-3B"), "feature_attention_mask",
               _qwen25_omni, wrappers=("qwen2_5_omni",)),
        Family("qwen3-omni-moe", "qwen3_omni_moe_thinker", "Qwen3OmniMoeThinkerForConditionalGeneration",
               ("qwen3_omni_moe_text",), ("Qwen/Qwen3-Omni-30B-A3B-Instruct", "Qwen/Qwen3-Omni-30B-A3B-Thinking",
                                          "Qwen/Qwen3-Omni-30B-A3B-Captioner"),
               "feature_attention_mask", _qwen3_omni_moe, wrappers=("qwen3_omni_moe",)),
    )
}
WRAPPED: dict[str, Family] = {w: f for f in FAMILIES.values() for w in f.wrappers}
FAMILY_BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES.values()}
KNOWN_HUB_IDS: tuple[str, ...] = tuple(i for f in FAMILIES.values() for i in f.hub_ids)


def family_of(model_type: str | None, name: str) -> Family:
    """The family of a config's `model_type`, or a ValueError naming the ones this port loads."""
    family = FAMILIES.get(str(model_type)) or WRAPPED.get(str(model_type))
    if family is None:
        known = ", ".join(f"{f.model_type!r} ({f.hf_class}, e.g. {f.hub_ids[0]})" for f in FAMILIES.values())
        raise ValueError(f"{name!r} is a {model_type!r} checkpoint; HookedAudioLM loads {known}.")
    return family


def unwrap(hf_config: Any) -> Any:
    """The config of the part this port loads: a whole Qwen Omni model's `thinker_config`, other configs as given."""
    return hf_config.thinker_config if getattr(hf_config, "model_type", None) in WRAPPED else hf_config
