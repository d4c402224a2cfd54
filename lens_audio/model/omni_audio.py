"""The Qwen Omni thinkers' audio encoder: Whisper-style, with attention inside windows of `window_frames` mel frames.

transformers' `Qwen2_5OmniAudioEncoder` reads only each clip's valid frames, cuts them into windows of
`2 * n_window` mel frames (the last one shorter), runs both convolutions per window (each window zero-padded at
its end), adds sinusoidal positions that restart in every window, and lets each position attend only within its
window. It then joins each clip's windows, averages pairs of frames (AvgPool 2), applies `ln_post` and projects to
the decoder's width with its own `proj` (Linear with bias; no separate projector). The positions are a fixed
table, not weights.

Here the windows are a batch: every window that holds a valid frame is one row, padded to the full window with its
padding keys masked, which is the same computation. Hooks, under `audio.` as for the other families::

    hook_mel          [clips, mels, frames]           the features as given (frames past a clip's end are ignored)
    hook_conv_out     [windows, window_pos, d_audio]  after the convolutions, before positions; windows of all
                                                      clips in order (clip 0's first, ...)
    blocks.{L}.*      [windows, window_pos, ...]      as the other families' encoder blocks
    hook_pooled       [clips, tokens, d_audio]        pairs averaged, windows joined, before ln_post; rows past a
                                                      clip's `n_audio_tokens(valid frames)` are padding
    hook_audio_embeds [clips, tokens, d_model]        after ln_post and proj: what is spliced into the decoder
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from lens_audio.inputs.frames import conv_frames, n_audio_tokens
from lens_audio.model.audio_encoder import EncoderBlock, LayerNorm
from lens_audio.model.config import AudioLMConfig
from lens_audio.model.hook_point import HookPoint


def sinusoids(
    length: int, channels: int, device: torch.device | str = "cpu", max_timescale: float = 10000.0
) -> Float[Tensor, "length channels"]:
    """Whisper's sinusoidal position table (transformers' `SinusoidsPositionEmbedding`): sin then cos halves. A fixed
    table, computed where it is used (not a weight, so nothing to load or place)."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2, device=device).float())
    scaled = torch.arange(length, device=device)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def valid_frames(
    feature_attention_mask: Int[Tensor, "clips frames"] | None, clips: int, frames: int, device: torch.device
) -> Int[Tensor, " clips"]:
    """Each clip's valid mel frames (all of them without a mask)."""
    if feature_attention_mask is None:
        return torch.full((clips,), frames, dtype=torch.long, device=device)
    return feature_attention_mask.to(device).long().sum(-1)


def cut_into_windows(
    x: Float[Tensor, "clips mels frames"], valid: Int[Tensor, " clips"], window: int, n_windows: int
) -> tuple[Float[Tensor, "used mels window"], Int[Tensor, "clips n_windows"], Bool[Tensor, "clips n_windows"]]:
    """Each clip's features cut into `n_windows` windows of `window` frames, frames past its end zeroed (as
    transformers pads each clip's last window): the windows holding a valid frame (a clip's first always), every
    window's valid frames, and which windows are used."""
    clips, mels, frames = x.shape
    device = x.device
    frame_valid = torch.arange(n_windows * window, device=device)[None, :] < valid[:, None]
    x = F.pad(x, (0, n_windows * window - frames)) * frame_valid[:, None, :].to(x.dtype)
    x = x.reshape(clips, mels, n_windows, window).permute(0, 2, 1, 3)
    lengths = (valid[:, None] - window * torch.arange(n_windows, device=device)[None, :]).clamp(0, window)
    used = lengths > 0
    used[:, 0] = True
    return x[used], lengths, used


class WindowedEncoderHooks(nn.Module):
    """The hooks of the Qwen Omni thinkers' windowed encoders (the other encoders' names, see each for shapes)."""

    needs_input_ids = False

    def __init__(self) -> None:
        super().__init__()
        self.hook_mel = HookPoint()
        self.hook_conv_out = HookPoint()
        self.hook_pooled = HookPoint()
        self.hook_audio_embeds = HookPoint()


class OmniAudioEncoder(WindowedEncoderHooks):
    """Mel features -> projected audio embeddings, one row of embeddings per clip (see the module docstring)."""

    def __init__(self, cfg: AudioLMConfig) -> None:
        super().__init__()
        acfg = self.cfg = cfg.audio
        if not acfg.window_frames or acfg.window_frames < 1:
            raise ValueError(f"the Omni audio encoder needs window_frames = 2 * n_window > 0, not "
                             f"{acfg.window_frames}.")
        self.conv1 = nn.Conv1d(acfg.n_mels, acfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(acfg.d_model, acfg.d_model, kernel_size=3, stride=2, padding=1)
        self.blocks = nn.ModuleList(EncoderBlock(acfg, cfg.attn_implementation) for _ in range(acfg.n_layers))
        self.ln_post = LayerNorm(acfg.d_model)
        self.projector = nn.Linear(acfg.d_model, cfg.d_model, bias=True)

    def forward(
        self,
        input_features: Float[Tensor, "clips mels frames"],
        feature_attention_mask: Int[Tensor, "clips frames"] | None = None,
    ) -> tuple[Float[Tensor, "clips tokens d_model"], Int[Tensor, " clips"]]:
        """Returns the projected embeddings and how many of each clip's rows are real audio tokens."""
        if input_features.ndim != 3 or input_features.shape[1] != self.cfg.n_mels:
            raise ValueError(
                f"input_features has shape {tuple(input_features.shape)}, but this model's audio encoder expects "
                f"[clips, {self.cfg.n_mels} mel bins, frames]: build inputs with the model's processor "
                "(model.to_batch)."
            )
        clips, _, frames = input_features.shape
        window = self.cfg.window_frames
        device = input_features.device
        valid = valid_frames(feature_attention_mask, clips, frames, device)
        x = self.hook_mel(input_features.to(self.conv1.weight.dtype))
        n_windows = -(-frames // window)
        x, lengths, used = cut_into_windows(x, valid, window, n_windows)
        lengths = lengths[used]
        in_window = torch.arange(window, device=device)[None, :] < lengths[:, None]
        x = F.gelu(self.conv1(x)) * in_window[:, None, :].to(x.dtype)
        x = self.hook_conv_out(F.gelu(self.conv2(x)).transpose(1, 2))
        key_valid = torch.arange(x.shape[1], device=device)[None, :] < conv_frames(lengths).clamp(min=1)[:, None]
        allowed = None if bool(key_valid.all()) else key_valid[:, None, None, :]
        resid = x + sinusoids(x.shape[1], x.shape[2], device).to(x.dtype)
        for block in self.blocks:
            resid = block(resid, allowed)
        # back to clips: [clips, n_windows * window_pos, d_audio], unused windows zero
        joined = resid.new_zeros(clips, n_windows, *resid.shape[1:])
        joined[used] = resid
        joined = joined.reshape(clips, -1, resid.shape[-1])
        pooled = self.hook_pooled(F.avg_pool1d(joined.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2))
        embeds = self.hook_audio_embeds(self.projector(self.ln_post(pooled)))
        n_tokens = n_audio_tokens(valid)
        return embeds[:, : int(n_tokens.max())], n_tokens
