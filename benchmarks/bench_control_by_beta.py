"""The random-head control on `"workshop-chains"`'s direct benchmark at every candidate beta, not only the dev-chosen
one: how the specialists' advantage over random heads depends on how hard both are pushed.

    python benchmarks/bench_control_by_beta.py --runs DIR --out benchmarks/results/chains_control_by_beta.json

Reuses the run files of `benchmarks/bench_heads_or_depth.py` (`--runs`, the same folder); the dev sweep and every
control take the fast path (one audio and one silence collection per split). A diagnostic, not a choice: beta is
still chosen on dev, and the card reports the control at that beta.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lens_audio.timing import machine, ordinal, write_report


def table(report: dict) -> str:
    rows = ["| beta | dev accuracy | specialists | median draw | percentile | specialists - median, 95% CI "
            "| McNemar p |", "|---|---|---|---|---|---|---|"]
    for beta, c in report["test"].items():
        rows.append(f"| {beta} | {report['dev'][beta]:.1f}% | {c['specialists']:.1f}% | {c['median']:.1f}% | "
                    f"{ordinal(c['percentile'])} | {c['difference']:+.1f} [{c['ci'][0]:+.1f}, {c['ci'][1]:+.1f}] | "
                    f"{c['p']:.3g} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--runs", type=Path, default=Path.home() / ".cache" / "lens_audio" / "runs" / "heads_or_depth")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/chains_control_by_beta.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.model.registry import bundled_benchmark
    from lens_audio.paper import Experiment, profile_for

    bench = bundled_benchmark("workshop-chains")
    profile = profile_for("workshop-chains").replace(depth_matched_control=False, beta_matched_control=False)
    e = Experiment(HookedAudioLM.from_pretrained("workshop-chains"), load_mmau(bench), profile, args.runs,
                   benchmark=bench, progress=False)
    sweep = e.sweep_beta()
    report = {"machine": machine(), "model": "workshop-chains", "best_beta": sweep.best_beta,
              "dev_baseline": float(sweep.baseline["accuracy"]),
              "dev": {str(b): float(v["accuracy"]) for b, v in sweep.steered_by_beta.items()}, "test": {}}
    for beta in profile.betas:
        c = e.control_distributions(beta).random
        v = c.versus_median
        report["test"][str(beta)] = {"specialists": float(c.specialists_accuracy), "median": float(c.median),
                                     "q05": float(c.q05), "q95": float(c.q95), "percentile": float(c.percentile),
                                     "difference": float(v.difference), "ci": [float(x) for x in v.ci],
                                     "p": float(v.p_value)}
    write_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
