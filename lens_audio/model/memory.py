"""Memory before work: what an analysis will hold, and a refusal up front, in one line, when it would not fit.

A 7B audio-language model leaves little room beside its weights: on a 24 GB GPU in bfloat16 the weights take
~16.8 GB, and one 30 s clip (~840 decoder positions, 1500 encoder positions) cached at every hook takes ~14.6 GiB
(the encoder's and decoder's attention patterns and scores above all). So analyses that hold activations ask
`require` first: it compares their estimate with the limit and raises `NotEnoughMemory` naming what needs how much
and the option that lowers it, before any forward runs.

The limit: `set_memory_limit("24GiB")` (or the environment variable `LENS_AUDIO_MEMORY_LIMIT`), else on CUDA the
device's free memory (`torch.cuda.mem_get_info`); on CPU no limit unless one is set. Estimates come from the hook
table's shapes (`model.hook_table`), so they follow every family's dimensions; tested against what a cache holds.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from lens_audio.model.hook_point import names_predicate
from lens_audio.model.hook_table import HOOK_TABLE, rows_matching

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

GiB = 2**30
ENVIRONMENT = "LENS_AUDIO_MEMORY_LIMIT"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_limit: int | None = None
_SHAPES = {row: shape for row, shape, _ in HOOK_TABLE}


class NotEnoughMemory(RuntimeError):
    """An analysis that would not fit the memory limit, refused before it ran."""


def parse_bytes(value: int | str) -> int:
    """`"24GiB"`, `"500MB"`, `"1e9"` or an int -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    else:
        match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"memory limit {value!r}: give bytes or a size such as '24GiB' or '500MB'.")
        amount = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(amount) or amount <= 0:
        raise ValueError(f"memory limit {value!r} must be a positive size, such as '24GiB'.")
    return int(amount)


def set_memory_limit(limit: int | str | None) -> None:
    """Refuse analyses whose estimate exceeds `limit` (bytes or '24GiB'); None: the device's free memory (CUDA)."""
    global _limit
    _limit = None if limit is None else parse_bytes(limit)


def memory_limit(device: torch.device | str) -> int | None:
    """The limit analyses on `device` are held to (None: unguarded)."""
    if _limit is not None:
        return _limit
    if os.environ.get(ENVIRONMENT):
        return parse_bytes(os.environ[ENVIRONMENT])
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0]
    return None


def require(need: int, what: str, fix: str, device: torch.device | str) -> None:
    """Raise `NotEnoughMemory` if `need` bytes for `what` exceed the limit on `device`; `fix` says how to need less."""
    limit = memory_limit(device)
    if limit is not None and need > limit:
        raise NotEnoughMemory(
            f"{what} needs about {need / GiB:.1f} GiB, over the {limit / GiB:.1f} GiB limit on {device} "
            f"(lens_audio.model.memory.set_memory_limit / {ENVIRONMENT}): {fix}."
        )


