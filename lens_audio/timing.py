"""Timing and memory helpers shared by the benchmarks (which import the package, not each other)."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lens_audio.files import write_atomically

# The CPU benchmarks' random ~50M-parameter Qwen2-Audio config (keywords of `lens_audio.testing.tiny_hf_model`).
CPU_BENCHMARK_CONFIG = dict(
    d_model=512, n_layers=8, n_heads=8, n_kv_heads=8, d_mlp=1536, vocab_size=16384,
    audio_d_model=384, audio_layers=4, audio_heads=6, n_mels=128, chunk_seconds=30,
)


def machine(device: str = "cpu") -> dict[str, Any]:
    """What a benchmark's numbers were measured on: the device, CPU count, torch threads and version, the load."""
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    return {"device": name, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_average": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform()}


def write_report(report: dict[str, Any], out: str | Path, started: float, table: Callable[[dict], str]) -> None:
    """Finish a benchmark's report (the command, the wall time since `started`), write it atomically to `out` and
    print its table."""
    report["command"] = " ".join(["python", *sys.argv])
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_atomically(out, json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"written to {out}")


def ordinal(value: float) -> str:
    """A rounded percentile as English writes it: 1st, 2nd, 3rd, 11th, 43rd, 91st."""
    n = int(round(value))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved_medians(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per contender, timed round-robin so drifts in machine load hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in contenders.items():
            synchronize()
            start = time.perf_counter()
            fn()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_added_bytes(fn: Callable[[], Any]) -> int:
    """Peak resident memory `fn` adds on the CPU (Linux VmHWM, reset first)."""
    import psutil

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = psutil.Process().memory_info().rss
    result = fn()
    peak = before
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    del result
    return peak - before
