"""A sparse mixture-of-experts MLP (Qwen3-MoE / Qwen3-Omni-MoE thinker style) with TransformerLens's MoE hook names.

The router is a bias-free Linear `gate` (TransformerLens's `W_gate`); each token's `top_k` experts by router
probability run a SwiGLU MLP and their outputs are summed, weighted by those probabilities (renormalised over the
`top_k` when `norm_topk_prob`, as the Qwen MoE thinkers do). Hooks, named as TransformerLens 3.x's `MoE` names them
where it has a name::

    hook_router_logits    [batch, pos, experts]   the router's logits (no TL name)
    hook_expert_weights   [batch, pos, experts]   the router's probabilities (TransformerLens fires it there, before
                                                  the top-k: patch it to change the routing)
    hook_expert_indices   [batch, pos, top_k]     the chosen experts
    hook_topk_weights     [batch, pos, top_k]     their weights as used (renormalised; no TransformerLens name)
    experts.{e}.hook_gate [routed, d_expert]      per expert, on the tokens routed to it, in token order
    experts.{e}.hook_pre  [routed, d_expert]      (TransformerLens's `MoEGatedMLP` names: gate pre-activation, up
    experts.{e}.hook_post [routed, d_expert]      projection, activation times up)
    experts.{e}.hook_result [routed, d_model]     the expert's output, before its routing weight (no TL name)

Weights keep Hugging Face's per-expert layout (`experts.{e}.gate_proj/up_proj/down_proj`, as checkpoints store
them); `from_fused` reads transformers' in-memory fused layout (`gate_up_proj [experts, 2 * d_expert, d_model]`,
`down_proj [experts, d_model, d_expert]`).

The Qwen3-Omni-MoE thinker's decoder uses it on the layers `cfg.moe_layers` (`DecoderBlock`). TransformerLens's
per-layer MLP views `W_in` / `W_out` / `b_in` have no single value for a mixture: they raise, naming the per-expert
weights (`mlp.experts[e].up_proj.weight`, ...); `W_gate` is the router, as in TransformerLens's `MoE`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from lens_audio.model.dispatch import execution_device
from lens_audio.model.hook_point import HookPoint


class Expert(nn.Module):
    """One SwiGLU expert; parameter names as in Hugging Face checkpoints, hooks as TransformerLens's `MoEGatedMLP`."""

    def __init__(self, d_model: int, d_expert: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_expert, bias=False)
        self.up_proj = nn.Linear(d_model, d_expert, bias=False)
        self.down_proj = nn.Linear(d_expert, d_model, bias=False)
        self.hook_gate = HookPoint()
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()
        self.hook_result = HookPoint()

    def forward(self, x: Float[Tensor, "routed d_model"]) -> Float[Tensor, "routed d_model"]:
        gate = self.hook_gate(self.gate_proj(x))
        up = self.hook_pre(self.up_proj(x))
        return self.hook_result(self.down_proj(self.hook_post(F.silu(gate) * up)))


class SparseMoE(nn.Module):
    """Router plus `n_experts` experts, `top_k` per token (see the module docstring)."""

    def __init__(self, d_model: int, d_expert: int, n_experts: int, top_k: int, norm_topk_prob: bool) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"num_experts_per_tok ({top_k}) must be between 1 and num_experts ({n_experts}).")
        self.top_k, self.norm_topk_prob = top_k, norm_topk_prob
        self.gate = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(d_model, d_expert) for _ in range(n_experts))
        self.hook_router_logits = HookPoint()
        self.hook_expert_weights = HookPoint()
        self.hook_expert_indices = HookPoint()
        self.hook_topk_weights = HookPoint()

    @classmethod
    def from_config(cls, cfg: Any) -> "SparseMoE":
        """The block an `AudioLMConfig` with `moe_layers` describes."""
        if cfg.d_expert is None or cfg.num_experts is None or cfg.experts_per_token is None:
            raise ValueError("a config with moe_layers needs d_expert, num_experts and experts_per_token.")
        return cls(cfg.d_model, cfg.d_expert, cfg.num_experts, cfg.experts_per_token, cfg.norm_topk_prob)

    @property
    def W_gate(self) -> Float[Tensor, "d_model experts"]:
        """The router's weight in TransformerLens's orientation."""
        return self.gate.weight.T

    @property
    def b_out(self) -> Float[Tensor, " d_model"]:
        """Zeros: the experts have no biases (what `accumulated_bias` adds)."""
        proj = self.experts[0].down_proj
        return torch.zeros(proj.out_features, dtype=proj.weight.dtype, device=execution_device(proj))

    def _per_expert(self, name: str) -> Tensor:
        raise ValueError(
            f"mlp.{name} of a mixture-of-experts layer has no single value: read one expert's weights "
            "(mlp.experts[e].gate_proj / up_proj / down_proj .weight) or the router (mlp.W_gate)."
        )

    W_in = property(lambda self: self._per_expert("W_in"))
    W_out = property(lambda self: self._per_expert("W_out"))
    b_in = property(lambda self: self._per_expert("b_in"))
    b_gate = property(lambda self: self._per_expert("b_gate"))

    def input_linears(self) -> list[nn.Linear]:
        """Every Linear that reads the block's (normalised) input: the router and each expert's gate and up
        projections (what `fold_ln` folds `ln2` into)."""
        return [self.gate, *(p for e in self.experts for p in (e.gate_proj, e.up_proj))]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        logits = self.hook_router_logits(self.gate(x))
        probs = self.hook_expert_weights(F.softmax(logits, dim=-1, dtype=torch.float))
        top, indices = torch.topk(probs, self.top_k, dim=-1)
        indices = self.hook_expert_indices(indices)
        if self.norm_topk_prob:
            top = top / top.sum(dim=-1, keepdim=True)
        top = self.hook_topk_weights(top.to(logits.dtype))
        flat, flat_indices, flat_top = x.reshape(-1, x.shape[-1]), indices.reshape(-1, self.top_k), top.flatten(0, 1)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.where(flat_indices == e)
            if token.numel() == 0 and not self._expert_hooked(expert):
                continue
            result = expert(flat[token]) * flat_top[token, slot, None]
            out.index_add_(0, token, result.to(out.dtype))
        return out.reshape(x.shape)

    @staticmethod
    def _expert_hooked(expert: Expert) -> bool:
        return any(h.has_hooks() for h in (expert.hook_gate, expert.hook_pre, expert.hook_post, expert.hook_result))

    @torch.no_grad()
    def from_fused(self, router: Tensor, gate_up_proj: Tensor, down_proj: Tensor) -> "SparseMoE":
        """Copy transformers' fused expert weights (and the router's) into this block; returns it."""
        d_expert = down_proj.shape[-1]
        self.gate.weight.copy_(router)
        for e, expert in enumerate(self.experts):
            expert.gate_proj.weight.copy_(gate_up_proj[e, :d_expert])
            expert.up_proj.weight.copy_(gate_up_proj[e, d_expert:])
            expert.down_proj.weight.copy_(down_proj[e])
        return self
