"""The Qwen2 language decoder, hooked with TransformerLens names.

Each block computes, with the hook that fires at each step::

    resid_pre --ln1--> attn --hook_attn_out--> + --> resid_mid --ln2--> mlp --hook_mlp_out--> + --> resid_post

RMSNorm follows Hugging Face's numerics (statistics in float32, cast back
before the weight); rotary angles are computed in float32 from explicit
position ids, so left-padded rows see the same positions as unpadded ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from lens_audio.model.hook_point import HookPoint

from lens_audio.model.attention import AttentionHooks, TLWeightViews, attend
from lens_audio.model.block import PreNormBlock
from lens_audio.model.config import AudioLMConfig
from lens_audio.model.kv_cache import LayerKVCache


class RMSNorm(nn.Module):
    """RMSNorm with TransformerLens's `hook_scale` ([batch, pos, 1]) and `hook_normalized` (pre-weight).

    After `fold_ln` its weight is None (TransformerLens's `RMSNormPre`): it only normalises.
    """

    w: nn.Parameter | None

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.eps = eps
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x32 = x.to(torch.float32)
        scale = self.hook_scale(torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps))
        normalized = self.hook_normalized((x32 / scale).to(x.dtype))
        return normalized if self.w is None else self.w * normalized  # w is None once folded (fold_ln)


class RotaryEmbedding:
    """Rotary position angles for given position ids (no state: nothing to load or move)."""

    def __init__(self, d_head: int, base: float) -> None:
        self.d_head = d_head
        self.base = base

    def cos_sin(
        self, position_ids: Int[Tensor, "batch pos"], dtype: torch.dtype
    ) -> tuple[Float[Tensor, "batch pos 1 d_head"], Float[Tensor, "batch pos 1 d_head"]]:
        exponents = torch.arange(0, self.d_head, 2, dtype=torch.int64, device=position_ids.device).float() / self.d_head
        inv_freq = 1.0 / (self.base**exponents)
        freqs = position_ids[..., None].float() * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(
    x: Float[Tensor, "batch pos head d_head"], cos: Tensor, sin: Tensor
) -> Float[Tensor, "batch pos head d_head"]:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class DecoderAttention(TLWeightViews, AttentionHooks):
    """Grouped-query self-attention with rotary positions and q/k/v biases."""

    def __init__(self, cfg: AudioLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_key_value_heads
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head, bias=True)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_key_value_heads * cfg.d_head, bias=True)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_key_value_heads * cfg.d_head, bias=True)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model, bias=False)
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        cos_sin: tuple[Tensor, Tensor],
        allowed: Bool[Tensor, "batch 1 query key"] | None,
        kv_cache: LayerKVCache | None,
    ) -> Float[Tensor, "batch pos d_model"]:
        b, p, _ = x.shape
        q = self.hook_q(self.q_proj(x).view(b, p, self.n_heads, -1))
        k = self.hook_k(self.k_proj(x).view(b, p, self.n_kv_heads, -1))
        v = self.hook_v(self.v_proj(x).view(b, p, self.n_kv_heads, -1))
        q = self.hook_rot_q(apply_rotary(q, *cos_sin))
        k = self.hook_rot_k(apply_rotary(k, *cos_sin))
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        z = attend(self, q, k, v, allowed, True, self.cfg.attn_implementation)
        return self.output(z, self.o_proj, self.cfg.use_attn_result)


class GatedMLP(nn.Module):
    """SwiGLU MLP: `hook_pre` is the gate pre-activation, `hook_pre_linear` the up projection."""

    def __init__(self, cfg: AudioLMConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_mlp, bias=False)
        self.down_proj = nn.Linear(cfg.d_mlp, cfg.d_model, bias=False)
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp]
        self.hook_pre_linear = HookPoint()  # [batch, pos, d_mlp]
        self.hook_post = HookPoint()  # [batch, pos, d_mlp]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        gate = self.hook_pre(self.gate_proj(x))
        up = self.hook_pre_linear(self.up_proj(x))
        return self.down_proj(self.hook_post(F.silu(gate) * up))

    @property
    def W_gate(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.gate_proj.weight.T

    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.up_proj.weight.T

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return self.down_proj.weight.T

    def _zeros(self, n: int) -> Float[Tensor, "n"]:
        return torch.zeros(n, dtype=self.down_proj.weight.dtype, device=self.down_proj.weight.device)

    @property
    def b_in(self) -> Float[Tensor, "d_mlp"]:
        """Qwen2's MLP has no biases; zeros, as TransformerLens gives for bias-free models."""
        return self._zeros(self.up_proj.out_features)

    @property
    def b_gate(self) -> Float[Tensor, "d_mlp"]:
        return self._zeros(self.gate_proj.out_features)

    @property
    def b_out(self) -> Float[Tensor, "d_model"]:
        return self._zeros(self.down_proj.out_features)


class Embed(nn.Embedding):
    """Token embedding; `W_E` [d_vocab, d_model] as in TransformerLens (the parameter stays `embed.weight`)."""

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.weight


class Unembed(nn.Linear):
    """Unembedding; `W_U` [d_model, d_vocab] and `b_U` (zeros: Qwen2's lm_head has no bias) as in TransformerLens."""

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.weight.T

    @property
    def b_U(self) -> Float[Tensor, "d_vocab"]:
        if self.bias is not None:
            return self.bias
        return torch.zeros(self.out_features, dtype=self.weight.dtype, device=self.weight.device)


class DecoderBlock(PreNormBlock):
    def __init__(self, cfg: AudioLMConfig) -> None:
        super().__init__()
        self.ln1 = RMSNorm(cfg.d_model, cfg.eps)
        self.attn = DecoderAttention(cfg)
        self.ln2 = RMSNorm(cfg.d_model, cfg.eps)
        self.mlp = GatedMLP(cfg)

    def forward(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        cos_sin: tuple[Tensor, Tensor],
        allowed: Bool[Tensor, "batch 1 query key"] | None,
        kv_cache: LayerKVCache | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        return self.residual(resid, lambda x: self.attn(x, cos_sin, allowed, kv_cache))
