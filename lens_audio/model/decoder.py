"""The language decoder (Qwen2 or Llama/Mistral: the same block up to attention biases), hooked with TransformerLens
names.

Each block computes, with the hook that fires at each step::

    resid_pre --ln1--> attn --hook_attn_out--> + --> resid_mid --ln2--> mlp --hook_mlp_out--> + --> resid_post

RMSNorm follows Hugging Face's numerics (statistics in float32, cast back
before the weight); rotary angles are computed in float32 from explicit
position ids, so left-padded rows see the same positions as unpadded ones.
"""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from lens_audio.model.attention import AttentionHooks, TLWeightViews, attend
from lens_audio.model.block import PreNormBlock
from lens_audio.model.config import AudioLMConfig
from lens_audio.model.dispatch import execution_device, materialized
from lens_audio.model.hook_point import HookPoint
from lens_audio.model.kv_cache import LayerKVCache
from lens_audio.model.moe import SparseMoE


def position_ids_from_mask(
    attention_mask: Int[Tensor, "batch pos"], n_past: Int[Tensor, " batch"] | None = None
) -> Int[Tensor, "batch pos"]:
    """Rotary positions as Hugging Face's `generate` makes them: the count of real tokens before each one.

    Padding gets position 1 (unused). Pass these to transformers' forward to compare it with the port on
    padded batches; `n_past` adds the real tokens already in a KV cache.
    """
    mask = attention_mask.bool()
    positions = mask.long().cumsum(-1) - 1
    if n_past is not None:
        positions = positions + n_past[:, None]
    return positions.masked_fill(~mask, 1)


class RMSNorm(nn.Module):
    """RMSNorm with TransformerLens's `hook_scale` ([batch, pos, 1]) and `hook_normalized` (pre-weight).

    After `fold_ln` its weight is None (TransformerLens's `RMSNormPre`): it only normalises. `weighted=False`
    builds it that way (a config whose `normalization_type` is "RMSPre").
    """

    w: nn.Parameter | None

    def __init__(self, d_model: int, eps: float, weighted: bool = True) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model)) if weighted else None
        self.eps = eps
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x32 = x.to(torch.float32)
        variance = x32.pow(2).mean(-1, keepdim=True)
        if self.hook_scale.has_hooks():
            x32 = x32 / self.hook_scale(torch.sqrt(variance + self.eps))
        else:  # Hugging Face's Qwen2RMSNorm, to the bit (rsqrt, then cast before the weight)
            x32 = x32 * torch.rsqrt(variance + self.eps)
        normalized = self.hook_normalized(x32.to(x.dtype))
        return normalized if self.w is None else self.w * normalized  # w is None once folded (fold_ln)


def weighted_norms(cfg: AudioLMConfig) -> bool:
    """Whether the decoder's RMSNorms carry a weight: "RMS" yes, "RMSPre" (weights folded by `fold_ln`) no."""
    if cfg.normalization_type not in ("RMS", "RMSPre"):
        raise ValueError(
            f"normalization_type must be 'RMS' or 'RMSPre' (RMSNorm, weight folded), not {cfg.normalization_type!r}."
        )
    return cfg.normalization_type == "RMS"


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


def unpadded_cos_sin(
    cfg: AudioLMConfig, x: Float[Tensor, "batch pos ..."], kv_cache: LayerKVCache | None
) -> tuple[Tensor, Tensor]:
    """Rotary angles for positions `0..pos-1`: what the model uses for an unpadded prompt without a cache (a block
    or attention layer called by hand, as in TransformerLens)."""
    if kv_cache is not None:
        raise ValueError("a block called with a kv_cache needs its cos_sin (model.start_decoder gives them).")
    positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[:2])
    return RotaryEmbedding(cfg.d_head, cfg.rotary_base).cos_sin(positions, x.dtype)