def hook_dims(model: "HookedAudioLM", batch: Any) -> dict[str, dict[str, int]]:
    """The sizes the hook table's shapes name, for the encoder (`audio`) and the decoder, on `batch` (an `AudioBatch`,
    or token ids: no clips)."""
    cfg, enc = model.cfg, model.cfg.audio
    ids = batch.input_ids if hasattr(batch, "input_ids") else batch
    features = getattr(batch, "input_features", None)
    clips = 0 if features is None else features.shape[0]
    frames = enc.n_frames if features is None else features.shape[-1]
    decoder = dict(batch=ids.shape[0], pos=ids.shape[1], query=ids.shape[1], key=ids.shape[1], head=cfg.n_heads,
                   kv_head=cfg.n_key_value_heads, d_head=cfg.d_head, d_model=cfg.d_model,
                   d_mlp=cfg.d_expert or cfg.d_mlp, d_vocab=cfg.d_vocab)
    audio = dict(clips=clips, frames=frames, mels=enc.n_mels, audio_ctx=frames // 2, audio_pos=frames // 4,
                 head=enc.n_heads, d_head=enc.d_head, d_audio=enc.d_model, d_audio_mlp=enc.d_mlp,
                 d_model=cfg.d_model, query=frames // 2, key=frames // 2)
    return {"audio": audio, "decoder": decoder}


def hook_bytes(name: str, dims: dict[str, dict[str, int]], element_size: int) -> int:
    """Bytes of the activation at hook `name` (its hook table shape; a name without a row counts as one residual
    stream)."""
    rows = rows_matching(name)
    side = dims["audio"] if name.startswith("audio.") else dims["decoder"]
    shape = _SHAPES[rows[0]] if rows else "[batch, pos, d_model]"
    size = 1
    for symbol in shape.strip("[]").split(","):
        symbol = symbol.strip().split(" or ")[0]  # "head or kv_head": the larger
        size *= 1 if symbol == "1" else side.get(symbol, dims["decoder"].get(symbol, 1))
    return size * element_size


# hooks that fire only under a TransformerLens switch of the config (`set_use_split_qkv_input` and the rest)
SWITCHED = {"hook_q_input": "use_split_qkv_input", "hook_k_input": "use_split_qkv_input",
            "hook_v_input": "use_split_qkv_input", "hook_attn_in": "use_attn_in", "hook_mlp_in": "use_hook_mlp_in"}


def names_from_filter(model: "HookedAudioLM", names_filter: Any) -> list[str]:
    """The hook names `run_with_cache(names_filter=...)` caches (None: its default, `hook_point.names_predicate`):
    those the filter keeps that fire under the config's switches."""
    keep = (lambda name: True) if names_filter is None and model.cfg.use_attn_result else names_predicate(names_filter)
    fires = lambda name: getattr(model.cfg, SWITCHED.get(name.rsplit(".", 1)[-1], ""), True)  # noqa: E731
    return [name for name in model.hook_dict if keep(name) and fires(name)]


def cache_bytes(model: "HookedAudioLM", batch: Any, names: Iterable[str]) -> int:
    """What a cache of `names` on `batch` holds, in the model's dtype."""
    dims = hook_dims(model, batch)
    element_size = torch.empty((), dtype=model.cfg.dtype).element_size()
    # RMSNorm's scale is computed in float32 whatever the dtype (transformers' rule)
    return sum(hook_bytes(name, dims, 4 if name.endswith("hook_scale") else element_size) for name in names)


def require_cache(model: "HookedAudioLM", batch: Any, names_filter: Any) -> None:
    """Refuse a `run_with_cache` whose cache would not fit (`require`), naming the filter that lowers it."""
    limit = memory_limit(model.device)
    if limit is None or not (hasattr(batch, "input_ids") or isinstance(batch, torch.Tensor)):
        return
    need = cache_bytes(model, batch, names_from_filter(model, names_filter))
    require(need, f"run_with_cache on a batch of {hook_dims(model, batch)['decoder']['batch']}", (
        "cache fewer hooks with names_filter (e.g. names_filter=lambda name: name.endswith('hook_pattern') and not "
        "name.startswith('audio.')), or pass fewer or shorter clips"), model.device)


def attribution_bytes(model: "HookedAudioLM", batch: Any) -> int:
    """What `attribution_patching` holds on `batch`: the decoder activations autograd keeps for the backward pass
    (every decoder hook but the heads' results and the attention scores and patterns, which no hook asks for here,
    and as much again: tested against autograd's saved tensors),
    the clean cache, the corrupted activations and their gradients at
    every head output and residual input, and the float32 logits with their gradient."""
    decoder = [n for n in names_from_filter(model, None)  # attention without patterns (no hook reads them here)
               if not n.startswith("audio.") and not n.endswith(("hook_result", "hook_attn_scores", "hook_pattern"))]
    patched = [f"blocks.{layer}.{site}" for layer in range(model.cfg.n_layers) for site in ("attn.hook_z",
                                                                                             "hook_resid_pre")]
    sizes = hook_dims(model, batch)["decoder"]
    logits = 2 * 4 * sizes["batch"] * sizes["pos"] * sizes["d_vocab"]
    kept = 2 * cache_bytes(model, batch, decoder)  # norms' inputs and the MLP's products beside each hook's
    return kept + 3 * cache_bytes(model, batch, patched) + logits


def rows_that_fit(model: "HookedAudioLM", batch: Any, need: int) -> int:
    """How many of `batch`'s rows an analysis needing `need` bytes for all of them can take at once under the limit
    (all of them where there is no limit; 0 where not even one fits)."""
    limit = memory_limit(model.device)
    rows = hook_dims(model, batch)["decoder"]["batch"]
    if limit is None or need <= limit:
        return rows
    return min(rows, int(limit // max(1, math.ceil(need / rows))))


def require_attribution(model: "HookedAudioLM", batch: Any) -> None:
    """Refuse an `attribution_patching` whose forward-backward would not fit (`require`), naming how many rows do."""
    need = attribution_bytes(model, batch)
    fit = rows_that_fit(model, batch, need)
    rows = hook_dims(model, batch)["decoder"]["batch"]
    fix = (f"pass {fit} rows at a time (batch[i : i + {fit}]; the effects add up linearly, weighted by rows)" if fit
           else "not even one row fits: load the model in bfloat16, or use shorter clips")
    require(need, f"attribution patching on a batch of {rows}", fix, model.device)
