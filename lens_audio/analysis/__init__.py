"""Analyses over a model and a batch: listening signal, specialist heads, steering, patching, ablation, logit lens."""

from lens_audio.analysis.ablation import AblationScan, cumulative_ablation, scan_heads
from lens_audio.analysis.heads import HeadCorrelation, correlate_heads
from lens_audio.analysis.lens import LogitLens, logit_lens, logit_lens_over_audio
from lens_audio.analysis.listening import ListeningSignal, listening_signal
from lens_audio.analysis.patching import (
    Attribution,
    BoundAudioModel,
    attribution_patching,
    normalized_logit_diff,
    patch_heads,
    patch_residual_by_position,
)
from lens_audio.analysis.statistics import control_distribution, mcnemar, random_head_draws
from lens_audio.analysis.steering.direction import (
    FixedDirection,
    adaptive_direction,
    adaptive_steering,
    layers_of,
    steer,
    steered_generate,
    steering_hooks,
)
from lens_audio.analysis.steering.silence_cache import silence_prefix_cache
from lens_audio.analysis.steering.steered_pass import SteeredLogits, steered_logits

__all__ = [
    "AblationScan",
    "Attribution",
    "BoundAudioModel",
    "FixedDirection",
    "HeadCorrelation",
    "ListeningSignal",
    "LogitLens",
    "SteeredLogits",
    "adaptive_direction",
    "adaptive_steering",
    "attribution_patching",
    "correlate_heads",
    "control_distribution",
    "cumulative_ablation",
    "mcnemar",
    "random_head_draws",
    "layers_of",
    "listening_signal",
    "logit_lens",
    "logit_lens_over_audio",
    "normalized_logit_diff",
    "patch_heads",
    "patch_residual_by_position",
    "scan_heads",
    "silence_prefix_cache",
    "steer",
    "steered_generate",
    "steered_logits",
    "steering_hooks",
]
