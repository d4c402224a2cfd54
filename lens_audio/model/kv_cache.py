"""Key/value cache for incremental decoding with `HookedAudioLM`, with TransformerLens's cache idiom.

Keys are stored after rotary embedding, one `[batch, pos, kv_head, d_head]`
tensor pair per layer, together with which cached positions are real tokens
(not padding) and how many real tokens each row holds, from which the next
position ids follow. Hooks see the new positions only: a hook on
`blocks.0.attn.hook_k` during decoding receives one position per step.

TransformerLens's idiom works on both this class and TransformerLens's own (`TransformerLensKeyValueCache` in 3.9
and 4.x): `cache = KVCache.init_cache(model.cfg, model.cfg.device, batch_size)`, `model(tokens,
past_kv_cache=cache)` then `model(next_tokens, past_kv_cache=cache)`; `cache.freeze()` makes later forwards read
the cache without growing it (many continuations of one prefix), `cache.unfreeze()` undoes it; `cache[l].past_keys`,
`cache.previous_attention_mask` and `cache.entries` read as TransformerLens's do. A TransformerLens cache given to
`forward` is used through `as_kv_cache` (it then holds rotated keys too; TransformerLens's own models store them
before rotary).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


class LayerKVCache:
    """Cached keys and values of one decoder layer (TransformerLens's `past_keys` / `past_values` names too)."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.frozen = False

    def append(
        self, k: Float[Tensor, "batch new kv_head d_head"], v: Float[Tensor, "batch new kv_head d_head"]
    ) -> tuple[Float[Tensor, "batch all kv_head d_head"], Float[Tensor, "batch all kv_head d_head"]]:
        """Keys and values of the cached and the new positions; stored unless the cache is frozen."""
        k_all = k if self.k is None else torch.cat([self.k, k.to(self.k.device)], dim=1)
        v_all = v if self.v is None else torch.cat([self.v, v.to(self.v.device)], dim=1)
        if not self.frozen:
            self.k, self.v = k_all, v_all
        return k_all, v_all

    @property
    def past_keys(self) -> Float[Tensor, "batch cached kv_head d_head"] | None:
        return self.k

    @property
    def past_values(self) -> Float[Tensor, "batch cached kv_head d_head"] | None:
        return self.v


class KVCache:
    """All layers' caches plus the key-padding mask of everything cached so far."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerKVCache() for _ in range(n_layers)]
        self.key_valid: Bool[Tensor, "batch cached"] | None = None
        self.frozen = False

    @classmethod
    def init_cache(cls, cfg: Any, device: Any = None, batch_size: int = 1) -> "KVCache":
        """An empty cache for a model with config `cfg` (TransformerLens's signature; the cache takes its batch size
        and device from the first forward, so `device` and `batch_size` only need to agree with it)."""
        return cls(cfg.n_layers)

    @property
    def entries(self) -> list[LayerKVCache]:
        return self.layers

    @property
    def length(self) -> int:
        return 0 if self.key_valid is None else self.key_valid.shape[1]

    @property
    def previous_attention_mask(self) -> Int[Tensor, "batch cached"] | None:
        """TransformerLens's name: which cached positions are real tokens (1) or padding (0)."""
        return None if self.key_valid is None else self.key_valid.int()

    def n_valid(self) -> Int[Tensor, " batch"] | None:
        """Real tokens cached per row; None before the first forward."""
        return None if self.key_valid is None else self.key_valid.sum(-1)

    def extend_mask(self, attention_mask: Bool[Tensor, "batch new"]) -> Bool[Tensor, "batch all"]:
        """The padding mask over the cached and the new keys; recorded unless the cache is frozen."""
        mask = attention_mask.bool()
        updated = mask if self.key_valid is None else torch.cat([self.key_valid, mask.to(self.key_valid.device)], 1)
        if not self.frozen:
            self.key_valid = updated
        return updated

    def append_attention_mask(self, attention_mask: Int[Tensor, "batch new"]) -> Int[Tensor, "batch all"]:
        """TransformerLens's name for `extend_mask` (returns an int mask, as TransformerLens's does)."""
        return self.extend_mask(attention_mask).int()

    def freeze(self) -> None:
        """Later forwards read the cache but add nothing to it (TransformerLens's `freeze`)."""
        self._set_frozen(True)

    def unfreeze(self) -> None:
        self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        for layer in self.layers:
            layer.frozen = frozen

    def __getitem__(self, layer: int) -> LayerKVCache:
        return self.layers[layer]

    def __len__(self) -> int:
        return len(self.layers)

    def select_rows(self, rows: slice | Int[Tensor, " rows"]) -> None:
        """Keep the cached rows `rows`: a slice (e.g. drop the silence half of a batched audio + silence
        prefill) or row indices, which may repeat rows (e.g. one shared prefix copied to every row)."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[rows], layer.v[rows]
        if self.key_valid is not None:
            self.key_valid = self.key_valid[rows]


def _forwarded(name: str, empty_as_none: bool = False) -> Any:
    """A property that reads and writes `self._target.<name>` (a TransformerLens cache object, updated in place);
    with `empty_as_none`, a tensor with no cached positions reads as None, as lens_audio's empty cache does."""

    def get(self: Any) -> Any:
        value = getattr(self._target, name)
        return None if empty_as_none and value.shape[1] == 0 else value

    def set(self: Any, value: Any) -> None:
        setattr(self._target, name, value)

    return property(get, set)


class _ForeignLayer(LayerKVCache):
    """One entry of a TransformerLens cache (`past_keys`, `past_values`, `frozen`), read and written in place."""

    k = _forwarded("past_keys", empty_as_none=True)
    v = _forwarded("past_values", empty_as_none=True)
    frozen = _forwarded("frozen")

    def __init__(self, entry: Any) -> None:
        self._target = entry

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        past = self._target.past_keys
        return self._target.append(k.to(past.device, past.dtype), v.to(past.device, past.dtype))


class _ForeignKVCache(KVCache):
    """A TransformerLens `TransformerLensKeyValueCache` (3.9 or 4.x) used as a `KVCache`: its entries and
    `previous_attention_mask` are read and updated in place, its `frozen` flags respected."""

    frozen = _forwarded("frozen")
    _mask = _forwarded("previous_attention_mask", empty_as_none=True)

    def __init__(self, cache: Any) -> None:
        self._target = cache
        self.layers = [_ForeignLayer(entry) for entry in cache.entries]

    @property
    def key_valid(self) -> Bool[Tensor, "batch cached"] | None:  # type: ignore[override]
        return None if self._mask is None else self._mask.bool()

    @key_valid.setter
    def key_valid(self, value: Tensor) -> None:
        self._mask = value.int()

    def extend_mask(self, attention_mask: Bool[Tensor, "batch new"]) -> Bool[Tensor, "batch all"]:
        return self._target.append_attention_mask(attention_mask.int()).bool()


def as_kv_cache(cache: Any, n_layers: int) -> KVCache | None:
    """`cache` as a `KVCache`: itself, a view of a TransformerLens cache, or None; anything else is refused."""
    if cache is None or isinstance(cache, KVCache):
        return cache
    entries = getattr(cache, "entries", None)
    if entries is not None and hasattr(cache, "previous_attention_mask"):
        if len(entries) != n_layers:
            raise ValueError(
                f"past_kv_cache has {len(entries)} layers but the model has {n_layers}: build it with "
                "init_cache(model.cfg, model.cfg.device, batch_size)."
            )
        return _ForeignKVCache(cache)
    raise TypeError(
        f"past_kv_cache must be a lens_audio KVCache or a TransformerLens key-value cache, not "
        f"{type(cache).__name__}: build one with KVCache.init_cache(model.cfg, model.cfg.device, batch_size)."
    )
