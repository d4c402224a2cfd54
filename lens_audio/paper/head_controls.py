"""Is it the heads or the depth? Where the audio arrives, and the random-head controls as distributions.

Specialists can beat random heads for two reasons that have nothing to do with *which* heads they are: their
layers sit where the audio's content has reached the final position (random heads, spread over every layer,
average in layers where the audio-minus-silence direction is still empty), and their beta was tuned on dev for
their direction (a random direction of another size gets the same fixed beta). Each control below removes one:

- **random** (the paper's control): `n_random_draws` seeded draws of `k_heads` heads, none a specialist, steered
  at the specialists' beta;
- **layer-matched**: each specialist swapped for another head of its layer. With the residual steering source the
  direction depends on the heads only through their layers, so such a draw *is* the specialists by construction:
  it is stated, not drawn (drawn for the head-output source);
- **depth-matched**: the draws' heads come only from the layers the audio has reached, `audio_arrival`'s
  `layers` (the first layer from which patching the final position's residual from the audio run into the
  silence run restores >= `arrival_share` of the audio's effect, to the last layer), measured on calibration.
  Chosen over matching the specialists' layer histogram because (1) under the residual source a
  histogram-matched draw is the specialists again (see above), and (2) a range read off the specialists' own
  layers would inherit their selection, while the arrival depth is measured without them. Where the arrival
  cannot be measured (options whose first tokens clash, or audio that changes no answer), the specialists' own
  depth range (lowest to highest layer) is used and said so;
- **beta-matched**: the random draws again, each at the beta its own dev sweep picks exactly as the specialists'
  was (the best pooled dev accuracy over the profile's betas, ties to the smaller), on the fast path. With a
  single candidate beta it is the random control. Without the fast path (generation, multi-token options) it
  would cost a real dev run per draw and beta: not drawn, and said so.

Each is a `ControlDistribution` (percentile, McNemar against its median draw, paired CI, smallest detectable
difference) on the test focus items. `Experiment.audio_arrival` and `Experiment.control_distributions` call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from lens_audio.analysis.final_position import AudioArrival, audio_arrival, restore_by_layer
from lens_audio.analysis.probes import answer_probe
from lens_audio.analysis.statistics import ControlDistribution, control_distribution, random_head_draws
from lens_audio.benchmark.parallel import sharded_map
from lens_audio.paper.controls import batches, cluster_of, distinct_first_tokens, skipped_note
from lens_audio.paper.results import best_beta

if TYPE_CHECKING:
    from lens_audio.paper.experiment import Experiment

Heads = Sequence[tuple[int, int]]
# the arrival probe's one penalty: a nested choice among several (the acceptance checks') costs ten fits per fold
# and point, hours on a 7B model's width on a CPU; the probe is read beside the patching, which sets the range
ARRIVAL_PROBE_L2 = 0.1


class Controls(NamedTuple):
    """The random-head controls at the specialists' beta (None: not drawn, `notes` say why)."""

    random: ControlDistribution
    layer_matched: ControlDistribution | None
    depth_matched: ControlDistribution | None
    beta_matched: ControlDistribution | None
    notes: list[str]


def even_rows(n: int, limit: int | None) -> list[int]:
    """`limit` of `range(n)` spread evenly (the middle of each of `limit` equal steps); all when `limit` is None."""
    if limit is None or limit >= n:
        return list(range(n))
    return [int((j + 0.5) * n / limit) for j in range(limit)]


