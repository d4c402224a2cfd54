"""TransformerLens's weight processing for the decoder of `HookedAudioLM`, under TransformerLens's rules for RMSNorm.

- `fold_ln`: each RMSNorm weight is multiplied into the weights that read the normalised stream (`ln1` into
  W_Q/W_K/W_V, `ln2` into W_gate/W_in (a mixture of experts: the router and every expert's gate/up), `ln_final`
  into W_U; Qwen3's per-head q/k norms stay, they normalise after the projection) and the norm loses its weight
  (`cfg.normalization_type` becomes "RMSPre"). Exact: logits are unchanged up to rounding. Then
  `ln_final.hook_normalized @ W_U + b_U` are the logits and `W_U[:, t]` is token t's residual direction.
- `center_writing_weights`: LayerNorm models only (TransformerLens skips it for RMSNorm, whose output is not
  invariant to the mean of the residual stream); a no-op here.
- `center_unembed`: subtracts the mean over the vocabulary from W_U. Log-probs are unchanged, logits shift by a
  constant per position (so they no longer equal transformers').
- `fold_value_biases`: `b_O += sum_h b_V[h] @ W_O[h]` and `b_V = 0` (attention rows sum to one). `hook_v`,
  `hook_z` and `hook_result` then exclude the value bias.

The audio encoder (LayerNorm, a different residual stream) is left as loaded. Each processed weight is replaced
in its own storage when the model owns it (`from_pretrained`: no extra memory), otherwise by a new tensor, one
at a time (a Hugging Face model wrapped by `from_hf_model` keeps its own weights unchanged).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import einops
import torch
from torch import Tensor, nn

from lens_audio.model.moe import SparseMoE

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


_ROWS = 1024  # rows converted to float32 at a time: a 152k-token W_U never exists in float32 whole


def _replace(module: nn.Module, name: str, value: Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.to(old.dtype), requires_grad=old.requires_grad))


def _map_rows(module: nn.Module, name: str, fn, overwrite: bool) -> None:
    """Set `module.<name>` to `fn(rows in float32)`, a block of rows at a time: in its own storage if
    `overwrite` (the model owns it), else in a new tensor (the storage may be shared, e.g. by `from_hf_model`)."""
    old = getattr(module, name).detach()
    new = old if overwrite else torch.empty_like(old)
    for start in range(0, old.shape[0], _ROWS):
        new[start : start + _ROWS] = fn(old[start : start + _ROWS].float()).to(old.dtype)
    if not overwrite:
        _replace(module, name, new)


def _fold_norm(norm: nn.Module, readers: list[nn.Linear], overwrite: bool) -> None:
    """Multiply `norm.w` into the input columns of each reader and drop the norm's weight."""
    w = norm.w.detach().float()
    for linear in readers:  # a reader may sit on another device than its norm (accelerate's device_map)
        _map_rows(linear, "weight", lambda rows: rows * w.to(rows.device), overwrite)
    norm.register_parameter("w", None)


@torch.no_grad()
def process_weights_(
    model: "HookedAudioLM",
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = False,
    fold_value_biases: bool = False,
    overwrite: bool = False,
) -> "HookedAudioLM":
    """Process the decoder's weights in place, as `HookedTransformer.process_weights_` does; returns the model.

    `overwrite=True` writes the processed weights into the existing storage (no extra memory; only for a
    model whose weights nothing else shares, as `from_pretrained` makes them).
    """
    if fold_ln and model.cfg.normalization_type == "RMS":
        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            _fold_norm(block.ln1, [attn.q_proj, attn.k_proj, attn.v_proj], overwrite)
            readers = mlp.input_linears() if isinstance(mlp, SparseMoE) else [mlp.gate_proj, mlp.up_proj]
            _fold_norm(block.ln2, readers, overwrite)  # MoE: into the router and every expert
        _fold_norm(model.ln_final, [model.unembed], overwrite)
        model.cfg.normalization_type = "RMSPre"
    # center_writing_weights applies to LayerNorm models only (TransformerLens's rule); the decoder uses RMSNorm.
    del center_writing_weights
    if center_unembed:  # the unembedding is stored [d_vocab, d_model]: centre each residual direction over tokens
        weight = model.unembed.weight.detach()
        mean = sum(weight[i : i + _ROWS].float().sum(0) for i in range(0, weight.shape[0], _ROWS)) / weight.shape[0]
        _map_rows(model.unembed, "weight", lambda rows: rows - mean, overwrite)
    if fold_value_biases and model.cfg.qkv_bias:
        for block in model.blocks:
            _fold_value_biases(block.attn)
        model.cfg.o_bias = True  # the output projections now carry the folded biases: HookedAudioLM(cfg) builds them
    return model


def _fold_value_biases(attn: nn.Module) -> None:
    """Move each head's constant value-bias contribution into the layer's output bias (none without value biases)."""
    if attn.v_proj.bias is None:
        return
    b_v = attn.b_V.detach().float()  # [head, d_head], expanded to query heads
    w_o = attn.W_O.detach().float()  # [head, d_head, d_model]
    folded = attn.b_O.detach().float() + einops.einsum(b_v, w_o, "h d, h d m -> m")
    if attn.o_proj.bias is None:
        attn.o_proj.bias = nn.Parameter(torch.zeros_like(attn.o_proj.weight[:, 0]), attn.o_proj.weight.requires_grad)
    _replace(attn.o_proj, "bias", folded)
    _replace(attn.v_proj, "bias", torch.zeros_like(attn.v_proj.bias))
