"""Analyses over a model and a batch: listening signal, specialist heads, steering, patching (also of the final
position, layer by layer), linear probes, ablation, logit lens."""

from lens_audio.analysis.ablation import AblationScan, ablate_heads, cumulative_ablation, scan_heads
from lens_audio.analysis.final_position import (
    AudioArrival,
    arrival_layer,
    best_options,
    final_resid_logits,
    final_resid_patch_logits,
    final_state_hooks,
    final_states_and_listening,
    restore_by_layer,
)
from lens_audio.analysis.head_mask import HeadMaskTraining, head_mask_hooks, option_loss, train_head_mask
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
from lens_audio.analysis.probes import L2_GRID, answer_probe, fit_probe, grouped_folds, probe_accuracy
from lens_audio.analysis.statistics import control_distribution, mcnemar, random_head_draws
from lens_audio.analysis.steering import (
    AdaptiveSteering,
    FixedDirection,
    SteeredLogits,
    adaptive_direction,
    adaptive_steering,
    layers_of,
    silence_prefix_cache,
    steer,
    steered_generate,
    steered_logits,
    steering_hooks,
)

__all__ = [
    "AblationScan",
    "AudioArrival",
    "AdaptiveSteering",
    "Attribution",
    "BoundAudioModel",
    "FixedDirection",
    "L2_GRID",
    "HeadCorrelation",
    "HeadMaskTraining",
    "ListeningSignal",
    "LogitLens",
    "SteeredLogits",
    "adaptive_direction",
    "answer_probe",
    "arrival_layer",
    "adaptive_steering",
    "ablate_heads",
    "attribution_patching",
    "head_mask_hooks",
    "option_loss",
    "train_head_mask",
    "best_options",
    "correlate_heads",
    "control_distribution",
    "cumulative_ablation",
    "final_resid_logits",
    "final_resid_patch_logits",
    "final_state_hooks",
    "final_states_and_listening",
    "restore_by_layer",
    "fit_probe",
    "grouped_folds",
    "mcnemar",
    "random_head_draws",
    "layers_of",
    "listening_signal",
    "logit_lens",
    "logit_lens_over_audio",
    "normalized_logit_diff",
    "patch_heads",
    "patch_residual_by_position",
    "probe_accuracy",
    "scan_heads",
    "silence_prefix_cache",
    "steer",
    "steered_generate",
    "steered_logits",
    "steering_hooks",
]