def arrival_stage(experiment: "Experiment", split: str = "calibration") -> AudioArrival:
    """Where the audio's content reaches the final prompt position, on `split`'s no-hint items (all items when none
    has a hint condition "none", named by the condition they share, e.g. "conflicting", where they share one; at
    most `arrival_items` of them, spread evenly): the patching restore by layer (`analysis.final_position.
    restore_by_layer`, options scored by their first token) and the linear probe of the answer's class at every point
    (`analysis.probes.answer_probe`, folds grouped by clip, penalty `ARRIVAL_PROBE_L2`)."""

    p, items = experiment.profile, experiment.split(split)
    rows = [i for i in items if i.get("hint") == "none"]
    hints = {i.get("hint") for i in items}
    shared = next(iter(hints)) if len(hints) == 1 and None not in hints else None  # e.g. calibration: conflicting
    name = "no-hint" if rows else shared or "all"
    rows = rows or items
    rows = [rows[i] for i in even_rows(len(rows), p.arrival_items)]
    notes = [] if name == "no-hint" else [
        f"no no-hint items: measured on all items{f' (every one {shared})' if shared else ''}; a hint in the text is "
        "in both runs, so the probe may read it"]
    if p.mode == "generate":
        notes.append("options scored by their first token at the final position (the run itself generates)")
    kept, skipped = distinct_first_tokens(experiment, rows)  # options sharing a first token: those items skipped
    if skipped:
        notes.append(skipped_note(skipped, len(rows), "arrival stage"))
        rows = [rows[i] for i in kept]
    parts = []
    try:
        if not rows:
            raise ValueError("every item's options share a first token")
        steps = tqdm(batches(experiment, rows), desc="where the audio arrives", total=-(-len(rows) // p.batch_size),
                     disable=not experiment.progress)
        for batch, options, answer in steps:
            parts.append(restore_by_layer(experiment.model, batch, options, answer))
    except ValueError as exc:  # no item left whose options have distinct first tokens
        return AudioArrival(split, name, len(rows), float("nan"), float("nan"), [], p.arrival_share,
                            notes=notes + [f"not measured: {exc}"])
    audio, silence, patched = (np.concatenate([part[k] for part in parts], axis=-1) for k in range(3))
    points = np.concatenate([part[3].numpy() for part in parts])
    probe, chance, note = answer_probe(points, [i["choices"] for i in rows], [i["answer"] for i in rows],
                                       [cluster_of(i) for i in rows], l2=ARRIVAL_PROBE_L2, seed=p.seed)
    return audio_arrival(split, name, audio, silence, patched, p.arrival_share, probe, chance,
                         notes + ([note] if note else []))


def depth_range(experiment: "Experiment") -> tuple[list[int], str]:
    """The layers the depth-matched draws come from, and one line saying which and why (see the module)."""
    arrival = experiment.audio_arrival()
    if arrival.layers:
        return arrival.layers, (
            f"heads drawn from layers {arrival.layers[0]}-{arrival.layers[-1]}, where the audio has arrived at the "
            f"final position (patching restores >= {arrival.threshold:.0%} of its effect from layer "
            f"{arrival.arrival} on, {arrival.split} {arrival.items} items)")
    layers = [layer for layer, _ in experiment.select_heads().specialists]
    span = list(range(min(layers), max(layers) + 1))
    return span, (f"heads drawn from the specialists' depth range, layers {span[0]}-{span[-1]} (where the audio "
                  "arrives was not measured: " + ("; ".join(arrival.notes) or "undefined") + ")")


def beta_of(correct_by_beta: dict[float, np.ndarray]) -> float:
    """The beta a dev sweep picks (`best_beta` on the pooled accuracy, rounded as `accuracy_with_ci` rounds it)."""
    return best_beta({b: {"accuracy": round(100 * float(np.mean(c)), 2)} for b, c in correct_by_beta.items()})


class _Scorer:
    """Steered test correctness of head draws at given betas (fast path where it applies), each direction once."""

    def __init__(self, experiment: "Experiment") -> None:
        self.experiment, self.fast, self.memo = experiment, experiment.fast("test"), {}

    def __call__(self, draws: Sequence[Heads], betas: Sequence[float]) -> np.ndarray:
        e = self.experiment
        keys = [(e.spec(d, b).key, b) for d, b in zip(draws, betas)]  # draws of the same direction: scored once
        new = list({key: (draw, b) for key, draw, b in zip(keys, draws, betas) if key not in self.memo}.items())
        if self.fast is not None:  # seconds per draw on a 7B model's vocabulary: dealt out to the launched processes
            scored = sharded_map(lambda pair: e.fast_correct(self.fast, "test", *pair[1]), new)
        else:  # real runs, each already split over the processes by item (`sharded_run`)
            scored = [e.steered_correct("test", *pair) for _, pair in new]
        self.memo.update({key: correct for (key, _), correct in zip(new, scored)})
        return np.stack([self.memo[key] for key in keys])


def control_distributions(experiment: "Experiment", beta: float) -> Controls:
    """The specialists at `beta` against each random-head control (see the module) on the test focus items."""

    e, p = experiment, experiment.profile
    selection = e.select_heads()
    baseline = e.listen("test")
    index, name = e.focus(baseline)
    clusters = [cluster_of(i) for i in np.array(e.split("test"), dtype=object)[index]]
    conditions = np.array(baseline.conditions)
    score, shape, notes = _Scorer(e), selection.correlation.shape, []
    mine = e.spec(selection.specialists, beta)
    # the specialists' test run is the one `Experiment.evaluate` made ("steered"): read back, never run again
    ours = e.steered_correct("test", selection.specialists, beta) if score.fast is not None else \
        e.spec_run("test", mine, "steered").correct
    score.memo[(mine.key, beta)] = ours  # a draw with the specialists' direction scores their run

    def distribution(draws, strengths, kind: str, **extra: Any) -> ControlDistribution:
        matrix = score(draws, strengths)
        result = control_distribution(ours[index], matrix[:, index], draws, clusters, name,
                                      kind == "layer-matched", p.seed, kind)
        for key, value in extra.items():
            setattr(result, key, value)
        result.by_condition = {
            c: {"specialists": float(100 * ours[conditions == c].mean()),
                **{q: float(np.quantile(100 * matrix[:, conditions == c].mean(1), v))
                   for q, v in (("median", 0.5), ("q05", 0.05), ("q95", 0.95))}}
            for c in sorted(set(conditions))
        }
        return result

    def draw(**restrict) -> list[list[tuple[int, int]]]:
        return random_head_draws(*shape, p.k_heads, p.n_random_draws, p.seed, exclude=selection.specialists,
                                 **restrict)

    plain_draws = draw()
    plain = distribution(plain_draws, [beta] * len(plain_draws), "random",
                         basis="heads drawn from every layer, at the specialists' beta")
    matched = depth = betas = None
    residual = p.steering_source == "residual"
    if p.layer_matched_control and residual:
        notes.append(matched_note())
    elif p.layer_matched_control:
        try:
            matched_draws = draw(layer_matched=selection.specialists)
            matched = distribution(matched_draws, [beta] * len(matched_draws), "layer-matched",
                                   basis="each specialist swapped for another head of its layer")
        except ValueError as exc:  # a specialists' layer has no other head to swap in
            notes.append(f"layer-matched draws not drawn: {exc}")
    if p.depth_matched_control:
        layers, basis = depth_range(e)
        if residual and len(layers) == 1 and {l for l, _ in selection.specialists} == set(layers):
            notes.append(f"depth-matched draws not drawn: {basis}, the specialists' only layer, so with the residual "
                         "steering source every draw has their direction and accuracy by construction")
        else:
            try:
                depth_draws = draw(layers=layers)
                depth = distribution(depth_draws, [beta] * len(depth_draws), "depth-matched", layers=layers,
                                     basis=basis)
            except ValueError as exc:  # too few heads in the range
                notes.append(f"depth-matched draws not drawn: {exc}")
    if p.beta_matched_control:
        dev = e.fast("dev")
        if dev is None or score.fast is None:
            notes.append("beta-matched draws not drawn: without the fast path (generation or multi-token options) "
                         "each draw's dev sweep is a real run per beta")
        else:
            swept: dict[str, float] = {}  # direction -> its dev-chosen beta (draws of one direction swept once)
            for d in plain_draws:
                key = e.spec(d, beta).key
                if key not in swept:
                    swept[key] = beta_of({b: e.fast_correct(dev, "dev", d, b) for b in p.betas})
            chosen = [swept[e.spec(d, beta).key] for d in plain_draws]
            betas = distribution(plain_draws, chosen, "beta-matched", betas=chosen, basis=(
                "the random draws, each at the beta its own dev sweep picks as the specialists' did "
                f"(best pooled dev accuracy over betas {list(p.betas)})"))
    return Controls(plain, matched, depth, betas, notes)


def matched_note() -> str:
    return (
        "layer-matched draws not drawn: with the residual steering source a draw of other heads in the specialists' "
        "layers has the specialists' direction, so its accuracy equals theirs by construction"
    )
