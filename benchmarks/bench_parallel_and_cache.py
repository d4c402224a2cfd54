"""Ratios in one run: the silence cache warm, steered scoring in one pass, data-parallel speed-up, and a projection.

    python benchmarks/bench_parallel_and_cache.py --out benchmarks/results/parallel_and_cache.json

1. With the silence-prefix cache warm (the timing helper's warm-up call fills it), on the 50M CPU config
   (10 s clips, 300-token prompts, float32), batch 1 and 8: `steered_generate` / `generate`,
   `adaptive_direction` / forward, `steered_logits` / forward and `steered_logits` / (`adaptive_direction`
   then a steered forward): `gpu_check.timings`.
2. Data-parallel speed-up: `sharded_run` over the same workshop items in 1 process and in 2 (torchrun, gloo),
   timed inside the processes (start-up excluded): `tests/helpers/dp_worker.py`.
3. A projection of MMAU test-mini (1,000 items) wall time on 1 and 8 GPUs for Qwen2-Audio-7B in bfloat16
   from the physical limit (weight bytes read per decode step / memory bandwidth, plus prefill FLOPs /
   peak FLOP/s) of an H100-class GPU; no GPU measurement is in it (none was available): a floor, not a forecast.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# Qwen2-Audio-7B: ~7.75e9 decoder parameters, ~0.64e9 in the audio encoder (Whisper-large-v3's).
DECODER_PARAMS, ENCODER_PARAMS = 7.75e9, 0.64e9
ENCODER_FRAMES, PROMPT_TOKENS, NEW_TOKENS = 1500, 300, 32  # 30 s encoder window, a 10 s clip's prompt
H100 = {"bandwidth_bytes_per_s": 3.35e12, "bf16_flops_per_s": 989e12}  # SXM spec sheet, dense bf16


def projection(items: int = 1000, batch: int = 8) -> dict:
    """Floor on MMAU test-mini wall time: per batch, prefill at peak FLOP/s (audio and silence rows up to the
    direction layers ~ 2x the audio rows, counted as 2x) plus decode steps at memory bandwidth."""
    weight_bytes = 2 * (DECODER_PARAMS + ENCODER_PARAMS)
    prefill_flops = 2 * batch * (DECODER_PARAMS * PROMPT_TOKENS + ENCODER_PARAMS * ENCODER_FRAMES)
    per_batch = {
        "choice (one steered forward)": 2 * prefill_flops / H100["bf16_flops_per_s"],
        f"generate ({NEW_TOKENS} new tokens, steered)": 2 * prefill_flops / H100["bf16_flops_per_s"]
        + NEW_TOKENS * weight_bytes / H100["bandwidth_bytes_per_s"],
    }
    return {
        "assumptions": {"items": items, "batch": batch, "prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS,
                        "gpu": "H100 SXM spec: 3.35 TB/s, 989 TFLOP/s bf16 dense", "weight_bytes": weight_bytes},
        "seconds": {mode: {"1 GPU": round(s * items / batch, 1), "8 GPUs": round(s * items / batch / 8, 1)}
                    for mode, s in per_batch.items()},
    }


def dp_speedup(n_items: int) -> dict:
    from lens_audio.organisms.benchmark_writer import write_benchmark

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_benchmark(Path(tmp) / "w", seed=2, n_clips=4, progress=False)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        seconds = {}
        for processes in (1, 2):
            out = Path(tmp) / f"p{processes}"
            launcher = [] if processes == 1 else ["-m", "torch.distributed.run", f"--nproc_per_node={processes}"]
            worker = [str(ROOT / "tests" / "dp_worker.py"), str(folder / "workshop.json"), str(out), str(n_items)]
            subprocess.run([sys.executable, *launcher, *worker], env=env, check=True)
            seconds[processes] = json.loads((out / f"seconds-{processes}.json").read_text())["sharded_run"]
    return {"items": n_items, "seconds": seconds, "speed-up, 2 processes": round(seconds[1] / seconds[2], 3)}


def cache_warm_timings(repeats: int) -> dict:
    """gpu_check.py's timing table on the CPU benchmark config (50M parameters, 10 s clips, batch 1 and 8), run as
    its own process (benchmarks share code through lens_audio, not through each other)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "timings.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--mid", "--skip-equivalence",
                        "--device", "cpu", "--new-tokens", "8", "--repeats", str(repeats), "--out", str(out)],
                       check=True)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dp-items", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = {
        "cache_warm": cache_warm_timings(args.repeats),
        "data_parallel": dp_speedup(args.dp_items),
        "mmau_test_mini_projection": projection(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
