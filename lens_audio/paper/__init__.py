"""The paper's experiment (Glazer, Aharon, Fetaya 2026) as one typed object: an `ExperimentProfile` in, an
`Experiment` whose stages are calibration (specialist heads), dev (beta, options, layer spread), test (paired
statistics, the random-head control distribution beside the depth-matched and beta-matched ones that say whether it
is the heads or the depth, `head_controls`, with where the audio arrives) and the validity controls, an
`ExperimentResult` out. Steering
options are read in one place, `SteeringSpec` (hooks, one-pass generate/logits, fast path, manifest fields, run name).

    from lens_audio.paper import Experiment, profile_for
    result = Experiment(model, items, profile_for("workshop"), "runs/paper").run_all()
"""

from lens_audio.paper.experiment import Experiment, cluster_of
from lens_audio.paper.fast_steering import FastSteering
from lens_audio.paper.interventions import (
    AudioAttentionScale,
    BackPatch,
    ContrastiveCorrection,
    FixedSteering,
    HeadMask,
)
from lens_audio.paper.profile import (
    ExperimentProfile,
    ProfileFallbackWarning,
    fallback_note,
    profile_for,
    register_profile,
)
from lens_audio.paper.results import BetaSweep, ExperimentResult, HeadSelection, LayerSpread, head_label
from lens_audio.paper.rivals import RivalComparison, compare_rivals
from lens_audio.paper.spec import SteeringSpec
from lens_audio.paper.text import format_controls, format_table

__all__ = [
    "AudioAttentionScale",
    "BackPatch",
    "BetaSweep",
    "ContrastiveCorrection",
    "Experiment",
    "ExperimentProfile",
    "ExperimentResult",
    "FastSteering",
    "FixedSteering",
    "HeadMask",
    "HeadSelection",
    "LayerSpread",
    "ProfileFallbackWarning",
    "RivalComparison",
    "SteeringSpec",
    "cluster_of",
    "compare_rivals",
    "fallback_note",
    "format_controls",
    "format_table",
    "head_label",
    "profile_for",
    "register_profile",
]
