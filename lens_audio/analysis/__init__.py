"""Analyses over a model and a batch: listening signal, specialist heads, steering."""

from lens_audio.analysis.heads import HeadCorrelation, correlate_heads
from lens_audio.analysis.listening import ListeningSignal, listening_signal
from lens_audio.analysis.steering import FixedDirection, adaptive_direction, layers_of, steer, steering_hooks

__all__ = [
    "FixedDirection", "HeadCorrelation", "ListeningSignal", "adaptive_direction", "correlate_heads",
    "layers_of", "listening_signal", "steer", "steering_hooks",
]
