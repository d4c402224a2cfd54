"""Names of Hugging Face Qwen2-Audio, AudioFlamingo3 and Voxtral weights in `HookedAudioLM`.

Weights keep Hugging Face's layout (the port packs projections the same
way), so converting a checkpoint is a renaming plus a dtype/device move,
done one tensor at a time by `lens_audio.model.loading`. Both the current
transformers layout (`model.language_model.layers...`) and the layout of the
checkpoints on the Hub (`language_model.model.layers...`, `audio_tower...`)
are understood. The three families name their audio towers and decoders alike; only the projector differs
(`multi_modal_projector.linear` or `linear_1`/`linear_2`).
"""

from __future__ import annotations

import re

# Older (Hub) prefixes -> the current transformers prefixes.
_LEGACY_PREFIXES = (
    ("audio_tower.", "model.audio_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
)

_NORM_PARAMS = {"weight": "w", "bias": "b"}

# (pattern on the current Hugging Face key, replacement in HookedAudioLM). `{norm}` marks a norm parameter.
_RULES = (
    (r"model\.audio_tower\.(conv[12])\.(weight|bias)", r"audio.\1.\2"),
    (r"model\.audio_tower\.embed_positions\.weight", r"audio.W_pos"),
    (r"model\.audio_tower\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", r"audio.blocks.\1.attn.\2_proj.\3"),
    (r"model\.audio_tower\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"audio.blocks.\1.attn.o_proj.\2"),
    (r"model\.audio_tower\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"audio.blocks.\1.ln1.{norm}"),
    (r"model\.audio_tower\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"audio.blocks.\1.ln2.{norm}"),
    (r"model\.audio_tower\.layers\.(\d+)\.fc1\.(weight|bias)", r"audio.blocks.\1.mlp.fc_in.\2"),
    (r"model\.audio_tower\.layers\.(\d+)\.fc2\.(weight|bias)", r"audio.blocks.\1.mlp.fc_out.\2"),
    (r"model\.audio_tower\.layer_norm\.(weight|bias)", r"audio.ln_post.{norm}"),
    (r"model\.multi_modal_projector\.linear\.(weight|bias)", r"audio.projector.\1"),
    (r"model\.multi_modal_projector\.(linear_[12])\.(weight|bias)", r"audio.projector.\1.\2"),
    (r"model\.language_model\.embed_tokens\.weight", r"embed.weight"),
    (r"model\.language_model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", r"blocks.\1.attn.\2_proj.\3"),
    (r"model\.language_model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"blocks.\1.mlp.\2_proj.weight"),
    (r"model\.language_model\.layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.ln1.w"),
    (r"model\.language_model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.ln2.w"),
    (r"model\.language_model\.norm\.weight", r"ln_final.w"),
    (r"lm_head\.weight", r"unembed.weight"),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in _RULES)


def hf_key_to_lens(key: str) -> str:
    """The `HookedAudioLM` parameter name of a Hugging Face weight of a supported family.

    Raises:
        KeyError: for a key that is part of none of them.
    """
    for old, new in _LEGACY_PREFIXES:
        if key.startswith(old):
            key = new + key[len(old) :]
            break
    for pattern, replacement in _COMPILED:
        match = pattern.fullmatch(key)
        if match:
            name = match.expand(replacement)
            if "{norm}" in name:
                name = name.replace("{norm}", _NORM_PARAMS[match.groups()[-1]])
            return name
    raise KeyError(key)
