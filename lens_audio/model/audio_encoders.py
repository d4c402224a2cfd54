"""Which audio encoder a family uses, decided once from its config: the plain whole-clip one (`audio_encoder`), the
Qwen Omni thinkers' windowed one (`omni_audio`) or Music Flamingo's time-rotated one (`music_flamingo`).

A module of its own so that the variants can build on `audio_encoder` without it importing them back.
"""

from __future__ import annotations

from torch import nn

from lens_audio.model.audio_encoder import AudioEncoder
from lens_audio.model.config import AudioLMConfig
from lens_audio.model.music_flamingo import MusicFlamingoEncoder
from lens_audio.model.omni_audio import OmniAudioEncoder
from lens_audio.model.qwen3_omni_audio import Qwen3OmniAudioEncoder


def make_audio_encoder(cfg: AudioLMConfig) -> nn.Module:
    """The family's audio encoder: windowed (the Qwen Omni thinkers, `cfg.audio.window_frames`), with Music Flamingo's
    time rotation (`cfg.audio.time_rotary`), or the plain whole-clip one."""
    a = cfg.audio
    if a.conv2d_hidden is not None and a.window_frames is not None and a.n_window_infer is not None:
        return Qwen3OmniAudioEncoder(a, cfg.d_model, a.window_frames // 2, a.n_window_infer, a.conv2d_hidden,
                                     cfg.attn_implementation)  # the Qwen3-Omni-MoE thinker's (Conv2d front end)
    if cfg.audio.window_frames is not None:
        return OmniAudioEncoder(cfg)
    if cfg.audio.time_rotary is not None:
        return MusicFlamingoEncoder(cfg)
    return AudioEncoder(cfg)
