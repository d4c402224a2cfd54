"""Attribution patching over all heads vs exact per-head activation patching, on the workshop model.

Same model, inputs (8 calibration clips without hints; corrupted = silence twins) and metric
(normalized correct-vs-wrong logit difference). Reports median wall times, their ratio and the
Spearman rank correlation between the two head maps.

Usage: python benchmarks/bench_attribution.py [--examples 8] [--repeats 5]
Writes benchmarks/results/attribution.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attribution.json"))
    args = parser.parse_args()

    from lens_audio import HookedAudioLM
    from lens_audio.analysis.patching import attribution_patching, normalized_logit_diff, patch_heads
    from lens_audio.benchmark import load_mmau
    from lens_audio.benchmark.prompts import render_prompt
    from lens_audio.organisms import BENCHMARK

    model = HookedAudioLM.from_pretrained("workshop")
    items = [i for i in load_mmau(BENCHMARK, split="calibration") if i["hint"] == "none"][: args.examples]
    clean = model.to_batch([i["audio_path"] for i in items], [render_prompt(i, "workshop") for i in items])
    corrupted = clean.silence_twin()
    first_token = lambda text: model.tokenizer.encode(text, add_special_tokens=False)[0]
    correct = [first_token(i["answer"]) for i in items]
    wrong = [first_token(next(c for c in i["choices"] if c != i["answer"])) for i in items]
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    runs = {"attribution": lambda: attribution_patching(model, clean, corrupted, metric).per_head,
            "exact_per_head": lambda: patch_heads(model, clean, corrupted, metric)}
    times = {name: [] for name in runs}
    results = {name: fn() for name, fn in runs.items()}  # warm-up, and the maps to compare
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "examples": len(items),
        "heads": model.cfg.n_layers * model.cfg.n_heads,
        "seconds": seconds,
        "time_ratio_attribution_over_exact": round(seconds["attribution"] / seconds["exact_per_head"], 3),
        "spearman_attribution_vs_exact": round(
            float(stats.spearmanr(results["attribution"].flatten(), results["exact_per_head"].flatten()).statistic), 3
        ),
        "machine": {"threads": torch.get_num_threads(), "torch": torch.__version__},
    }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
