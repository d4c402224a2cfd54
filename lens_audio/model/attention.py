"""Attention layers of the hooked port, with one shared attention kernel.

Both the decoder (causal, rotary, grouped-query, q/k/v biases) and the audio
encoder (bidirectional, Whisper-style biases) call `attend`, which takes the
fast path (`scaled_dot_product_attention`) when nothing needs the attention
pattern and the explicit path (scores -> softmax -> weighted values) when a
hook on `hook_attn_scores` or `hook_pattern` is registered, or when the model
was built with `attn_implementation="eager"`. The explicit path masks with
the dtype's most negative value rather than -inf, exactly as Hugging Face's
eager attention does, so fully masked rows (left padding) stay finite.
"""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn
from transformer_lens import FactoredMatrix

from lens_audio.model.config import AttentionImplementation
from lens_audio.model.dispatch import execution_device, materialized
from lens_audio.model.hook_point import HookPoint


def attend(
    hooks: "AttentionHooks",
    q: Float[Tensor, "batch query head d_head"],
    k: Float[Tensor, "batch key kv_head d_head"],
    v: Float[Tensor, "batch key kv_head d_head"],
    allowed: Bool[Tensor, "batch 1 query key"] | None,
    is_causal: bool,
    implementation: AttentionImplementation,
    scale: float | None = None,
) -> Float[Tensor, "batch query head d_head"]:
    """Softmax attention of `q` over `k`/`v`; key/value heads are shared by groups of query heads.

    `allowed` says which keys each query may see (None: all, or causal when
    `is_causal`). `scale` multiplies the scores (default `d_head ** -0.5`). Returns the per-head mixed values `z`.
    """
    n_rep = q.shape[2] // k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    explicit = implementation == "eager" or (
        implementation == "auto" and (hooks.hook_attn_scores.has_hooks() or hooks.hook_pattern.has_hooks())
    )
    if explicit:
        if allowed is None and is_causal:
            allowed = causal_mask(q.shape[1], k.shape[1], q.device)[None, None]
        scores = hooks.hook_attn_scores(attention_scores(q, k, allowed, scale))
        pattern = hooks.hook_pattern(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype))
        return einops.einsum(pattern, repeat_kv(v, n_rep), "b h q k, b k h d -> b q h d")
    mask = None
    if allowed is not None:
        # An additive mask (not a boolean one) keeps fully masked rows finite, as the explicit path does.
        mask = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~allowed, torch.finfo(q.dtype).min
        )
    z = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask,
        is_causal=is_causal and mask is None,
        scale=scale,
        enable_gqa=n_rep > 1,
    )
    return z.transpose(1, 2)


def repeat_kv(x: Float[Tensor, "batch key kv_head d_head"], n_rep: int) -> Float[Tensor, "batch key head d_head"]:
    """Key/value head `h // n_rep` serves query head `h` (Hugging Face's `repeat_kv`, grouped-query attention)."""
    return x if n_rep == 1 else einops.repeat(x, "b k h d -> b k (h r) d", r=n_rep)


