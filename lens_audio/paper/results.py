"""Typed results of the experiment (`ExperimentResult` and its parts), each with to_json/from_json; a scored run
(`RunResult`) lives with the harness (`lens_audio.benchmark.run_result`).

The experiment hands these objects to the CLI, the figures and the report in memory; JSON is
for people and for `--json`, run files (JSON lines) only for resuming.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lens_audio.analysis.final_position import AudioArrival
from lens_audio.analysis.heads import HeadCorrelation
from lens_audio.analysis.statistics import ControlDistribution, MaxRNull, PairedComparison, Validity, nan_list
from lens_audio.analysis.validity import ValidityControls
from lens_audio.benchmark.conflict import ConflictMeasures
from lens_audio.benchmark.manifest import RunManifest
from lens_audio.benchmark.report import BREAKDOWNS, breakdown_order
from lens_audio.benchmark.run_result import RunResult
from lens_audio.files import write_atomically
from lens_audio.paper.profile import ExperimentProfile
from lens_audio.paper.rival_results import RivalComparison


def head_label(head: Sequence[int]) -> str:
    return f"L{head[0]}H{head[1]}"


@dataclass
class HeadSelection:
    """Calibration: each head's r (bootstrap and Fisher-z CIs), the max-|r| permutation null, the specialists and
    control."""

    correlation: HeadCorrelation
    null: MaxRNull
    specialists: list[tuple[int, int]]
    control: list[
        tuple[int, int]
    ]  # the seeded single draw (the paper's control); the distribution is in ExperimentResult
    reference_mass: (
        float  # specialists' mean final-token audio mass over correctly answered calibration items (the gate's m0)
    )
    n_errors: int
    rule: str = "r"  # the profile's selection_rule that ranked the heads
    scores: np.ndarray | None = None  # [layer, head] the rule's score (None for "r": `correlation.r`)

    def describe(self, head: Sequence[int]) -> dict[str, Any]:
        layer, index = head
        c = self.correlation
        fisher_low, fisher_high = c.fisher_ci()
        return {
            "layer": layer,
            "head": index,
            "r": float(c.r[layer, index]),
            "p": float(c.p_value[layer, index]),
            "ci": [float(c.ci_low[layer, index]), float(c.ci_high[layer, index])],
            "fisher_ci": [float(fisher_low[layer, index]), float(fisher_high[layer, index])],
            "p_adjusted": float(self.null.p_adjusted[layer, index]),
            **({} if self.scores is None else {"score": float(self.scores[layer, index])}),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "correlation": self.correlation.to_json(),
            "null": self.null.to_json(),
            "specialists": [list(h) for h in self.specialists],
            "control": [list(h) for h in self.control],
            "reference_mass": self.reference_mass,
            "n_errors": self.n_errors,
            "rule": self.rule,
            "scores": None if self.scores is None else nan_list(self.scores),
            "specialist_details": [self.describe(h) for h in self.specialists],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HeadSelection":
        return cls(
            HeadCorrelation.from_json(data["correlation"]),
            MaxRNull.from_json(data["null"]),
            [tuple(h) for h in data["specialists"]],
            [tuple(h) for h in data["control"]],
            data["reference_mass"],
            data["n_errors"],
            data.get("rule", "r"),
            None if data.get("scores") is None else np.array(data["scores"], dtype=float),
        )


def accuracy_rows(tables: dict[str, Any]) -> list[tuple[str, str, str]]:
    """`(table, key, label)` of each row the text table and the report show, from one run's test tables: the pooled
    total, MMAU's breakdowns (task, difficulty, sub-category) where the items have two or more values and the groups
    are not another breakdown's renamed (the workshop's sub-categories are its hint conditions), then the hint
    conditions and hint by task where hints exist."""
    def same_groups(groups: dict[str, Any]) -> tuple:  # a breakdown that only renames another's groups
        return tuple(sorted((g["n"], g["accuracy"]) for g in groups.values()))

    shown = {same_groups(tables["hint"])} if "hint" in tables else set()
    rows = [("total", "total", "total")]
    for name in BREAKDOWNS:
        groups = tables.get(name, {})
        repeats = len(groups) < 2 or same_groups(groups) in shown  # the total, or the hint conditions, again
        if name == "task" or not repeats:
            keys = sorted(groups, key=breakdown_order)
            rows += [(name, str(k), str(k) if name == "task" else f"{name}: {k}") for k in keys]
            shown.add(same_groups(groups))
    if "hint" in tables:
        rows += [("hint", k, k) for k in tables["hint"]]
        rows += [("hint_by_task", k, k) for k in tables.get("hint_by_task", {})]
    return rows


def accuracy_cell(tables: dict[str, Any], table: str, key: str) -> dict[str, Any]:
    """One row's accuracy entry of one run's test tables (see `accuracy_rows`)."""
    return tables["total"] if table == "total" else tables[table][key]


def best_beta(accuracy_by_beta: dict[float, dict[str, Any]]) -> float:
    """The beta of highest accuracy; a tie goes to the smaller beta (the gentler intervention)."""
    return max(accuracy_by_beta, key=lambda beta: (accuracy_by_beta[beta]["accuracy"], -beta))


@dataclass
class BetaSweep:
    """Dev accuracy (with CI) of the baseline and of steering at each beta; the best beta (ties: smaller)."""

    baseline: dict[str, Any]
    steered_by_beta: dict[float, dict[str, Any]]
    best_beta: float

    def to_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "steered_by_beta": {str(b): v for b, v in self.steered_by_beta.items()},
            "best_beta": self.best_beta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BetaSweep":
        return cls(data["baseline"], {float(b): v for b, v in data["steered_by_beta"].items()}, data["best_beta"])


@dataclass
class LayerSpread:
    """Dev accuracy of steering from each single layer (on the focus items): can head selection matter here at all?"""

    items: str
    beta: float
    accuracy_by_layer: dict[int, float]

    @property
    def spread(self) -> float:
        return max(self.accuracy_by_layer.values()) - min(self.accuracy_by_layer.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "beta": self.beta,
            "accuracy_by_layer": {str(k): v for k, v in self.accuracy_by_layer.items()},
            "spread": self.spread,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LayerSpread":
        return cls(data["items"], data["beta"], {int(k): v for k, v in data["accuracy_by_layer"].items()})


@dataclass
class ExperimentResult:
    """The experiment, end to end: settings, heads, dev sweep, test tables, paired statistics and controls."""

    model: str
    profile: ExperimentProfile
    head_selection: HeadSelection
    dev: BetaSweep
    test: dict[str, dict[str, Any]]  # run name -> accuracy tables (total, task, hint, ...)
    paired: dict[str, PairedComparison]  # e.g. "steered vs baseline (conflicting)"
    control: ControlDistribution | None = None
    layer_matched_control: ControlDistribution | None = None
    validity: dict[str, dict[str, Validity]] = field(
        default_factory=dict
    )  # split -> condition -> r of specialists' mass
    layer_spread: LayerSpread | None = None
    options: dict[str, dict[str, float]] = field(default_factory=dict)  # method option -> setting -> dev focus accuracy
    audio_mass: np.ndarray | None = None  # [layer, head] mean final-token audio mass on the test baseline
    notes: list[str] = field(default_factory=list)
    manifest: RunManifest | None = None  # what made it: model fingerprint, items' content, settings, versions
    validity_controls: dict[str, ValidityControls] = field(default_factory=dict)  # split -> is it listening?
    depth_matched_control: ControlDistribution | None = None  # draws from the layers the audio has reached
    beta_matched_control: ControlDistribution | None = None  # the random draws, each at its own dev-chosen beta
    audio_arrival: AudioArrival | None = None  # where the audio reaches the final position (calibration)
    conflict: dict[str, ConflictMeasures] = field(default_factory=dict)  # test run -> text dominance and flip rates
    rivals: RivalComparison | None = None  # `lens-audio rivals`' comparison saved in the run folder, if any

    @property
    def controls(self) -> dict[str, ControlDistribution]:
        """The random-head controls that were drawn, by kind (random, layer-matched, depth-matched, beta-matched)."""
        found = (self.control, self.layer_matched_control, self.depth_matched_control, self.beta_matched_control)
        return {c.kind: c for c in found if c is not None}

    @property
    def beta(self) -> float:
        return self.dev.best_beta

    @property
    def heads(self) -> HeadSelection:
        """Deprecated name of `head_selection` ("heads" elsewhere means a list of (layer, head) pairs)."""
        warnings.warn("ExperimentResult.heads is now head_selection.", DeprecationWarning, stacklevel=2)
        return self.head_selection

    def to_json(self) -> dict[str, Any]:
        optional = lambda value: None if value is None else value.to_json()
        return {
            "model": self.model,
            "profile": self.profile.to_json(),
            "head_selection": self.head_selection.to_json(),
            "dev": self.dev.to_json(),
            "test": self.test,
            "paired": {k: v.to_json() for k, v in self.paired.items()},
            "control": optional(self.control),
            "layer_matched_control": optional(self.layer_matched_control),
            "validity": {s: {c: v.to_json() for c, v in d.items()} for s, d in self.validity.items()},
            "layer_spread": optional(self.layer_spread),
            "options": self.options,
            "audio_mass": None if self.audio_mass is None else nan_list(self.audio_mass),
            "notes": self.notes,
            "manifest": optional(self.manifest),
            "validity_controls": {s: v.to_json() for s, v in self.validity_controls.items()},
            "depth_matched_control": optional(self.depth_matched_control),
            "beta_matched_control": optional(self.beta_matched_control),
            "audio_arrival": optional(self.audio_arrival),
            "conflict": {run: m.to_json() for run, m in self.conflict.items()},
            "rivals": optional(self.rivals),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ExperimentResult":
        maybe = lambda kind, value: None if value is None else kind.from_json(value)
        return cls(
            data["model"],
            ExperimentProfile.from_json(data["profile"]),
            HeadSelection.from_json(data["head_selection"] if "head_selection" in data else data["heads"]),
            BetaSweep.from_json(data["dev"]),
            data["test"],
            {k: PairedComparison.from_json(v) for k, v in data["paired"].items()},
            maybe(ControlDistribution, data.get("control")),
            maybe(ControlDistribution, data.get("layer_matched_control")),
            {s: {c: Validity.from_json(v) for c, v in d.items()} for s, d in data.get("validity", {}).items()},
            maybe(LayerSpread, data.get("layer_spread")),
            data.get("options", {}),
            None if data.get("audio_mass") is None else np.array(data["audio_mass"], dtype=float),
            data.get("notes", []),
            manifest=maybe(RunManifest, data.get("manifest")),
            validity_controls={s: ValidityControls.from_json(v) for s, v in data.get("validity_controls", {}).items()},
            depth_matched_control=maybe(ControlDistribution, data.get("depth_matched_control")),
            beta_matched_control=maybe(ControlDistribution, data.get("beta_matched_control")),
            audio_arrival=maybe(AudioArrival, data.get("audio_arrival")),
            conflict={run: ConflictMeasures.from_json(m) for run, m in data.get("conflict", {}).items()},
            rivals=maybe(RivalComparison, data.get("rivals")),
        )

    def save(self, path: str | Path) -> None:
        write_atomically(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ExperimentResult":
        return cls.from_json(json.loads(Path(path).read_text()))


__all__ = ["BetaSweep", "ExperimentResult", "HeadSelection", "LayerSpread", "RunResult", "head_label"]
