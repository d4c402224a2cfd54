"""What the rival comparison (`paper.rivals`) found, as typed objects that travel: each method's result
(`RivalResult`), the comparison (`RivalComparison`: the table the command prints, the verdicts, JSON), and the rule
the verdicts follow (`VERDICT_RULE`, fixed before any run). The experiment's result carries the comparison saved in
its run folder (`ExperimentResult.rivals`), so `figures` shows it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lens_audio.analysis.statistics import ControlDistribution, PairedComparison
from lens_audio.benchmark.conflict import ConflictMeasures
from lens_audio.benchmark.manifest import DIGEST_KEY, ITEM_KEY

SAVED = "rivals.json"  # the comparison, in the experiment's run folder (`paper.rivals` writes it)


def paired_key(method: str, other: str, subset: str) -> str:
    """The name of a method's paired comparison with `other` on `subset`, e.g. "back-patching vs baseline
    (conflicting)": how `RivalResult.paired` is keyed."""
    return f"{method} vs {other} ({subset})"


def run_identity(records: Sequence[dict[str, Any]]) -> str:
    """What made a run's records, in 16 hex digits: each record's manifest digest (model fingerprint, prompt, mode,
    settings) and item digests (content), so a comparison knows the baseline it was made against."""
    seen = sorted({json.dumps([r.get(DIGEST_KEY), r.get(ITEM_KEY)], sort_keys=True) for r in records})
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:16]


