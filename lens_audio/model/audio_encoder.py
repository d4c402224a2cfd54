"""The Whisper-style audio encoder and multimodal projector, hooked under `audio.`.

Data flow for `n_clips` clips, each padded to `2 * n_ctx` mel frames::

    hook_mel [clips, mels, frames]
      -> conv1, gelu, conv2 (stride 2), gelu -> hook_conv_out [clips, n_ctx, d_audio]
      -> + positions -> blocks.{L} (pre-LN, bidirectional; padding keys masked if cfg.mask_padding)
      -> downsample -> hook_pooled [clips, tokens, d_in]
      -> projector -> hook_audio_embeds [clips, tokens, d_model]

`downsample` is the family's (`lens_audio.model.family`): "avg_pool" (Qwen2-Audio, AudioFlamingo3) is
AvgPool1d(2) then `ln_post` (hook_pooled before `ln_post`: [clips, n_ctx // 2, d_audio]); "stack" (Voxtral)
is `ln_post` then `stack` consecutive frames concatenated (hook_pooled: [clips, n_ctx // stack, stack * d_audio]).
With `mask_padding`, only the first `n_audio_tokens(valid_frames)` (`lens_audio.inputs.frames`) rows of
`hook_audio_embeds` per clip are spliced into the language model; otherwise every row is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from lens_audio.inputs.frames import conv_frames, n_audio_tokens
from lens_audio.model.attention import AttentionHooks, TLWeightViews, attend
from lens_audio.model.block import PreNormBlock
from lens_audio.model.config import AudioEncoderConfig, AudioLMConfig
from lens_audio.model.hook_point import HookPoint


class LayerNorm(nn.Module):
    """LayerNorm with a `hook_normalized` (centred and scaled, before weight and bias)."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.eps = eps
        self.hook_normalized = HookPoint()

    def forward(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        if not self.hook_normalized.has_hooks():  # fused, as nn.LayerNorm: one rounding in low precision
            return F.layer_norm(x, x.shape[-1:], self.w, self.b, eps=self.eps)
        return self.hook_normalized(F.layer_norm(x, x.shape[-1:], eps=self.eps)) * self.w + self.b


class EncoderAttention(TLWeightViews, AttentionHooks):
    """Bidirectional multi-head attention; keys have no bias, as in Whisper."""

    def __init__(self, cfg: AudioEncoderConfig, implementation: str) -> None:
        super().__init__()
        self.n_heads = self.n_kv_heads = cfg.n_heads
        self.implementation = implementation
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=True)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=True)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=True)

    def forward(
        self, x: Float[Tensor, "clips pos d_audio"], allowed: Bool[Tensor, "clips 1 1 pos"] | None
    ) -> Float[Tensor, "clips pos d_audio"]:
        c, p, _ = x.shape
        q = self.hook_q(self.q_proj(x).view(c, p, self.n_heads, -1))
        k = self.hook_k(self.k_proj(x).view(c, p, self.n_heads, -1))
        v = self.hook_v(self.v_proj(x).view(c, p, self.n_heads, -1))
        # Whisper scales the queries before the product (Hugging Face's order, which matters in bfloat16).
        z = attend(self, q * q.shape[-1] ** -0.5, k, v, allowed, False, self.implementation, scale=1.0)
        return self.output(z, self.o_proj, False)


class EncoderMLP(nn.Module):
    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Float[Tensor, "clips pos d_audio"]) -> Float[Tensor, "clips pos d_audio"]:
        return self.fc_out(self.hook_post(F.gelu(self.hook_pre(self.fc_in(x)))))


class EncoderBlock(PreNormBlock):
    def __init__(self, cfg: AudioEncoderConfig, implementation: str) -> None:
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model)
        self.attn = EncoderAttention(cfg, implementation)
        self.ln2 = LayerNorm(cfg.d_model)
        self.mlp = EncoderMLP(cfg)

    def forward(
        self, resid: Float[Tensor, "clips pos d_audio"], allowed: Bool[Tensor, "clips 1 1 pos"] | None
    ) -> Float[Tensor, "clips pos d_audio"]:
        return self.residual(resid, lambda x: self.attn(x, allowed))


class MLPProjector(nn.Module):
    """Linear -> GELU -> Linear (AudioFlamingo3, Voxtral); parameter names as in transformers."""

    def __init__(self, d_in: int, d_model: int, bias: bool) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_model, bias=bias)
        self.linear_2 = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Float[Tensor, "clips tokens d_in"]) -> Float[Tensor, "clips tokens d_model"]:
        return self.linear_2(F.gelu(self.linear_1(x)))