def apply_rotary(
    x: Float[Tensor, "batch pos head d_head"], cos: Tensor, sin: Tensor
) -> Float[Tensor, "batch pos head d_head"]:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class DecoderAttention(TLWeightViews, AttentionHooks):
    """Grouped-query self-attention with rotary positions; biases as `cfg.qkv_bias` / `cfg.o_bias` (the family's)."""

    def __init__(self, cfg: AudioLMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.n_kv_heads = cfg.n_heads, cfg.n_key_value_heads
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_key_value_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_key_value_heads * cfg.d_head, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model, bias=cfg.o_bias)
        self.hook_rot_q = HookPoint()
        self.hook_rot_k = HookPoint()
        if cfg.qk_norm:  # Qwen3: RMSNorm per query/key head; TransformerLens 4.x's names (`hook_q_normed`, ...)
            self.q_norm = RMSNorm(cfg.d_head, cfg.eps)
            self.k_norm = RMSNorm(cfg.d_head, cfg.eps)
            self.hook_q_normed = HookPoint()  # [batch, pos, head, d_head], after q_norm, before rotary
            self.hook_k_normed = HookPoint()  # [batch, pos, kv_head, d_head]
        # TransformerLens 4.x's names for the per-head inputs (`use_split_qkv_input`), fired after the block's own
        # `blocks.{L}.hook_q_input` etc. (3.x's names) on the same tensor.
        self.hook_q_input = HookPoint()  # [batch, pos, head, d_model]
        self.hook_k_input = HookPoint()  # [batch, pos, kv_head, d_model]
        self.hook_v_input = HookPoint()  # [batch, pos, kv_head, d_model]

    @property
    def attn_scale(self) -> float:
        """Scores are `q . k / attn_scale` (TransformerLens's attribute; `cfg.attn_scale`)."""
        return self.cfg.attn_scale

    def apply_rotary(
        self,
        x: Float[Tensor, "batch pos head d_head"],
        past_kv_pos_offset: int = 0,
        attention_mask: Int[Tensor, "batch offset_pos"] | None = None,
    ) -> Float[Tensor, "batch pos head d_head"]:
        """Rotate queries or keys to their positions, as TransformerLens's `apply_rotary`: positions
        `past_kv_pos_offset...` or, with `attention_mask` (over cached and new positions), the count of real tokens
        before each one, as the forward numbers them (padding: 1); `apply_rotary(cache["q", l],
        attention_mask=mask)` equals `cache["rot_q", l]`, padded batch or not."""

        if self.cfg.mrope_section is not None:
            raise ValueError(
                "apply_rotary computes plain rotary positions, but this family's decoder uses TMRoPE (positions from "
                "the audio's timing): read cache['rot_q', layer] / cache['rot_k', layer] instead."
            )
        if attention_mask is None:
            positions = torch.arange(past_kv_pos_offset, past_kv_pos_offset + x.shape[1], device=x.device)
            positions = positions.expand(x.shape[0], -1)
        else:
            mask = attention_mask.to(x.device)
            n_past = mask[:, :past_kv_pos_offset].long().sum(-1)
            positions = position_ids_from_mask(mask[:, past_kv_pos_offset:], n_past)
        cos, sin = RotaryEmbedding(self.cfg.d_head, self.cfg.rotary_base).cos_sin(positions, x.dtype)
        return apply_rotary(x, cos, sin)

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"] | tuple[Tensor, Tensor, Tensor],
        cos_sin: tuple[Tensor, Tensor] | None = None,
        allowed: Bool[Tensor, "batch 1 query key"] | None = None,
        kv_cache: LayerKVCache | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """`x` is the normalised stream, or (with `use_split_qkv_input`) one normalised copy per head for q, k, v.
        Without `cos_sin` and `allowed`: positions `0..pos-1`, plain causal (as `DecoderBlock.forward`)."""
        if cos_sin is None:
            cos_sin = unpadded_cos_sin(self.cfg, x[0] if isinstance(x, tuple) else x, kv_cache)
        q, k, v = self._project(x)
        if self.cfg.ungroup_grouped_query_attention and k.shape[2] != self.n_heads:
            k, v = (t.repeat_interleave(self.n_heads // self.n_kv_heads, dim=2) for t in (k, v))
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if self.cfg.qk_norm:
            q, k = self.hook_q_normed(self.q_norm(q)), self.hook_k_normed(self.k_norm(k))
        q = self.hook_rot_q(apply_rotary(q, *cos_sin))
        k = self.hook_rot_k(apply_rotary(k, *cos_sin))
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        z = attend(self, q, k, v, allowed, True, self.cfg.attn_implementation)
        return self.output(z, self.o_proj, self.cfg.use_attn_result)

    def _project(self, x: Tensor | tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values `[batch, pos, head or kv_head, d_head]`."""
        if isinstance(x, tuple):
            xq, xk, xv = x
            per_query_head = xk.shape[2] == self.n_heads
            w_k, b_k = (self.W_K, self.b_K) if per_query_head else (self._W_K, self._b_K)
            w_v, b_v = (self.W_V, self.b_V) if per_query_head else (self._W_V, self._b_V)
            split = "b p h m, h m d -> b p h d"
            return (einops.einsum(xq, self.W_Q, split) + self.b_Q, einops.einsum(xk, w_k, split) + b_k,
                    einops.einsum(xv, w_v, split) + b_v)
        b, p, _ = x.shape
        return (self.q_proj(x).view(b, p, self.n_heads, -1), self.k_proj(x).view(b, p, self.n_kv_heads, -1),
                self.v_proj(x).view(b, p, self.n_kv_heads, -1))


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
        return materialized(self.gate_proj).T

    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return materialized(self.up_proj).T

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return materialized(self.down_proj).T

    def _zeros(self, n: int) -> Float[Tensor, " n"]:
        return torch.zeros(n, dtype=self.down_proj.weight.dtype, device=execution_device(self.down_proj))

    @property
    def b_in(self) -> Float[Tensor, " d_mlp"]:
        """Qwen2's MLP has no biases; zeros, as TransformerLens gives for bias-free models."""
        return self._zeros(self.up_proj.out_features)

    @property
    def b_gate(self) -> Float[Tensor, " d_mlp"]:
        return self._zeros(self.gate_proj.out_features)

    @property
    def b_out(self) -> Float[Tensor, " d_model"]:
        return self._zeros(self.down_proj.out_features)


class Embed(nn.Embedding):
    """Token embedding; `W_E` [d_vocab, d_model] as in TransformerLens (the parameter stays `embed.weight`)."""

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return materialized(self)


class Unembed(nn.Linear):
    """Unembedding; `W_U` [d_model, d_vocab] and `b_U` (zeros: Qwen2's lm_head has no bias) as in TransformerLens."""

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return materialized(self).T

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"]:
        if self.bias is not None:
            return materialized(self, "bias")
        return torch.zeros(self.out_features, dtype=self.weight.dtype, device=execution_device(self))


class DecoderBlock(PreNormBlock):
    """A decoder block; with TransformerLens's switches on it also fires `hook_q_input`/`hook_k_input`/`hook_v_input`
    (the residual stream repeated per head, before `ln1`) and `hook_mlp_in` (the MLP's input, before `ln2`)."""

    def __init__(self, cfg: AudioLMConfig, layer: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.ln1 = RMSNorm(cfg.d_model, cfg.eps, weighted_norms(cfg))
        self.attn = DecoderAttention(cfg)
        self.ln2 = RMSNorm(cfg.d_model, cfg.eps, weighted_norms(cfg))
        self.mlp: GatedMLP | SparseMoE = GatedMLP(cfg) if layer not in cfg.moe_layers else SparseMoE.from_config(cfg)
        self.hook_q_input = HookPoint()  # [batch, pos, head, d_model]
        self.hook_k_input = HookPoint()  # [batch, pos, kv_head, d_model]
        self.hook_v_input = HookPoint()  # [batch, pos, kv_head, d_model]
        self.hook_mlp_in = HookPoint()  # [batch, pos, d_model]
        self.hook_attn_in = HookPoint()  # [batch, pos, head, d_model], with use_attn_in (no grouped-query attention)

    def forward(
        self,
        resid: Float[Tensor, "batch pos d_model"],
        cos_sin: tuple[Tensor, Tensor] | None = None,
        allowed: Bool[Tensor, "batch 1 query key"] | None = None,
        kv_cache: LayerKVCache | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """One block on the residual stream. Called as in TransformerLens (`model.blocks[l](resid_pre)`), it uses
        positions `0..pos-1` and a plain causal mask, which is what the model does for an unpadded prompt; a padded
        batch needs the model's own rotary angles and key mask (`model.start_decoder(...)` gives both)."""
        cos_sin = cos_sin if cos_sin is not None else unpadded_cos_sin(self.cfg, resid, kv_cache)
        cfg = self.cfg
        if not (cfg.use_split_qkv_input or cfg.use_hook_mlp_in or cfg.use_attn_in):
            return self.residual(resid, lambda x: self.attn(x, cos_sin, allowed, kv_cache))
        resid = self.hook_resid_pre(resid)
        x: Tensor | tuple[Tensor, Tensor, Tensor]
        if cfg.use_split_qkv_input:
            n_kv = cfg.n_heads if cfg.ungroup_grouped_query_attention else cfg.n_key_value_heads
            attn = self.attn
            inputs = ((self.hook_q_input, attn.hook_q_input, cfg.n_heads), (self.hook_k_input, attn.hook_k_input, n_kv),
                      (self.hook_v_input, attn.hook_v_input, n_kv))
            x = tuple(self.ln1(hook_4(hook(resid[:, :, None].repeat(1, 1, n, 1)))) for hook, hook_4, n in inputs)
        elif cfg.use_attn_in:
            per_head = self.ln1(self.hook_attn_in(resid[:, :, None].repeat(1, 1, cfg.n_heads, 1)))
            x = (per_head, per_head, per_head)
        else:
            x = self.ln1(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(x, cos_sin, allowed, kv_cache)))
        mlp_in = self.hook_mlp_in(resid.clone()) if cfg.use_hook_mlp_in else resid
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(mlp_in))))
