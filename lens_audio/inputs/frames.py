"""Lengths along the audio path: 16 kHz samples -> mel frames -> encoder conv frames -> audio tokens.

Qwen2-Audio's rule, shared by the input checks (a clip must give at least one audio token) and the audio
encoder (which masks conv frames past a clip's end and splices only its audio tokens). Works on Python ints
and on integer tensors alike.
"""

from __future__ import annotations

from jaxtyping import Int
from torch import Tensor


def mel_frames(n_samples: int, hop_length: int) -> int:
    """Mel frames of a clip of `n_samples` samples: one per started hop."""
    return -(-n_samples // hop_length)


def conv_frames(valid_frames: int | Int[Tensor, " clips"]) -> int | Int[Tensor, " clips"]:
    """Frames after the encoder's second convolution (kernel 3, padding 1, stride 2) from `valid_frames` mel frames."""
    return (valid_frames - 1) // 2 + 1


def n_audio_tokens(valid_frames: int | Int[Tensor, " clips"]) -> int | Int[Tensor, " clips"]:
    """Audio tokens produced from `valid_frames` mel frames (after the conv stride and the AvgPool1d(2) pooling)."""
    return (conv_frames(valid_frames) - 2) // 2 + 1
