"""Audio-minus-silence steering: the one direction, the push, and the one-pass path.

- `sources`: what each source reads (the residual at layers, or heads' outputs) and the one formula combining the
  audio and silence reads; the signal gate (`SignalGate`, `gated_beta`).
- `direction`: the paper's adaptive direction (audio run minus silence twin at chosen layers, final position),
  its head-output variant, either gated (`gated_direction`), `steer` / `steered_generate` and a saved
  `FixedDirection`.
- `push`: `beta * direction` added at a hook point, refused before it overflows.
- `steered_pass`: direction and steered rows from one batched forward (`steered_logits`, `steered_prefill`).
- `silence_prefix` / `silence_cache`: the silence twin's residuals from its audio prefix, computed once and kept.
"""

from lens_audio.analysis.steering.direction import (
    AdaptiveSteering,
    FixedDirection,
    adaptive_direction,
    adaptive_steering,
    final_residuals,
    gated_direction,
    head_output_direction,
    layers_of,
    steer,
    steered_generate,
)
from lens_audio.analysis.steering.push import check_beta, checked_push, steering_hooks
from lens_audio.analysis.steering.silence_cache import SilencePrefixCache, silence_prefix_cache
from lens_audio.analysis.steering.sources import SignalGate, gated_beta
from lens_audio.analysis.steering.steered_pass import SteeredLogits, SteeredPrefill, steered_logits, steered_prefill

__all__ = [
    "AdaptiveSteering",
    "FixedDirection",
    "SignalGate",
    "SilencePrefixCache",
    "SteeredLogits",
    "SteeredPrefill",
    "adaptive_direction",
    "adaptive_steering",
    "check_beta",
    "checked_push",
    "final_residuals",
    "gated_beta",
    "gated_direction",
    "head_output_direction",
    "layers_of",
    "silence_prefix_cache",
    "steer",
    "steered_generate",
    "steered_logits",
    "steered_prefill",
    "steering_hooks",
]
