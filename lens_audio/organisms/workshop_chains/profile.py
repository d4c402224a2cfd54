""""workshop-chains"' experiment profile, for its registered benchmark of direct questions
(`benchmark_writer.direct_chain_benchmark`).

The organisms' prompt and choice scoring (every option is one token, so the random-head controls take the fast
path), with the settings under which its card's numbers were measured spelled out rather than inherited: 200 random
draws per control (a percentile to the half point), the plain, layer-matched, depth-matched and beta-matched
controls, the arrival stage on 400 calibration items, and the hinted class as a validity stratum (hints naming one
class are followed more than others on this model: a confound the r-selected heads pick up).
"""

from lens_audio.organisms.evaluate import PROFILE as ORGANISMS_PROFILE

PROFILE = ORGANISMS_PROFILE.replace(
    n_random_draws=200,
    layer_matched_control=True,
    depth_matched_control=True,
    beta_matched_control=True,
    arrival_items=400,
    validity_strata=("hinted_choice",),
    focus_condition="conflicting",
    seed=0,
)
