"""The silence twin's prefix kept across calls: on a benchmark whose clips repeat lengths, paid once.

A silence twin's keys and values up to the end of its last clip depend only on the weights, the tokens before
and between the clips and the clips' frame counts (every silent clip is the same zeros). `SilencePrefixCache`
keeps them, one entry per (prefix tokens, frame counts), for the layers a call ran (an entry made up to
layer 5 serves any call that stops at or before it). `shared_silence_residuals` asks it first, so a warm
cache leaves the silence twin only its text tail to run.

Stale entries are impossible by construction of the key, not by trust: every lookup compares a weight
signature taken anew (each parameter's and buffer's name, shape, dtype, device, storage address and PyTorch
version counter) with the one the entries were made under, and forgets all of them on a change. PyTorch bumps
a tensor's version counter on every in-place write (`with torch.no_grad(): W[...] = 0`, `W.mul_(2)`,
`copy_`, `load_state_dict`, `process_weights_`), and `.to(dtype or device)` or a replaced tensor moves the
storage. One write escapes it: through `tensor.data` (PyTorch hides such writes from version counters on
purpose); after one, call `silence_prefix_cache(model).clear()`. Taking the signature costs microseconds per
tensor; hashing the weights' bytes (the run manifest's fingerprint) would read every weight on every call.
Calls with hooks active never use the cache (`silence_prefix.hooks_active`).

Memory is bounded: `max_bytes` (default 1 GiB; 0 turns the cache off) over all entries, least recently used
evicted first; `silence_prefix_cache(model, max_bytes=...)` sets it.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lens_audio.model.kv_cache import KVCache

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

DEFAULT_MAX_BYTES = 1 << 30
_CACHES: "weakref.WeakKeyDictionary[HookedAudioLM, SilencePrefixCache]" = weakref.WeakKeyDictionary()


def weight_signature(model: "HookedAudioLM") -> tuple:
    """What changes when any weight is edited in place, replaced, folded, or moved to another dtype or device."""
    return tuple(
        (name, tuple(t.shape), t.dtype, t.device, t.data_ptr(), t._version)
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    )


@dataclass
class PrefixEntry:
    """One prefix's keys and values, `[pos, kv_head, d_head]` per layer for layers 0..depth-1."""

    keys: list[Float[Tensor, "pos kv_head d_head"]]
    values: list[Float[Tensor, "pos kv_head d_head"]]

    @property
    def depth(self) -> int:
        return len(self.keys)

    @property
    def length(self) -> int:
        return self.keys[0].shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.keys, *self.values])


class SilencePrefixCache:
    """Silence-twin prefixes of one model, keyed by (prefix tokens, clip frame counts); see the module docstring."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Hashable, PrefixEntry] = OrderedDict()
        self.signature: tuple | None = None
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries.values())

    def clear(self) -> None:
        self.entries.clear()
        self.signature = None

    def validate(self, model: "HookedAudioLM") -> None:
        """Forget every entry if the weights changed since they were made."""
        signature = weight_signature(model)
        if signature != self.signature:
            self.entries.clear()
            self.signature = signature

    def get(self, key: Hashable, depth: int) -> PrefixEntry | None:
        """The entry for `key` if it holds at least `depth` layers (call `validate` first)."""
        entry = self.entries.get(key)
        if entry is None or entry.depth < depth:
            self.misses += 1
            return None
        self.entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: Hashable, entry: PrefixEntry) -> None:
        if entry.nbytes > self.max_bytes:
            return
        self.entries.pop(key, None)
        self.entries[key] = entry
        while self.nbytes > self.max_bytes:
            self.entries.popitem(last=False)


def silence_prefix_cache(model: "HookedAudioLM", max_bytes: int | None = None) -> SilencePrefixCache:
    """The model's silence-prefix cache (made on first use); `max_bytes` resizes it (0: off)."""
    cache = _CACHES.get(model)
    if cache is None:
        cache = _CACHES[model] = SilencePrefixCache()
    if max_bytes is not None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 (cache off) or more, got {max_bytes}.")
        cache.max_bytes = max_bytes
        while cache.entries and cache.nbytes > max_bytes:
            cache.entries.popitem(last=False)
    return cache


def entries_from_kv(kv: KVCache, lengths: Sequence[int], depth: int) -> list[PrefixEntry]:
    """Split a right-aligned (left-padded) prefix batch's cache into one entry per row (padding dropped)."""
    width = kv.length
    return [
        PrefixEntry(
            [kv[layer].k[row, width - n :].clone() for layer in range(depth)],
            [kv[layer].v[row, width - n :].clone() for layer in range(depth)],
        )
        for row, n in enumerate(lengths)
    ]


def kv_from_entries(
    entries: Sequence[PrefixEntry], n_layers: int, depth: int, device: torch.device
) -> KVCache:
    """One left-padded `KVCache` holding `entries` as its rows (padded keys masked out), layers 0..depth-1;
    its padding mask on `device` (the model's), as a forward's own mask is."""
    longest = max(entry.length for entry in entries)
    kv = KVCache(n_layers)
    for layer in range(depth):
        first = entries[0].keys[layer]
        shape = (len(entries), longest, *first.shape[1:])
        k = first.new_zeros(shape)
        v = first.new_zeros(shape)
        for row, entry in enumerate(entries):
            k[row, longest - entry.length :] = entry.keys[layer]
            v[row, longest - entry.length :] = entry.values[layer]
        kv[layer].k, kv[layer].v = k, v
    valid: Bool[Tensor, "row pos"] = torch.zeros((len(entries), longest), dtype=torch.bool, device=device)
    for row, entry in enumerate(entries):
        valid[row, longest - entry.length :] = True
    kv.key_valid = valid
    return kv
