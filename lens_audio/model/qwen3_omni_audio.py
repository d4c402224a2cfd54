"""The Qwen3-Omni-MoE thinker's audio encoder (transformers' `Qwen3OmniMoeAudioEncoder`), hooked under `audio.`.

The `qwen3-omni-moe` family's encoder (see docs/families.md). transformers reads each clip's valid frames in chunks of
`2 * n_window` mel frames (1 s in the released model; the last shorter), runs three stride-2 Conv2d layers over
(mel, time) per chunk (zero-padded at its end), flattens channels x mel into one Linear (`conv_out`), adds sinusoidal
positions that restart in every chunk, and attends within windows of `n_window_infer // (2 * n_window)` chunks
(8 in the released model). Then `ln_post`, `proj1`, GELU, `proj2` write decoder embeddings; there is no pooling.

Here chunks, then windows, are batches with their padding keys masked (the same computation). Hooks::

    hook_mel          [clips, mels, frames]
    hook_conv_out     [chunks, chunk_pos, d_audio]    after conv_out, before positions (chunks holding a valid frame)
    blocks.{L}.*      [windows, window_pos, ...]      the other families' encoder block hooks
    hook_pooled       [clips, tokens, d_audio]        windows joined, before ln_post (no pooling: the name is the
                                                      other encoders' for the same place)
    hook_audio_embeds [clips, tokens, d_model]        what is spliced into the decoder
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from lens_audio.model.audio_encoder import EncoderBlock, LayerNorm
from lens_audio.model.config import AudioEncoderConfig
from lens_audio.model.omni_audio import WindowedEncoderHooks, cut_into_windows, sinusoids, valid_frames


def conv_stack_frames(frames: Int[Tensor, "..."] | int) -> Int[Tensor, "..."] | int:
    """Rows after three stride-2 convolutions (kernel 3, padding 1) of `frames` mel frames (a tensor or an int)."""
    for _ in range(3):
        frames = (frames - 1) // 2 + 1
    return frames


def qwen3_audio_tokens(valid_frames: Int[Tensor, " clips"], window_frames: int) -> Int[Tensor, " clips"]:
    """Audio tokens of a clip: its whole chunks' rows plus its last chunk's (transformers'
    `_get_feat_extract_output_lengths`, which writes 13 for a released chunk's rows)."""
    rest = valid_frames % window_frames
    return torch.where(rest > 0, conv_stack_frames(rest), 0) + (valid_frames // window_frames) * conv_stack_frames(
        window_frames)


class Qwen3OmniAudioEncoder(WindowedEncoderHooks):
    """Mel features -> projected audio embeddings, one row of embeddings per clip (see the module docstring)."""

    def __init__(self, acfg: AudioEncoderConfig, d_out: int, n_window: int, n_window_infer: int,
                 downsample_hidden: int, implementation: str = "auto") -> None:
        super().__init__()
        if n_window_infer % (2 * n_window):
            raise ValueError(f"n_window_infer ({n_window_infer}) must be a multiple of 2 * n_window ({2 * n_window}).")
        self.cfg, self.window_frames, self.ratio = acfg, 2 * n_window, n_window_infer // (2 * n_window)
        c = downsample_hidden
        self.conv2d1 = nn.Conv2d(1, c, 3, 2, padding=1)
        self.conv2d2 = nn.Conv2d(c, c, 3, 2, padding=1)
        self.conv2d3 = nn.Conv2d(c, c, 3, 2, padding=1)
        self.conv_out = nn.Linear(c * conv_stack_frames(acfg.n_mels), acfg.d_model, bias=False)
        self.blocks = nn.ModuleList(EncoderBlock(acfg, implementation) for _ in range(acfg.n_layers))
        for block in self.blocks:  # Qwen3-Omni's encoder keys have a bias (Whisper's do not)
            block.attn.k_proj = nn.Linear(acfg.d_model, acfg.d_model, bias=True)
        self.ln_post = LayerNorm(acfg.d_model)
        self.proj1 = nn.Linear(acfg.d_model, acfg.d_model)
        self.proj2 = nn.Linear(acfg.d_model, d_out)

    def forward(
        self,
        input_features: Float[Tensor, "clips mels frames"],
        feature_attention_mask: Int[Tensor, "clips frames"] | None = None,
    ) -> tuple[Float[Tensor, "clips tokens d_model"], Int[Tensor, " clips"]]:
        clips, _, frames = input_features.shape
        window, device = self.window_frames, input_features.device
        valid = valid_frames(feature_attention_mask, clips, frames, device)
        x = self.hook_mel(input_features.to(self.conv2d1.weight.dtype))
        n_chunks = -(-frames // window)
        n_chunks += -n_chunks % self.ratio  # whole attention windows of `ratio` chunks
        chunks, lengths, used = cut_into_windows(x, valid, window, n_chunks)
        h = chunks[:, None]
        for conv in (self.conv2d1, self.conv2d2, self.conv2d3):
            h = F.gelu(conv(h))
        b, c, f, t = h.shape
        h = self.hook_conv_out(self.conv_out(h.permute(0, 3, 1, 2).reshape(b, t, c * f)))
        h = h + sinusoids(t, h.shape[-1], device).to(h.dtype)
        # attention windows: `ratio` consecutive chunks of a clip; valid rows are a prefix of each window
        grid = h.new_zeros(clips, n_chunks, t, h.shape[-1])
        grid[used] = h
        rows = torch.where(lengths > 0, conv_stack_frames(lengths), 0)  # [clips, n_chunks]
        windows = grid.reshape(clips * (n_chunks // self.ratio), self.ratio * t, -1)
        n_valid = rows.reshape(-1, self.ratio).sum(-1)
        kept = n_valid > 0
        kept.view(clips, -1)[:, 0] = True
        key_valid = torch.arange(self.ratio * t, device=device)[None, :] < n_valid[kept].clamp(min=1)[:, None]
        allowed = None if bool(key_valid.all()) else key_valid[:, None, None, :]
        resid = windows[kept]
        for block in self.blocks:
            resid = block(resid, allowed)
        joined = windows.new_zeros(windows.shape)
        joined[kept] = resid
        joined = self.hook_pooled(joined.reshape(clips, n_chunks * t, -1))
        embeds = self.hook_audio_embeds(self.proj2(F.gelu(self.proj1(self.ln_post(joined)))))
        n_tokens = qwen3_audio_tokens(valid, window)
        return embeds[:, : int(n_tokens.max())], n_tokens
