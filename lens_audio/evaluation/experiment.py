"""The paper's experiment end to end: listening signals, specialist heads, beta sweep, steered test.

1. **Calibration**: baseline run with listening signals; Pearson r of each
   head's audio attention with correctness; the top-k heads are the audio
   specialists, and k random heads (seeded, specialists excluded) the control.
2. **Dev**: adaptive audio-minus-silence steering from the specialists' layers
   for each beta; the beta with the best pooled dev accuracy is kept (ties go
   to the smaller beta).
3. **Test**: baseline, steered and random-control with that beta.

Heads and beta are chosen on calibration and dev only, never on test. Every
run is a resumable JSON-lines file under `out_dir`, so an interrupted
experiment picks up where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from lens_audio.analysis.heads import HeadCorrelation, correlate_heads
from lens_audio.analysis.steering import adaptive_steering, layers_of
from lens_audio.evaluation.report import accuracy_with_ci, grouped_accuracy, mmau_report
from lens_audio.evaluation.runner import run_benchmark

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


@dataclass
class ExperimentSettings:
    template: str = "workshop"
    mode: str = "choice"
    k_heads: int = 4
    betas: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    seed: int = 0
    batch_size: int = 16
    max_new_tokens: int = 32
    splits: dict[str, str] = field(default_factory=lambda: {"calibration": "calibration", "dev": "dev", "test": "test"})


class Experiment:
    """The experiment's stages over one model, benchmark and output folder; each stage resumes from its files.

    Files in `out_dir`: `{split}-baseline.jsonl` (with listening signals), `head_correlation.json`,
    `dev-steered-beta{b}.jsonl`, `test-steered-beta{b}.jsonl`, `test-random-beta{b}.jsonl`, `results.json`.
    """

    def __init__(self, model: "HookedAudioLM", items: Sequence[dict[str, Any]], settings: ExperimentSettings, out_dir: str | Path, progress: bool = True) -> None:
        self.model, self.items, self.settings, self.progress = model, items, settings, progress
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)

    def split(self, name: str) -> list[dict[str, Any]]:
        rows = [i for i in self.items if i.get("split") == self.settings.splits[name]]
        if not rows:
            raise ValueError(f"the benchmark has no items with split {self.settings.splits[name]!r} (MMAU 'split' field) for the {name} stage.")
        return rows

    def run(self, rows: Sequence[dict[str, Any]], name: str, steering=None, listening: bool = False) -> list[dict[str, Any]]:
        s = self.settings
        return run_benchmark(self.model, rows, self.out / f"{name}.jsonl", template=s.template, mode=s.mode, steering=steering,
                             batch_size=s.batch_size, max_new_tokens=s.max_new_tokens, listening=listening, progress=self.progress, description=name)

    def listen(self, split: str = "calibration") -> list[dict[str, Any]]:
        """Baseline run of a split with every item's listening signal."""
        return self.run(self.split(split), f"{split}-baseline", listening=True)

    def select_heads(self) -> HeadCorrelation:
        """Correlate calibration listening signals with correctness; saved to head_correlation.json."""
        records = self.listen("calibration")
        heads = correlate_heads(np.array([r["listening"] for r in records]), np.array([r["correct"] for r in records]),
                                seed=self.settings.seed, model_name=self.model.cfg.model_name)
        heads.save(self.out / "head_correlation.json")
        return heads

    def heads(self) -> tuple[HeadCorrelation, list[tuple[int, int]], list[tuple[int, int]]]:
        """The saved correlation (computed if missing), the top-k specialists and the seeded random control."""
        path = self.out / "head_correlation.json"
        heads = HeadCorrelation.load(path) if path.exists() else self.select_heads()
        specialists = heads.top_k(self.settings.k_heads)
        return heads, specialists, heads.random_heads(self.settings.k_heads, seed=self.settings.seed, exclude=specialists)

    def sweep_beta(self) -> dict[str, Any]:
        """Dev accuracy of adaptive steering from the specialists' layers for each beta; the best (ties: smaller) is kept."""
        _, specialists, _ = self.heads()
        sweep = {beta: accuracy_with_ci([r["correct"] for r in self.run(self.split("dev"), f"dev-steered-beta{beta}", adaptive_steering(layers_of(specialists), beta))])
                 for beta in self.settings.betas}
        baseline = accuracy_with_ci([r["correct"] for r in self.listen("dev")])
        best = max(self.settings.betas, key=lambda b: (sweep[b]["accuracy"], -b))
        return {"baseline": baseline, "steered_by_beta": {str(b): v for b, v in sweep.items()}, "best_beta": best}

    def evaluate(self, beta: float) -> dict[str, Any]:
        """Test tables for the baseline, the specialists' steering and the random-head control at `beta`."""
        _, specialists, control = self.heads()
        test = self.split("test")
        runs = {
            "baseline": self.listen("test"),
            "steered": self.run(test, f"test-steered-beta{beta}", adaptive_steering(layers_of(specialists), beta)),
            "random_control": self.run(test, f"test-random-beta{beta}", adaptive_steering(layers_of(control), beta)),
        }
        return {name: _tables(records) for name, records in runs.items()}

    def run_all(self) -> dict[str, Any]:
        heads = self.select_heads()
        dev = self.sweep_beta()
        _, specialists, control = self.heads()
        result = {
            "settings": {**asdict(self.settings), "betas": list(self.settings.betas)},
            "model": self.model.cfg.model_name,
            "specialist_heads": [_describe(heads, h) for h in specialists],
            "specialist_layers": layers_of(specialists),
            "control_heads": [_describe(heads, h) for h in control],
            "control_layers": layers_of(control),
            "dev": dev,
            "test": self.evaluate(dev["best_beta"]),
        }
        (self.out / "results.json").write_text(json.dumps(result, indent=1))
        return result