def make_projector(cfg: AudioLMConfig) -> nn.Module:
    """The family's projector from encoder rows (after downsampling) to the decoder width."""
    acfg = cfg.audio
    d_in = acfg.d_model * (acfg.stack if acfg.downsample == "stack" else 1)
    if cfg.projector == "linear":
        return nn.Linear(d_in, cfg.d_model, bias=cfg.projector_bias)
    return MLPProjector(d_in, cfg.d_model, cfg.projector_bias)


class AudioEncoder(nn.Module):
    """Mel features -> projected audio embeddings, one row of embeddings per clip."""

    def __init__(self, cfg: AudioLMConfig) -> None:
        super().__init__()
        acfg = cfg.audio
        self.cfg = acfg
        self.conv1 = nn.Conv1d(acfg.n_mels, acfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(acfg.d_model, acfg.d_model, kernel_size=3, stride=2, padding=1)
        self.W_pos = nn.Parameter(torch.zeros(acfg.n_ctx, acfg.d_model))
        self.blocks = nn.ModuleList(EncoderBlock(acfg, cfg.attn_implementation) for _ in range(acfg.n_layers))
        self.ln_post = LayerNorm(acfg.d_model)
        self.projector = make_projector(cfg)
        self.hook_mel = HookPoint()
        self.hook_conv_out = HookPoint()
        self.hook_pooled = HookPoint()
        self.hook_audio_embeds = HookPoint()

    # Whether forward needs the prompt's token ids (Music Flamingo's time rotation reads which clip each window is of).
    needs_input_ids = False

    def forward(
        self,
        input_features: Float[Tensor, "clips mels frames"],
        feature_attention_mask: Int[Tensor, "clips frames"] | None = None,
        input_ids: Int[Tensor, "batch pos"] | None = None,
    ) -> tuple[Float[Tensor, "clips audio_pos d_model"], Int[Tensor, " clips"]]:
        """Returns the projected embeddings and how many of each clip's rows are real audio tokens.

        Without `feature_attention_mask` every frame counts as valid. `input_ids` are read only by encoders that set
        `needs_input_ids`."""
        expected = self.cfg.n_frames
        if input_features.shape[1:] != (self.cfg.n_mels, expected):
            raise ValueError(
                f"input_features has shape {tuple(input_features.shape)}, but this model's audio encoder "
                f"expects [clips, {self.cfg.n_mels} mel bins, {expected} frames]: build inputs with the "
                "model's own processor (model.to_batch / lens_audio.make_batch), which pads each clip to that length."
            )
        x = self.hook_mel(input_features.to(self.conv1.weight.dtype))
        x = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        x = self.hook_conv_out(x.transpose(1, 2))
        if feature_attention_mask is None:
            valid_frames = torch.full(x.shape[:1], expected, dtype=torch.long, device=x.device)
        else:
            valid_frames = feature_attention_mask.sum(-1)
        allowed = None
        if self.cfg.mask_padding:
            positions = torch.arange(self.cfg.n_ctx, device=x.device)
            key_valid = positions[None, :] < conv_frames(valid_frames)[:, None]
            allowed = None if bool(key_valid.all()) else key_valid[:, None, None, :]
        resid = (x + self.W_pos).to(x.dtype)  # W_pos may be float32 under a bfloat16 model (fp32_positions)
        for block in self.blocks:
            resid = block(resid, allowed)
        if self.cfg.downsample == "avg_pool":
            pooled = self.hook_pooled(F.avg_pool1d(resid.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2))
            rows = self.before_projector(self.ln_post(pooled), valid_frames, input_ids)
            embeds = self.hook_audio_embeds(self.projector(rows))
        else:  # Voxtral: normalise, then concatenate each run of `stack` frames into one row
            normed = self.ln_post(resid)
            stacked = self.hook_pooled(normed.reshape(normed.shape[0], -1, self.cfg.stack * normed.shape[-1]))
            embeds = self.hook_audio_embeds(self.projector(stacked))
        if not self.cfg.mask_padding:
            return embeds, torch.full_like(valid_frames, embeds.shape[1])
        return embeds, n_audio_tokens(valid_frames)


    def before_projector(
        self, rows: Float[Tensor, "clips tokens d_in"], valid_frames: Int[Tensor, " clips"], input_ids: Tensor | None
    ) -> Float[Tensor, "clips tokens d_in"]:
        """What the family does between `ln_post` and the projector: nothing here (Music Flamingo rotates by time)."""
        return rows

