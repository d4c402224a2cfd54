"""Key/value cache for incremental decoding with `HookedAudioLM`.

Keys are stored after rotary embedding, one `[batch, pos, kv_head, d_head]`
tensor pair per layer, together with which cached positions are real tokens
(not padding) and how many real tokens each row holds, from which the next
position ids follow. Hooks see the new positions only: a hook on
`blocks.0.attn.hook_k` during decoding receives one position per step.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


class LayerKVCache:
    """Cached keys and values of one decoder layer."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def append(
        self, k: Float[Tensor, "batch new kv_head d_head"], v: Float[Tensor, "batch new kv_head d_head"]
    ) -> tuple[Float[Tensor, "batch all kv_head d_head"], Float[Tensor, "batch all kv_head d_head"]]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=1)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=1)
        return self.k, self.v


class KVCache:
    """All layers' caches plus the key-padding mask of everything cached so far."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerKVCache() for _ in range(n_layers)]
        self.key_valid: Bool[Tensor, "batch cached"] | None = None

    @property
    def length(self) -> int:
        return 0 if self.key_valid is None else self.key_valid.shape[1]

    def n_valid(self) -> Int[Tensor, " batch"] | None:
        """Real tokens cached per row; None before the first forward."""
        return None if self.key_valid is None else self.key_valid.sum(-1)

    def extend_mask(self, attention_mask: Bool[Tensor, "batch new"]) -> Bool[Tensor, "batch all"]:
        """Record the new positions' padding mask; returns the mask over all keys."""
        self.key_valid = (
            attention_mask if self.key_valid is None else torch.cat([self.key_valid, attention_mask], dim=1)
        )
        return self.key_valid

    def __getitem__(self, layer: int) -> LayerKVCache:
        return self.layers[layer]

    def select_rows(self, rows: slice | Int[Tensor, " rows"]) -> None:
        """Keep the cached rows `rows`: a slice (e.g. drop the silence half of a batched audio + silence
        prefill) or row indices, which may repeat rows (e.g. one shared prefix copied to every row)."""
        for layer in self.layers:
            if layer.k is not None:
                layer.k, layer.v = layer.k[rows], layer.v[rows]
        if self.key_valid is not None:
            self.key_valid = self.key_valid[rows]