def run_experiment(model: "HookedAudioLM", items: Sequence[dict[str, Any]], settings: ExperimentSettings, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """All stages: calibration heads, dev beta, test baseline / steered / random control."""
    return Experiment(model, items, settings, out_dir, progress).run_all()


def _describe(heads, head: tuple[int, int]) -> dict[str, Any]:
    layer, index = head
    return {"layer": layer, "head": index, "r": round(float(heads.r[layer, index]), 4), "p": float(heads.p_value[layer, index]),
            "ci": [round(float(heads.ci_low[layer, index]), 4), round(float(heads.ci_high[layer, index]), 4)]}


def _tables(records: list[dict[str, Any]]) -> dict[str, Any]:
    tables = mmau_report(records)
    if any("hint" in r for r in records):
        tables["hint"] = grouped_accuracy(records, lambda r: r.get("hint"))
        tables["hint_by_task"] = {f"{h}/{t}": v for (h, t), v in grouped_accuracy(records, lambda r: (r.get("hint"), r["task"])).items()}
    return tables


def format_table(result: dict[str, Any]) -> str:
    """A plain-text results table: rows are conditions, columns the runs (accuracy % [95% CI])."""
    runs = list(result["test"])
    first = result["test"][runs[0]]
    rows = [("total", "total")] + [("task", k) for k in first.get("task", {})]
    if "hint" in first:
        rows += [("hint", k) for k in first["hint"]] + [("hint_by_task", k) for k in first["hint_by_task"]]
    cell = lambda v: f"{v['accuracy']:6.2f} [{v['ci'][0]:.1f}, {v['ci'][1]:.1f}]"
    lines = [f"{'test split':24s}" + "".join(f"{name:>26s}" for name in runs)]
    for table, key in rows:
        values = [result["test"][name][table] if table == "total" else result["test"][name][table][key] for name in runs]
        lines.append(f"{key:24s}" + "".join(f"{cell(v):>26s}" for v in values))
    heads = ", ".join(f"L{h['layer']}H{h['head']} (r={h['r']:.2f})" for h in result["specialist_heads"])
    control = ", ".join(f"L{h['layer']}H{h['head']}" for h in result["control_heads"])
    lines += ["", f"specialist heads: {heads}", f"random control heads: {control}", f"beta (chosen on dev): {result['dev']['best_beta']}"]
    return "\n".join(lines)