def attention_scores(
    q: Float[Tensor, "batch query head d_head"],
    k: Float[Tensor, "batch key kv_head d_head"],
    allowed: Bool[Tensor, "batch 1 query key"] | None,
    scale: float,
) -> Float[Tensor, "batch head query key"]:
    """`scale * q.k` per head, keys not `allowed` set to the dtype's most negative value (Hugging Face's eager way)."""
    scores = einops.einsum(q, repeat_kv(k, q.shape[2] // k.shape[2]), "b q h d, b k h d -> b h q k") * scale
    return scores if allowed is None else scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)


def causal_mask(n_query: int, n_key: int, device: torch.device) -> Bool[Tensor, "query key"]:
    """Queries are the last `n_query` of `n_key` positions; each sees itself and earlier keys."""
    offset = n_key - n_query
    return torch.ones(n_query, n_key, dtype=torch.bool, device=device).tril(diagonal=offset)


class AttentionHooks(nn.Module):
    """The hook points every attention layer exposes, in TransformerLens naming."""

    def __init__(self) -> None:
        super().__init__()
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, kv_head, d_head]
        self.hook_v = HookPoint()  # [batch, pos, kv_head, d_head]
        self.hook_attn_scores = HookPoint()  # [batch, head, query, key]
        self.hook_pattern = HookPoint()  # [batch, head, query, key]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.hook_result = HookPoint()  # [batch, pos, head, d_model], only when hooked or cfg.use_attn_result

    def output(
        self,
        z: Float[Tensor, "batch pos head d_head"],
        o_proj: nn.Linear,
        always_result: bool,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Project `z` through the output matrix; per head (firing `hook_result`) only on demand."""
        z = self.hook_z(z)
        if always_result or self.hook_result.has_hooks():
            # o_proj's own forward does not run here: an offloaded o_proj is loaded for the einsum
            w_o = einops.rearrange(materialized(o_proj), "m (h d) -> h d m", h=z.shape[2])
            result = self.hook_result(einops.einsum(z, w_o, "b p h d, h d m -> b p h m"))
            out = result.sum(dim=2)
            return out if o_proj.bias is None else out + materialized(o_proj, "bias")
        return o_proj(einops.rearrange(z, "b p h d -> b p (h d)"))


class TLWeightViews:
    """TransformerLens-layout views (`W_Q`, `W_K`, `W_V`, `W_O`, `b_*`, `QK`, `OV`) of packed projection weights.

    Weights are stored as Hugging Face packs them (`[n_heads * d_head,
    d_model]`) so plain forwards use one matmul per projection. `W_Q`, `W_O`,
    `b_Q`, `b_O` and the raw key/value weights `_W_K`, `_W_V`, `_b_K`, `_b_V`
    (`[n_kv_heads, ...]`) are views, so in-place edits (e.g. zeroing one
    head's `W_O` under `torch.no_grad()`) change the model, except for a
    projection accelerate offloaded (`device_map`), whose views are copies
    loaded from the offload store (`dispatch.materialized`). As in
    TransformerLens, `W_K`, `W_V`, `b_K`, `b_V` are per *query* head
    (`[n_heads, ...]`, each key/value head repeated for the query heads that
    share it): copies, so edit `_W_K`/`_W_V` instead.
    """

    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    n_heads: int
    n_kv_heads: int

    def _w_in(self, proj: nn.Linear, n: int) -> Tensor:
        return einops.rearrange(materialized(proj), "(h d) m -> h m d", h=n)

    def _b_in(self, proj: nn.Linear, n: int) -> Tensor:
        if proj.bias is None:
            return torch.zeros(n, proj.out_features // n, dtype=proj.weight.dtype, device=execution_device(proj))
        return einops.rearrange(materialized(proj, "bias"), "(h d) -> h d", h=n)

    def _per_query_head(self, kv: Tensor) -> Tensor:
        """Key/value head `h // n_rep` serves query head `h` (Hugging Face's `repeat_kv`)."""
        return kv.repeat_interleave(self.n_heads // self.n_kv_heads, dim=0)

    @property
    def W_Q(self) -> Float[Tensor, "head d_model d_head"]:
        return self._w_in(self.q_proj, self.n_heads)

    @property
    def _W_K(self) -> Float[Tensor, "kv_head d_model d_head"]:
        return self._w_in(self.k_proj, self.n_kv_heads)

    @property
    def _W_V(self) -> Float[Tensor, "kv_head d_model d_head"]:
        return self._w_in(self.v_proj, self.n_kv_heads)

    @property
    def W_K(self) -> Float[Tensor, "head d_model d_head"]:
        return self._per_query_head(self._W_K)

    @property
    def W_V(self) -> Float[Tensor, "head d_model d_head"]:
        return self._per_query_head(self._W_V)

    @property
    def W_O(self) -> Float[Tensor, "head d_head d_model"]:
        return einops.rearrange(materialized(self.o_proj), "m (h d) -> h d m", h=self.n_heads)

    @property
    def b_Q(self) -> Float[Tensor, "head d_head"]:
        return self._b_in(self.q_proj, self.n_heads)

    @property
    def _b_K(self) -> Float[Tensor, "kv_head d_head"]:
        return self._b_in(self.k_proj, self.n_kv_heads)

    @property
    def _b_V(self) -> Float[Tensor, "kv_head d_head"]:
        return self._b_in(self.v_proj, self.n_kv_heads)

    @property
    def b_K(self) -> Float[Tensor, "head d_head"]:
        return self._per_query_head(self._b_K)

    @property
    def b_V(self) -> Float[Tensor, "head d_head"]:
        return self._per_query_head(self._b_V)

    @property
    def b_O(self) -> Float[Tensor, " d_model"]:
        if self.o_proj.bias is None:
            return torch.zeros(
                self.o_proj.out_features, dtype=self.o_proj.weight.dtype, device=execution_device(self.o_proj)
            )
        return materialized(self.o_proj, "bias")

    @property
    def QK(self) -> FactoredMatrix:
        """`W_Q[h] @ W_K[h].T` per head, [head, d_model, d_model] as a FactoredMatrix (no rotary, no biases)."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """`W_V[h] @ W_O[h]` per head, [head, d_model, d_model] as a FactoredMatrix."""
        return FactoredMatrix(self.W_V, self.W_O)
