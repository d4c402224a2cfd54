"""Names of Hugging Face weights of the families in `lens_audio.model.family` in `HookedAudioLM`.

Weights keep Hugging Face's layout (the port packs projections the same
way), so converting a checkpoint is a renaming plus a dtype/device move,
done one tensor at a time by `lens_audio.model.loading`. Both the current
transformers layout (`model.language_model.layers...`) and the layout of the
checkpoints on the Hub (`language_model.model.layers...`, `audio_tower...`)
are understood, and transformers' fused in-memory experts are split per expert. The families name their audio
towers and decoders alike; only the projector differs
(`multi_modal_projector.linear` or `linear_1`/`linear_2`; the Qwen Omni thinkers' `audio_tower.proj`). A whole
Qwen Omni checkpoint holds the thinker under `thinker.`, in the Hub layout (`audio_tower.`, `model.layers.`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from torch import Tensor

# Older (Hub) prefixes -> the current transformers prefixes.
_LEGACY_PREFIXES = (
    ("audio_tower.", "model.audio_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    # The Qwen Omni thinkers' saved layout (as on the Hub, after the whole model's `thinker.` prefix).
    ("model.layers.", "model.language_model.layers."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.norm.", "model.language_model.norm."),
)
# Parts of a checkpoint the port does not run: the Omni thinker's vision tower and its unused audio begin/end
# embedding, and a whole Omni model's talker and token2wav / code2wav (speech output; Qwen2.5- / Qwen3-Omni).
_UNPORTED = re.compile(
    r"(thinker\.)?(model\.)?(visual\.|audio_tower\.audio_bos_eos_token\.)|talker\.|token2wav\.|code2wav\.")

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
    (r"model\.audio_tower\.(?:layer_norm|ln_post)\.(weight|bias)", r"audio.ln_post.{norm}"),
    (r"model\.audio_tower\.proj\.(weight|bias)", r"audio.projector.\1"),  # the Omni thinkers' projection
    (r"model\.audio_tower\.(conv2d[123]|conv_out|proj[12])\.(weight|bias)", r"audio.\1.\2"),  # Qwen3-Omni's
    (r"model\.multi_modal_projector\.linear\.(weight|bias)", r"audio.projector.\1"),
    (r"model\.multi_modal_projector\.(linear_[12])\.(weight|bias)", r"audio.projector.\1.\2"),
    (r"model\.language_model\.embed_tokens\.weight", r"embed.weight"),
    (r"model\.language_model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", r"blocks.\1.attn.\2_proj.\3"),
    (r"model\.language_model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", r"blocks.\1.mlp.\2_proj.weight"),
    # Qwen3-Omni-MoE: q/k norms, the router and each expert (fused experts are split first: `split_fused_experts`)
    (r"model\.language_model\.layers\.(\d+)\.self_attn\.([qk])_norm\.weight", r"blocks.\1.attn.\2_norm.w"),
    (r"model\.language_model\.layers\.(\d+)\.mlp\.gate\.weight", r"blocks.\1.mlp.gate.weight"),
    (r"model\.language_model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight",
     r"blocks.\1.mlp.experts.\2.\3_proj.weight"),
    (r"model\.language_model\.layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.ln1.w"),
    (r"model\.language_model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.ln2.w"),
    (r"model\.language_model\.norm\.weight", r"ln_final.w"),
    (r"lm_head\.weight", r"unembed.weight"),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in _RULES)


_FUSED = re.compile(r"(.*\.mlp\.experts\.)(gate_up_proj|down_proj)")


def split_fused_experts(tensors: Iterable[tuple[str, Tensor]]) -> Iterator[tuple[str, Tensor]]:
    """The (key, tensor) pairs with transformers' in-memory fused experts (`mlp.experts.gate_up_proj [experts,
    2 * d_expert, d_model]`, `mlp.experts.down_proj [experts, d_model, d_expert]`) split into the per-expert keys
    that checkpoints store (`mlp.experts.{e}.gate_proj.weight`, ...); other pairs pass through."""
    for key, tensor in tensors:
        match = _FUSED.fullmatch(key)
        if match is None:
            yield key, tensor
            continue
        prefix, kind = match.groups()
        for e in range(tensor.shape[0]):
            if kind == "down_proj":
                yield f"{prefix}{e}.down_proj.weight", tensor[e]
            else:
                gate, up = tensor[e].chunk(2, dim=0)
                yield f"{prefix}{e}.gate_proj.weight", gate
                yield f"{prefix}{e}.up_proj.weight", up


def unported(key: str) -> bool:
    """Whether a checkpoint weight belongs to a part the port does not run (it is then not read)."""
    return _UNPORTED.match(key) is not None


def hf_key_to_lens(key: str) -> str:
    """The `HookedAudioLM` parameter name of a Hugging Face weight of a supported family.

    Raises:
        KeyError: for a key that is part of none of them.
    """
    key = key.removeprefix("thinker.")  # a whole Qwen Omni model's thinker
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
