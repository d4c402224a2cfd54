"""`HookedTransformer`'s model-level weight surface for `HookedAudioLM`'s decoder.

Stacked weights (`model.W_Q[layer, head]`, `model.W_in[layer]`, ...), the factored circuits `model.QK` and
`model.OV`, `accumulated_bias` (which `ActivationCache.get_full_resid_decomposition` calls), and a `to` that keeps
`cfg.dtype`/`cfg.device` current. Key and value weights are per query head, as in TransformerLens.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import FactoredMatrix


class TLWeightsMixin:
    """Mixed into `HookedAudioLM`; reads `self.blocks` (decoder blocks) and `self.cfg`."""

    blocks: nn.ModuleList
    cfg: Any

    def _stack(self, part: str, name: str) -> Tensor:
        return torch.stack([getattr(getattr(block, part), name) for block in self.blocks], dim=0)

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("attn", "W_Q")

    @property
    def W_K(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("attn", "W_K")

    @property
    def W_V(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._stack("attn", "W_V")

    @property
    def W_O(self) -> Float[Tensor, "layer head d_head d_model"]:
        return self._stack("attn", "W_O")

    @property
    def b_Q(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("attn", "b_Q")

    @property
    def b_K(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("attn", "b_K")

    @property
    def b_V(self) -> Float[Tensor, "layer head d_head"]:
        return self._stack("attn", "b_V")

    @property
    def b_O(self) -> Float[Tensor, "layer d_model"]:
        return self._stack("attn", "b_O")

    @property
    def W_in(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return self._stack("mlp", "W_in")

    @property
    def W_gate(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return self._stack("mlp", "W_gate")

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        return self._stack("mlp", "W_out")

    @property
    def b_in(self) -> Float[Tensor, "layer d_mlp"]:
        return self._stack("mlp", "b_in")

    @property
    def b_out(self) -> Float[Tensor, "layer d_model"]:
        return self._stack("mlp", "b_out")

    @property
    def QK(self) -> FactoredMatrix:
        """[layer, head, d_model, d_model]: `W_Q @ W_K.T` (queries as rows; rotary not included)."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """[layer, head, d_model, d_model]: `W_V @ W_O`."""
        return FactoredMatrix(self.W_V, self.W_O)

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Float[Tensor, " d_model"]:
        """Sum of the output biases the residual stream has received before block `layer` (its MLP if `mlp_input`)."""
        if mlp_input and layer >= self.cfg.n_layers:
            raise ValueError(f"mlp_input=True needs layer < n_layers={self.cfg.n_layers}, not {layer}.")
        total = torch.zeros_like(self.blocks[0].attn.b_O)
        for block in self.blocks[:layer]:
            total = total + block.attn.b_O + (block.mlp.b_out if include_mlp_biases else 0)
        return total + self.blocks[layer].attn.b_O if mlp_input else total

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """`nn.Module.to`, also recording the new dtype and device in `cfg` (as TransformerLens does)."""
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        out = super().to(*args, **kwargs)  # type: ignore[misc]
        if dtype is not None:
            self.cfg.dtype = dtype
        if device is not None:
            self.cfg.device = str(device)
        return out
