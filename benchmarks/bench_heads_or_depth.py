"""Is it the heads or the depth? The paper's experiment on `"workshop-chains"` and its registered benchmark of direct
questions, reduced to the numbers its model card records.

    python benchmarks/bench_heads_or_depth.py --out benchmarks/results/chains_heads_or_depth.json

Runs `lens-audio experiment --model workshop-chains` (its registered profile and benchmark,
`organisms.benchmark_writer.direct_chain_benchmark`: 1400 calibration, 720 dev, 2400 test items, 800 of them
conflicting) as one `Experiment`, resumable from the run files under `--runs` (default the user's cache), or reads a
saved result (`--from results.json`, e.g. the experiment's `--json`). The report holds where the audio arrives
(final-position patching restore and the answer probe by layer, calibration), the dev-chosen beta, test accuracy
by hint condition for the baseline and the specialists' steering, the three random-head controls (plain,
depth-matched, beta-matched; percentile of the specialists among 200 draws, median draw, paired difference with
its clip-clustered 95% CI, exact McNemar p, the smallest difference the items can show), and the specialists' r with
correctness within the hinted class. `--check CARD_NUMBERS.json` compares a fresh run with recorded numbers: the
specialists' percentiles within `--tolerance` points, accuracies within `--tolerance`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lens_audio.paper.results import ExperimentResult
from lens_audio.timing import machine, ordinal, write_report

CONTROLS = ("random", "depth-matched", "beta-matched")


def run_experiment(runs: Path, fresh: bool) -> ExperimentResult:
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.model.registry import bundled_benchmark
    from lens_audio.paper import Experiment, profile_for

    model = HookedAudioLM.from_pretrained("workshop-chains")
    benchmark = bundled_benchmark("workshop-chains")
    experiment = Experiment(model, load_mmau(benchmark), profile_for("workshop-chains"), runs, benchmark=benchmark,
                            fresh=fresh)
    return experiment.run_all()


def reduce(result: ExperimentResult) -> dict[str, Any]:
    """The card's numbers from an experiment result."""
    arrival = result.audio_arrival
    report: dict[str, Any] = {
        "specialists": [list(h) for h in result.head_selection.specialists],
        "beta": result.beta,
        "test_accuracy": {run: {k: v for k, v in tables.get("hint", {}).items()} for run, tables in result.test.items()
                          if run in ("baseline", "steered")},
        "controls": {},
    }
    if arrival is not None:
        report["arrival"] = {"layer": arrival.arrival, "silence": arrival.silence, "audio": arrival.audio,
                             "restored": [round(100 * r, 1) for r in arrival.restored], "probe": arrival.probe,
                             "n": arrival.n}
    for kind, control in result.controls.items():
        if kind not in CONTROLS:
            continue
        paired = control.versus_median
        report["controls"][kind] = {
            "items": control.items, "n_draws": len(control.accuracies), "specialists": control.specialists_accuracy,
            "median": control.median, "q05": control.q05, "q95": control.q95, "percentile": control.percentile,
            "difference": paired.difference, "ci": list(paired.ci), "gained": paired.a_only, "lost": paired.b_only,
            "mcnemar_p": paired.p_value, "detectable": control.detectable, "layers": control.layers,
        }
    controls = result.validity_controls.get("test")
    if controls is not None:  # the specialists' signal: r with correctness, and within each stratum (the hinted class)
        signal = controls.signal
        report["signal_test"] = {"items": controls.items, "audio": signal.audio.to_json(),
                                 "silence": signal.silence.to_json(),
                                 "within": {k: v.to_json() for k, v in signal.within.items()},
                                 "causal_rank_r": controls.causal_rank_r,
                                 "top_causal": [list(h) for h in controls.top_causal(4)]}
    return report


def table(report: dict[str, Any]) -> str:
    rows = ["| control | median draw | specialists' percentile | specialists - median, 95% CI | McNemar p |",
            "|---|---|---|---|---|"]
    for kind, c in report["result"]["controls"].items():
        rows.append(f"| {kind} | {c['median']:.1f}% | {ordinal(c['percentile'])} | {c['difference']:+.1f} "
                    f"[{c['ci'][0]:+.1f}, {c['ci'][1]:+.1f}] | {c['mcnemar_p']:.3g} |")
    return "\n".join(rows)


def compare(report: dict[str, Any], recorded: dict[str, Any], tolerance: float) -> list[str]:
    """Where a run differs from recorded numbers by more than `tolerance` points (percentiles and accuracies)."""
    problems = []
    for kind, want in recorded["controls"].items():
        have = report["controls"].get(kind)
        if have is None:
            problems.append(f"{kind}: not run")
            continue
        for key in ("percentile", "median", "specialists"):
            if abs(have[key] - want[key]) > tolerance:
                problems.append(f"{kind} {key}: {have[key]:.1f} against {want[key]:.1f} recorded")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/chains_heads_or_depth.json"))
    parser.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "lens_audio" / "runs" / "heads_or_depth",
                        help="the experiment's resumable run files")
    parser.add_argument("--from", dest="saved", type=Path, help="a saved experiment result (its --json) to reduce")
    parser.add_argument("--fresh", action="store_true", help="start every run file over")
    parser.add_argument("--check", type=Path, help="a report written earlier: refuse if the numbers moved")
    parser.add_argument("--tolerance", type=float, default=3.0, help="points (default 3)")
    args = parser.parse_args()
    started = time.perf_counter()
    result = ExperimentResult.load(args.saved) if args.saved else run_experiment(args.runs, args.fresh)
    report = {"machine": machine(), "model": "workshop-chains", "result": reduce(result)}
    if args.check:
        problems = compare(report["result"], json.loads(args.check.read_text())["result"], args.tolerance)
        if problems:
            raise SystemExit("the numbers moved: " + "; ".join(problems))
    write_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
