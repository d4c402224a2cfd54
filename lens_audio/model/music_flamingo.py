"""Music Flamingo: AudioFlamingo3 with a rotary time embedding (RoTE) on the encoder's output, before the projector.

transformers' `MusicFlamingoForConditionalGeneration` is AudioFlamingo3 (same Whisper-style encoder per 30 s window,
AvgPool(2), `ln_post`, Linear-GELU-Linear projector, Qwen2 decoder) plus one step: each window's rows are rotated,
in float64, by angles built from two axes, the window's index within its clip and the row's index within the window,
each modulated by the row's absolute time in seconds (`audio_frame_step * 4` per row). Only the first
`2 * int(d_audio * partial_rotary_factor)` channels turn (pairs of adjacent channels, not halves); the rest pass
through. Which clip a window belongs to is read from the prompt, as transformers does: each clip is one run of audio
placeholders (`<|sound_bos|><sound>...<sound><|sound_eos|>`) and windows fill the runs in order.

`audio.hook_time_rotated` [windows, tokens, d_audio] holds the rotated rows, between `ln_post` and the projector;
the other `audio.` hooks are AudioFlamingo3's.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.inputs.frames import n_audio_tokens
from lens_audio.model.audio_encoder import AudioEncoder
from lens_audio.model.config import AudioLMConfig
from lens_audio.model.hook_point import HookPoint


class MusicFlamingoEncoder(AudioEncoder):
    """AudioFlamingo3's encoder with Music Flamingo's time rotation before the projector."""

    needs_input_ids = True

    def __init__(self, cfg: AudioLMConfig) -> None:
        super().__init__(cfg)
        self.audio_token_id = cfg.audio_token_id
        self.hook_time_rotated = HookPoint()

    def before_projector(
        self, rows: Float[Tensor, "windows tokens d_audio"], valid_frames: Int[Tensor, " windows"],
        input_ids: Int[Tensor, "batch pos"] | None,
    ) -> Float[Tensor, "windows tokens d_audio"]:
        if input_ids is None:
            raise ValueError("Music Flamingo's time rotation needs the prompt's input_ids (which clip each window is "
                             "of); pass them with input_features.")
        timestamps = window_timestamps(input_ids.to(rows.device), self.audio_token_id, n_audio_tokens(valid_frames),
                                       rows.shape[1], self.cfg.time_rotary[2])
        cos, sin = time_rotary_cos_sin(timestamps, rows.shape[-1], *self.cfg.time_rotary)
        return self.hook_time_rotated(rotate_by_time(rows, cos, sin))


def window_timestamps(
    input_ids: Int[Tensor, "batch pos"], audio_token_id: int, tokens_per_window: Int[Tensor, " windows"],
    n_rows: int, frame_step: float,
) -> Float[Tensor, "windows rows"]:
    """Each row's time in seconds from the start of its clip, as transformers' `_build_audio_timestamps`: a window's
    clip is the run of audio placeholders its first token falls in."""
    is_audio = torch.nn.functional.pad((input_ids == audio_token_id).int(), (1, 1))
    edges = torch.diff(is_audio, dim=1)
    run_lengths = torch.where(edges == -1)[1] - torch.where(edges == 1)[1]
    if int(run_lengths.sum()) != int(tokens_per_window.sum()):
        raise ValueError(f"the prompt holds {int(run_lengths.sum())} audio placeholders but the windows give "
                         f"{int(tokens_per_window.sum())} audio tokens; build inputs with the model's processor.")
    step = frame_step * 4  # one row per 4 mel frames (conv stride 2, AvgPool 2)
    offsets = torch.arange(n_rows, device=input_ids.device, dtype=torch.float32) * step
    starts = torch.cat([tokens_per_window.new_zeros(1), tokens_per_window.cumsum(0)[:-1]])
    clip = torch.searchsorted(run_lengths.cumsum(0), starts, right=True)
    first_window = torch.searchsorted(clip, torch.arange(len(run_lengths), device=clip.device))
    window_index = torch.arange(len(tokens_per_window), device=clip.device) - first_window[clip]
    return window_index[:, None] * n_rows * step + offsets


def time_rotary_cos_sin(
    timestamps: Float[Tensor, "windows rows"], d_audio: int, theta: float, partial_factor: float, frame_step: float
) -> tuple[Float[Tensor, "windows rows rot"], Float[Tensor, "windows rows rot"]]:
    """Angles of the two axes (window within clip, row within window), each scaled by the row's time (float32, as
    transformers' `MusicFlamingoRotaryEmbedding`)."""
    dim = int(d_audio * partial_factor)
    device = timestamps.device
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))
    n_rows = timestamps.shape[1]
    positions = torch.arange(int(theta), device=device, dtype=torch.float32)[:n_rows] / theta * (2 * math.pi)
    row_freqs = torch.repeat_interleave(positions[:, None] * inv_freq, 2, dim=-1)
    window_positions = torch.round(timestamps[:, 0] / (frame_step * 4 * n_rows)) / theta
    window_freqs = torch.repeat_interleave(window_positions[:, None] * inv_freq, 2, dim=-1)
    window_freqs, row_freqs = torch.broadcast_tensors(window_freqs[:, None, :], row_freqs[None])
    freqs = torch.cat((window_freqs, row_freqs), dim=-1) * (-timestamps * 2 * math.pi)[..., None]
    return freqs.cos(), freqs.sin()


def rotate_by_time(
    rows: Float[Tensor, "windows rows d_audio"], cos: Tensor, sin: Tensor
) -> Float[Tensor, "windows rows d_audio"]:
    """Turn adjacent channel pairs of the first `cos.shape[-1]` channels (in float64, as transformers; float32 on
    MPS), the rest unchanged."""
    wide = torch.float32 if rows.device.type == "mps" else torch.float64
    x = rows.to(wide)
    n = cos.shape[-1]
    turned, rest = x[..., :n], x[..., n:]
    pairs = turned.reshape(*turned.shape[:-1], -1, 2)
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat((turned * cos.to(wide) + swapped * sin.to(wide), rest), dim=-1).to(rows.dtype)
