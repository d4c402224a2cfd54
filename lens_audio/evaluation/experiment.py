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

from lens_audio.analysis.heads import correlate_heads
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


def run_experiment(model: "HookedAudioLM", items: Sequence[dict[str, Any]], settings: ExperimentSettings, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split = lambda name: [i for i in items if i.get("split") == settings.splits[name]]
    calibration, dev, test = split("calibration"), split("dev"), split("test")
    if not (calibration and dev and test):
        raise ValueError(f"the benchmark needs items in splits {list(settings.splits.values())} (MMAU 'split' field); got "
                         f"{len(calibration)} / {len(dev)} / {len(test)}.")
    run = lambda rows, name, steering=None, listening=False: run_benchmark(
        model, rows, out / f"{name}.jsonl", template=settings.template, mode=settings.mode, steering=steering,
        batch_size=settings.batch_size, max_new_tokens=settings.max_new_tokens, listening=listening, progress=progress, description=name)

    cal_records = run(calibration, "calibration-baseline", listening=True)
    heads = correlate_heads(np.array([r["listening"] for r in cal_records]), np.array([r["correct"] for r in cal_records]),
                            seed=settings.seed, model_name=model.cfg.model_name)
    heads.save(out / "head_correlation.json")
    specialists = heads.top_k(settings.k_heads)
    control = heads.random_heads(settings.k_heads, seed=settings.seed, exclude=specialists)

    sweep = {}
    for beta in settings.betas:
        records = run(dev, f"dev-steered-beta{beta}", adaptive_steering(layers_of(specialists), beta))
        sweep[beta] = accuracy_with_ci([r["correct"] for r in records])
    dev_baseline = accuracy_with_ci([r["correct"] for r in run(dev, "dev-baseline")])
    best_beta = max(settings.betas, key=lambda b: (sweep[b]["accuracy"], -b))

    test_runs = {
        "baseline": run(test, "test-baseline", listening=True),
        "steered": run(test, f"test-steered-beta{best_beta}", adaptive_steering(layers_of(specialists), best_beta)),
        "random_control": run(test, f"test-random-beta{best_beta}", adaptive_steering(layers_of(control), best_beta)),
    }
    result = {
        "settings": {**asdict(settings), "betas": list(settings.betas)},
        "model": model.cfg.model_name,
        "specialist_heads": [_describe(heads, h) for h in specialists],
        "specialist_layers": layers_of(specialists),
        "control_heads": [_describe(heads, h) for h in control],
        "control_layers": layers_of(control),
        "dev": {"baseline": dev_baseline, "steered_by_beta": {str(b): v for b, v in sweep.items()}, "best_beta": best_beta},
        "test": {name: _tables(records) for name, records in test_runs.items()},
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return result


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
