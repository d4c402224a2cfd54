"""`HookedTransformer`'s model-level weight surface for `HookedAudioLM`'s decoder.

Stacked weights (`model.W_Q[layer, head]`, `model.W_in[layer]`, ...), the factored circuits `model.QK` and
`model.OV`, composition scores between heads, `accumulated_bias` (which
`ActivationCache.get_full_resid_decomposition` calls), the weights under TransformerLens's names
(`tl_parameters()`, which `transformer_lens.SVDInterpreter` reads), and a `to` that keeps `cfg.dtype`/`cfg.device`
current. Key and value weights are per query head, as in TransformerLens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import composition_scores

_ATTN_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")
_MLP_WEIGHTS = ("W_in", "W_gate", "W_out", "b_in", "b_out")


class TLParameters(Mapping):
    """The decoder's weights under TransformerLens's names (`"blocks.2.attn.W_V"`, `"unembed.W_U"`, ...).

    Each value is computed when looked up, from the module attribute of the same dotted name (`model.blocks[2].attn
    .W_V`): a view of the stored weight where the layout allows (W_Q, W_O, W_in, W_U, W_E, ...), so holding this
    mapping costs no memory. Key/value weights are per query head (copies with grouped-query attention); the stored
    per-key-value-head ones are `_W_K`, `_W_V`. Norm weights (`blocks.L.ln1.w`, `ln_final.w`) appear only on an
    unfolded model, as in TransformerLens. The parameters themselves keep Hugging Face's layout and names
    (`model.named_parameters()`, `model.state_dict()`), so equivalence with transformers stays exact.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        cfg = model.cfg
        names = ["embed.W_E"]
        for l, block in enumerate(model.blocks):
            prefix = f"blocks.{l}."
            names += [prefix + f"ln{i}.w" for i in (1, 2) if getattr(block, f"ln{i}").w is not None]
            names += [prefix + "attn." + n for n in _ATTN_WEIGHTS]
            if cfg.n_rep > 1:
                names += [prefix + "attn." + n for n in ("_W_K", "_W_V", "_b_K", "_b_V")]
            names += [prefix + "mlp." + n for n in _MLP_WEIGHTS]
        names += ["ln_final.w"] if model.ln_final.w is not None else []
        self._names = names + ["unembed.W_U", "unembed.b_U"]
        self._known = set(self._names)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._known:
            raise KeyError(name)
        module, attribute = name.rsplit(".", 1)
        return getattr(self._model.get_submodule(module), attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class TLWeightsMixin:
    """Mixed into `HookedAudioLM`; reads `self.blocks` (decoder blocks) and `self.cfg`."""

    blocks: nn.ModuleList
    cfg: Any

    def _stack(self, part: str, name: str) -> Tensor:
        if part == "mlp" and self.cfg.moe_layers:
            raise ValueError(f"model.{name}: layers {list(self.cfg.moe_layers)} are mixtures of experts, so MLP "
                             "weights do not stack over layers; read model.blocks[L].mlp (experts[e], W_gate: the "
                             "router).")
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

    def tl_parameters(self) -> TLParameters:
        """The decoder's weights under TransformerLens's names, computed on lookup (see `TLParameters`)."""
        return TLParameters(self)

    def tl_named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        return iter(self.tl_parameters().items())

    def all_composition_scores(
        self, mode: Literal["Q", "K", "V"]
    ) -> Float[Tensor, "layer1 head1 layer2 head2"]:
        """Composition scores of every pair of decoder heads, as `HookedTransformer.all_composition_scores`.

        `||W_OV[l1,h1] @ W_B[l2,h2]||_F / (||W_OV[l1,h1]||_F ||W_B[l2,h2]||_F)` with `W_B` the later head's `W_QK`
        ("Q"), `W_QK.T` ("K") or `W_OV` ("V") (Elhage et al. 2021), zero unless `l1 < l2`. Rotary positions and
        biases are not part of the circuits (as in TransformerLens); with `fold_ln` (the default) the norm weights
        are inside W_Q/W_K/W_V.
        """
        if mode not in ("Q", "K", "V"):
            raise ValueError(f"mode must be one of 'Q', 'K', 'V', not {mode!r}.")
        right = self.OV if mode == "V" else (self.QK if mode == "Q" else self.QK.T)
        scores = composition_scores(self.OV, right, broadcast_dims=True)
        layers = torch.arange(self.cfg.n_layers, device=scores.device)
        later = layers[:, None, None, None] < layers[None, None, :, None]
        return torch.where(later, scores, torch.zeros_like(scores))

    def all_head_labels(self) -> list[str]:
        """`["L0H0", "L0H1", ...]`: one label per decoder head, layer-major (TransformerLens's order)."""
        return [f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)]

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
