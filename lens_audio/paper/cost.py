"""What the experiment will cost, said before the expensive stages run, and a budget that refuses a plan too large.

The unit is the *item pass*: one forward of one item's prompt (a steered item costs two, its audio and its silence
twin; choice scoring over options of several tokens adds one forward per option slot, not counted here). The plan is
made after head selection (the calibration run: the draws exclude the specialists), from the same decisions the
stages read (`FastSteering.applies`, the seeded draws of `head_controls`), so it counts the runs the experiment
makes: on the fast path the control's draws cost nothing beyond one audio and one silence pass per item; off it,
each distinct layer set among the draws is one steered run over the test split, and the layer spread one per layer.

`lens-audio experiment --budget N` refuses a plan above N item passes before those stages run, naming what lowers
it (fewer draws, scoring that allows the fast path); runs already on disk cost nothing and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lens_audio.paper.fast_steering import FastSteering

if TYPE_CHECKING:
    from lens_audio.paper.experiment import Experiment

STEERED = 2  # a steered item: its audio and its silence twin


@dataclass(frozen=True)
class StageCost:
    """One stage's runs over `items` items each, at `passes` item passes per item."""

    stage: str
    runs: int
    items: int
    passes: int = 1
    why: str = ""

    @property
    def item_passes(self) -> int:
        return self.runs * self.items * self.passes

    def describe(self) -> str:
        per = f" x {self.passes} passes" if self.passes > 1 else ""
        return (f"  {self.stage:34s} {self.runs:5d} run{'s' * (self.runs != 1)} x {self.items} items{per} = "
                f"{self.item_passes:,} item passes" + (f" ({self.why})" if self.why else ""))


@dataclass(frozen=True)
class CostPlan:
    """The experiment's stages and their cost in item passes, before they run (`describe`, `check`)."""

    stages: tuple[StageCost, ...]
    fast: bool

    @property
    def total(self) -> int:
        return sum(s.item_passes for s in self.stages)

    def describe(self) -> str:
        path = "the fast path" if self.fast else "no fast path (options of several tokens, or generation)"
        return "\n".join([f"cost plan ({path}; runs already on disk are reused, not recomputed):",
                          *(s.describe() for s in self.stages), f"  {'total':34s} {self.total:,} item passes"])

    def check(self, budget: int | None) -> None:
        """Refuse (ValueError) a plan over `budget` item passes, naming what lowers it."""
        if budget is None or self.total <= budget:
            return
        largest = max(self.stages, key=lambda s: s.item_passes)
        cheaper = ["--draws N (fewer random-head draws; the control's percentile then moves in steps of 100/N, and "
                   "its power statement says what the items can still detect)"]
        if not self.fast:
            cheaper.append("--choice-scoring first_token with options that differ in their first token, or options "
                           "of one token, which allow the fast path (one audio and one silence pass per item for every "
                           "draw)")
        raise ValueError(f"the plan needs {self.total:,} item passes, over --budget {budget:,} (the largest stage: "
                         f"{largest.stage}, {largest.item_passes:,}); lower it with " + "; or ".join(cheaper) + ".")


def cost_plan(experiment: "Experiment") -> CostPlan:
    """The plan of `experiment.run_all()` from its profile, splits and (after calibration) its draws."""
    from lens_audio.paper.head_controls import random_head_draws

    e, p = experiment, experiment.profile
    n = {split: len(e.split(split)) for split in ("calibration", "dev", "test")}
    fast = {split: FastSteering.applies(e.model, e.split(split), p.mode) for split in ("dev", "test")}
    n_layers, n_heads = e.model.cfg.n_layers, e.model.cfg.n_heads
    stages = [StageCost("calibration (listen)", 1, n["calibration"]),
              StageCost("dev baseline", 1, n["dev"]),
              StageCost("test baseline, specialists, seeded draw", 1, n["test"], 1 + 2 * STEERED)]
    if fast["dev"]:
        stages.append(StageCost("dev beta sweep", 1, n["dev"], STEERED, "one collection serves every beta"))
    else:
        stages.append(StageCost("dev beta sweep", len(p.betas), n["dev"], STEERED, "one steered run per beta"))
        stages.append(StageCost("layer spread (dev)", n_layers, n["dev"], STEERED, "one steered run per layer"))
    specialists = e.select_heads().specialists
    draws = random_head_draws(n_layers, n_heads, p.k_heads, p.n_random_draws, p.seed, exclude=specialists)
    own = frozenset(layer for layer, _ in specialists)
    layer_sets = {frozenset(layer for layer, _ in d) for d in draws} - {own}
    if fast["test"]:
        stages.append(StageCost("random-head controls", 1, n["test"], STEERED,
                                f"{len(draws)} draws per control from one collection"))
    else:
        stages.append(StageCost("random-head control", len(layer_sets), n["test"], STEERED,
                                f"{len(layer_sets)} distinct layer sets among {len(draws)} draws"))
        if p.depth_matched_control:
            stages.append(StageCost("depth-matched control (at most)", len(draws), n["test"], STEERED,
                                    "its layer sets are known after the arrival stage"))
    stages.append(StageCost("validity controls (test)", 1, n["test"], 3, "silence run and attribution"))
    if p.depth_matched_control:
        items = min(n["calibration"], p.arrival_items or n["calibration"])
        stages.append(StageCost("where the audio arrives", 1, items, 2 + n_layers, "patching each layer"))
    return CostPlan(tuple(stages), fast["dev"] and fast["test"])
