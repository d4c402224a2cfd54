"""The silence twin's final-position residuals for less than a second forward: its audio prefix computed once.

In a silence twin every clip is the same all-zero audio, so two prompts whose text up to the end of their
last clip is the same, with clips of the same lengths, have the same keys and values there: the silence
run differs only after the last clip (the question). `shared_silence_residuals` runs each distinct prefix
once, copies its KV cache to the rows that share it, and runs only the rows' suffixes on top; the prefixes
are kept across calls too (`silence_cache`), so on a benchmark whose clips repeat lengths each prefix runs
once. The result equals the full silence pass up to float rounding (tested); it is used for left-padded
batches with no hooks active on the model (a hook would see the silence rows in two pieces), where some rows
share a prefix or the cache is on, and otherwise the caller runs the plain silence pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.analysis.steering.silence_cache import entries_from_kv, kv_from_entries, silence_prefix_cache
from lens_audio.model.hook_point import site_hook_names
from lens_audio.model.kv_cache import KVCache

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def hooks_active(model: "HookedAudioLM") -> bool:
    """Whether any hook point of the model holds a forward or backward hook now, or any module a plain torch
    forward hook (one registered with `register_forward_hook`, or globally)."""
    from torch.nn.modules import module as torch_module

    if any(point.fwd_hooks or point.bwd_hooks for point in model.hook_dict.values()):
        return True
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@torch.no_grad()
def shared_silence_residuals(
    model: "HookedAudioLM", batch: "AudioBatch", layers: Sequence[int], site: str = "hook_resid_post"
) -> Float[Tensor, "batch layer d_model"] | None:
    """The silence twin's residuals at each row's final position at `blocks.{L}.{site}`, prefixes shared.

    None when sharing does not apply (right padding, no clips, hooks active, a prompt that ends with audio,
    or no two rows alike with the cache off): then run the plain silence pass.
    """
    names = site_hook_names(model, layers, site)
    finals = shared_silence_finals(model, batch, names, max(layers) + 1)
    return None if finals is None else torch.stack([finals[name] for name in names], dim=1)


@torch.no_grad()
def shared_silence_finals(
    model: "HookedAudioLM", batch: "AudioBatch", names: Sequence[str], depth: int
) -> dict[str, Float[Tensor, "batch ..."]] | None:
    """The silence twin's activation at each row's final position at each hook point of `names` (in blocks before
    `depth`), prefixes shared: `{name: [batch, ...]}` (e.g. `[batch, d_model]` for a residual hook,
    `[batch, head, d_model]` for `attn.hook_result`). None where `shared_silence_residuals` says None."""
    if batch.padding_side != "left" or batch.input_features is None or hooks_active(model):
        return None
    ids = batch.input_ids.to(model.device)
    mask = batch.attention_mask.to(model.device)
    cuts = [spans[-1][1] if spans else 0 for spans in batch.audio_spans]  # end of each row's last clip
    width = ids.shape[1]
    if max(cuts) >= width or 0 in cuts:  # a row whose prompt ends with its clip has no suffix to run
        return None
    if batch.input_features.shape[0] != sum(len(spans) for spans in batch.audio_spans):
        return None  # a clip over several feature windows (e.g. a Voxtral clip of two chunks): the plain pass
    groups, group_of_row, clips_of_group, keys = _prefix_groups(batch, cuts)
    store = silence_prefix_cache(model)
    if len(groups) == batch.batch_size and store.max_bytes == 0:
        return None
    if store.max_bytes:
        store.validate(model)
    found = [store.get(key, depth) if store.max_bytes else None for key in keys]
    missing = [g for g, entry in enumerate(found) if entry is None]
    cache = KVCache(model.cfg.n_layers)
    filler = _filler_token(model)
    if missing:
        prefixes = [ids[groups[g], width - int(mask[groups[g]].sum()) : cuts[groups[g]]] for g in missing]
        prefix_ids, prefix_mask = _right_aligned(prefixes, filler)
        clips = torch.tensor([c for g in missing for c in clips_of_group[g]], device=batch.input_features.device)
        state = model.start_decoder(
            prefix_ids,
            prefix_mask,
            batch.silence_twin().input_features[clips],
            None if batch.feature_attention_mask is None else batch.feature_attention_mask[clips],  # Voxtral: none
            past_kv_cache=cache,
        )
        model.run_blocks(state, 0, depth)
        if store.max_bytes:
            for g, entry in zip(missing, entries_from_kv(cache, [len(p) for p in prefixes], depth)):
                found[g] = entry
                store.put(keys[g], entry)
    if store.max_bytes:
        cache = kv_from_entries(found, model.cfg.n_layers, depth, model.device)
    cache.select_rows(torch.tensor(group_of_row, device=model.device))

    start = min(cuts)
    suffix_ids, suffix_mask = ids[:, start:].clone(), mask[:, start:].clone()
    for row, cut in enumerate(cuts):
        suffix_mask[row, : cut - start] = 0  # the prefix's tail in this row: already in the cache
    suffix_ids[suffix_mask == 0] = filler
    captured: dict[str, Tensor] = {}

    def capture(activation: Float[Tensor, "batch pos ..."], hook) -> None:
        captured[hook.name] = activation[:, -1].to(model.device)  # left padding: each row's final position is last

    with model.hooks(fwd_hooks=[(name, capture) for name in set(names)]):
        state = model.start_decoder(suffix_ids, suffix_mask, past_kv_cache=cache)
        model.run_blocks(state, 0, depth)
    return {name: captured[name] for name in names}


def _filler_token(model: "HookedAudioLM") -> int:
    """A token for masked positions: the pad token, never the audio placeholder (which would ask for a clip)."""
    pad = model.cfg.pad_token_id
    return pad if pad is not None and pad != model.cfg.audio_token_id else int(model.cfg.audio_token_id == 0)


def _prefix_groups(
    batch: "AudioBatch", cuts: list[int]
) -> tuple[list[int], list[int], list[list[int]], list[tuple]]:
    """Rows with the same tokens up to their cut and the same clip lengths share one prefix.

    Returns the first row of each group, each row's group, the clip indices (into the batch's stacked
    clips) of each group's first row, and each group's key (prefix tokens, clip frame counts).
    """
    ids, mask = batch.input_ids.cpu(), batch.attention_mask.cpu()
    frames = batch.feature_attention_mask
    # Without a frame mask (Voxtral) every silent clip is whole zero windows: its token count (in the key) says all.
    lengths = frames.sum(-1).tolist() if frames is not None else [0] * batch.input_features.shape[0]
    first_clip = 0
    keys: dict[tuple, int] = {}
    groups, group_of_row, clips_of_group = [], [], []
    for row, (spans, cut) in enumerate(zip(batch.audio_spans, cuts)):
        row_clips = list(range(first_clip, first_clip + len(spans)))
        first_clip += len(spans)
        real = ids[row, ids.shape[1] - int(mask[row].sum()) : cut]
        key = (tuple(real.tolist()), tuple(lengths[c] for c in row_clips))
        if key not in keys:
            keys[key] = len(groups)
            groups.append(row)
            clips_of_group.append(row_clips)
        group_of_row.append(keys[key])
    return groups, group_of_row, clips_of_group, list(keys)


def _right_aligned(
    sequences: list[Int[Tensor, " pos"]], pad_token_id: int
) -> tuple[Int[Tensor, "group pos"], Int[Tensor, "group pos"]]:
    """Left-pad token sequences into one batch (their last tokens aligned) with its attention mask."""
    longest = max(len(s) for s in sequences)
    device = sequences[0].device
    ids = torch.full((len(sequences), longest), pad_token_id, dtype=sequences[0].dtype, device=device)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long, device=device)
    for row, tokens in enumerate(sequences):
        ids[row, longest - len(tokens) :] = tokens
        mask[row, longest - len(tokens) :] = 1
    return ids, mask