@dataclass
class RivalResult:
    """One method: its dev sweep (setting -> dev focus accuracy), the chosen setting, its test tables, its text
    dominance measures, its cost and its paired comparisons."""

    method: str
    setting: str
    dev: dict[str, float]
    test: dict[str, Any]
    conflict: ConflictMeasures | None
    forwards: int
    paired: dict[str, PairedComparison]

    def versus(self, other: str, subset: str) -> PairedComparison | None:
        """The paired comparison with `other` ("baseline", "adaptive steering") on `subset` (the focus items, or
        "other"), if one was made."""
        return self.paired.get(paired_key(self.method, other, subset))

    def accuracies(self, conditions: Sequence[str]) -> list[str]:
        """Test accuracy (%) on all items ("all") and each hint condition of `conditions`; "n/a" where none."""
        found = [self.test["total"] if c == "all" else self.test.get("hint", {}).get(c) for c in conditions]
        return ["n/a" if not v or v.get("accuracy") is None else f"{v['accuracy']:.1f}" for v in found]

    def rate(self, name: str = "text_dominance") -> str:
        """One of `benchmark.conflict.RATES` (%, overall: ALME's text-dominance ratio on the conflicting items, the
        same-audio flip rate, the silence flip rate), or "n/a" where it was not measured."""
        value = self.conflict.overall.get(name) if self.conflict else None
        return "n/a" if not value or value.get("accuracy") is None else f"{value['accuracy']:.1f}"

    def text_dominance(self) -> str:
        """ALME's text-dominance ratio (%) on the conflicting items, or "n/a"."""
        return self.rate("text_dominance")

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "setting": self.setting, "dev": self.dev, "test": self.test,
                "conflict": None if self.conflict is None else self.conflict.to_json(), "forwards": self.forwards,
                "paired": {k: v.to_json() for k, v in self.paired.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RivalResult":
        conflict = None if data.get("conflict") is None else ConflictMeasures.from_json(data["conflict"])
        return cls(data["method"], data["setting"], data["dev"], data["test"], conflict, data["forwards"],
                   {k: PairedComparison.from_json(v) for k, v in data["paired"].items()})


@dataclass
class RivalComparison:
    """Every method side by side on the test split (`describe`: the table the command prints)."""

    focus: str
    methods: list[RivalResult]
    notes: list[str] = field(default_factory=list)
    specialists: list[tuple[int, int]] = field(default_factory=list)  # the experiment's, which it was run for
    beta: float | None = None  # adaptive steering's dev-chosen beta
    baseline: str | None = None  # `run_identity` of the test baseline it was compared against
    # method -> its control distribution: attention scaling and the head mask against draws of as many random heads
    controls: dict[str, ControlDistribution] = field(default_factory=dict)

    def made_for(self, specialists, beta: float, baseline: str) -> bool:
        """Whether the comparison was run for these specialists, beta and test baseline (the same model, settings
        and items); else its experiment has changed."""
        same_heads = [tuple(h) for h in self.specialists] == [tuple(h) for h in specialists]
        return same_heads and self.beta == beta and self.baseline == baseline

    @property
    def conditions(self) -> list[str]:
        """The columns of accuracy: all items, then each hint condition the test items carry."""
        return ["all", *next(iter(self.methods)).test.get("hint", {})]

    def describe(self) -> str:
        width = max(len("setting"), *(len(m.setting) for m in self.methods))
        lines = [f"rival interventions on test (settings chosen on dev {self.focus} items; accuracy %):",
                 f"  {'method':38s} {'setting':{width}s} {'fwd':>3s} "
                 + " ".join(f"{c:>11s}" for c in self.conditions) + "  text-dominance"]
        for m in self.methods:
            lines.append(f"  {m.method:38s} {m.setting:{width}s} {m.forwards:3d} "
                         + " ".join(f"{cell:>11s}" for cell in m.accuracies(self.conditions))
                         + f"  {m.text_dominance()}")
        lines.append(f"paired on test {self.focus} items (exact McNemar, bootstrap CI clustered by clip):")
        for m in self.methods:
            lines += [f"  {name}: {v.describe()}" for name, v in m.paired.items()]
        lines.append(f"verdicts ({VERDICT_RULE}):")
        lines += [f"  {line}" for line in self.verdicts()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def verdicts(self) -> list[str]:
        """One line per comparison on the focus items: which method beats which, or that neither was shown to."""
        return [f"{m.method} {verdict(v)} {other}" for m in self.methods for other in ("baseline", "adaptive steering")
                for v in [m.versus(other, self.focus)] if v is not None]

    def markdown(self) -> str:
        """The comparison as a Markdown table (a model card's, a paper's): setting, cost, accuracy by condition, text
        dominance, and the paired differences (points, 95% CI) and verdicts on the focus items."""
        said = {"beats": "better", "is beaten by": "worse"}

        def paired(m: RivalResult, other: str, subset: str) -> str:
            v = m.versus(other, subset)
            if v is None:
                return "-"
            cell = f"{v.difference:+.1f} [{v.ci[0]:+.1f}, {v.ci[1]:+.1f}]"
            shown = said.get(verdict(v), "not shown to differ")
            return cell if subset == "other" else f"{cell}, p = {v.p_value:.2g}: {shown}"

        header = ["method", "setting", "fwd/item", *self.conditions, "text-dominance ratio", "same-audio flip",
                  f"vs baseline ({self.focus})", "vs baseline (other)", f"vs adaptive steering ({self.focus})"]
        rows = [[m.method, m.setting or "-", str(m.forwards), *m.accuracies(self.conditions), m.text_dominance(),
                 m.rate("same_audio_flip"),
                 paired(m, "baseline", self.focus), paired(m, "baseline", "other"),
                 paired(m, "adaptive steering", self.focus)] for m in self.methods]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])

    def to_json(self) -> dict[str, Any]:
        return {"focus": self.focus, "methods": [m.to_json() for m in self.methods], "notes": self.notes,
                "specialists": [list(h) for h in self.specialists], "beta": self.beta, "baseline": self.baseline,
                "controls": {k: v.to_json() for k, v in self.controls.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RivalComparison":
        return cls(data["focus"], [RivalResult.from_json(m) for m in data["methods"]], data.get("notes", []),
                   [tuple(h) for h in data.get("specialists", [])], data.get("beta"), data.get("baseline"),
                   {k: ControlDistribution.from_json(v) for k, v in data.get("controls", {}).items()})


VERDICT_RULE = "a beats b where the paired difference is positive, its 95% CI excludes 0 and McNemar p < 0.05"


def verdict(v: PairedComparison) -> str:
    """'beats', 'is beaten by' or 'is not shown to differ from' (`VERDICT_RULE`, fixed before any run)."""
    shown = v.p_value < 0.05 and (v.ci[0] > 0 or v.ci[1] < 0)
    if not shown:
        return "is not shown to differ from"
    return "beats" if v.difference > 0 else "is beaten by"


def saved_comparison(folder: str | Path, specialists: Sequence[tuple[int, int]], beta: float, baseline: str
                     ) -> tuple[RivalComparison | None, str | None]:
    """The comparison `lens-audio rivals` saved in the run folder `folder`, when it was run for these specialists,
    beta and test baseline (`run_identity`); else None, and a note when one is there but was made for another
    experiment or cannot be read."""
    path = Path(folder) / SAVED
    if not path.is_file():
        return None, None
    try:
        comparison = RivalComparison.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"{path} cannot be read ({exc}), so the report leaves it out; run `lens-audio rivals` again"
    if comparison.made_for(specialists, beta, baseline):
        return comparison, None
    return None, (f"{path} was run for other specialists, another beta or another test baseline (model, settings or "
                  "items) than this experiment's, so the report leaves it out; run `lens-audio rivals` with the same "
                  "flags to compare the rivals again")
