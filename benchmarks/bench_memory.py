"""Memory of each analysis at Qwen2-Audio-7B's true widths: measured on one encoder and one decoder layer, scaled.

    python benchmarks/bench_memory.py --out benchmarks/results/memory.json

A random checkpoint with Qwen2-Audio-7B-Instruct's widths (decoder width 4096, 32 heads, MLP 11008, vocabulary
156,032; encoder width 1280, 20 heads, 128 mel bins, the 30 s window) but **one** encoder and **one** decoder layer is
saved in bfloat16. Each analysis then runs on one 30 s clip with a short question (833 decoder positions, 750 of
them audio) in a fresh process that loads the checkpoint; its *measured* cost is the process's peak resident memory
minus its memory after loading (Linux `VmHWM`, reset after loading, so the allocator's temporaries count). Beside
it, `lens_audio.model.memory`'s estimate for the same layers (what a cache holds, from the hook table's shapes) and
the estimate scaled to the real 32 + 32 layers, which is the column the docs' table shows. Rows that hold no
per-layer state (the logit lens's chunk, the generation cache's growth) are scaled by their formula, printed in the
table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lens_audio.timing import machine, write_report

GiB = 2**30
REAL = {"decoder_layers": 32, "encoder_layers": 32}
WIDTHS = dict(d_model=4096, n_layers=1, n_heads=32, n_kv_heads=32, d_mlp=11008, audio_d_model=1280, audio_layers=1,
              audio_heads=20, n_mels=128, chunk_seconds=30, vocab_size=156032)
QUESTION = "Which of these sounds is heard in the recording: a dog, a bell, a car horn or rain?"
ANALYSES = ("forward", "run_with_cache: every hook", "run_with_cache: decoder hooks",
            "run_with_cache: decoder patterns", "listening_signal", "logit_lens_over_audio", "generate 8 tokens")


def build(folder: Path) -> None:
    from lens_audio.testing import save_checkpoint, tiny_hf_model

    torch.set_default_dtype(torch.bfloat16)
    hf, processor = tiny_hf_model(**WIDTHS)
    torch.set_default_dtype(torch.float32)
    save_checkpoint(hf.to(torch.bfloat16), processor, folder)


def peak_rss() -> int:
    """This process's peak resident memory since the last `reset_peak` (Linux `VmHWM`), in bytes."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024


def reset_peak() -> int:
    """Reset the peak to the current resident memory (Linux `clear_refs` 5) and return it."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_rss()


def filters(name: str):
    from lens_audio import decoder_only

    return {"run_with_cache: every hook": None, "run_with_cache: decoder hooks": decoder_only(),
            "run_with_cache: decoder patterns": decoder_only(lambda n: n.endswith("hook_pattern"))}[name]


def measure(folder: Path, name: str) -> dict:
    """Run one analysis (in this process) and return its peak and the estimate."""
    from lens_audio import HookedAudioLM
    from lens_audio.analysis import listening_signal, logit_lens_over_audio
    from lens_audio.model import memory

    model = HookedAudioLM.from_pretrained(str(folder), dtype="bfloat16")
    clip = np.random.default_rng(0).standard_normal(30 * 16000).astype(np.float32) * 0.1
    batch = model.to_batch(clip, QUESTION, sampling_rate=16000)
    torch.set_grad_enabled(False)
    before = reset_peak()
    estimate = None
    if name == "forward":
        model(batch, return_type=None)
    elif name.startswith("run_with_cache"):
        names_filter = filters(name)
        _, cache = model.run_with_cache(batch, names_filter=names_filter, return_cache_object=False)
        held = sum(t.numel() * t.element_size() for t in cache.values())
        estimate = memory.cache_bytes(model, batch, memory.names_from_filter(model, names_filter))
        assert estimate == held, (estimate, held)
        per_layer = sum(memory.cache_bytes(model, batch, [n]) for n in cache if ".blocks.0." in f".{n}")
        rest = estimate - per_layer
        scaled = rest + per_layer * REAL["decoder_layers"]  # encoder and decoder blocks: 32 each
    elif name == "listening_signal":
        listening_signal(model, batch)
    elif name == "logit_lens_over_audio":
        logit_lens_over_audio(model, batch, [0, 1, 2, 3])
    elif name == "generate 8 tokens":
        model.generate(batch, max_new_tokens=8, do_sample=False, verbose=False)
    peak = peak_rss()
    row = {"analysis": name, "measured_gib": round((peak - before) / GiB, 3), "positions": batch.input_ids.shape[1],
           "audio_positions": int(batch.audio_mask.sum())}
    if estimate is not None:
        row.update(estimate_gib=round(estimate / GiB, 3), scaled_gib=round(scaled / GiB, 2))
    return row


def formulas(positions: int, audio: int) -> list[dict]:
    """Rows scaled by formula at the real shapes (bfloat16 weights, float32 logits where the code upcasts)."""
    layers, vocab, d_model, kv, d_head, batch = 32, 156032, 4096, 32, 128, 16
    return [
        {"analysis": "logit lens over audio, unchunked (before)", "formula": "(L+1) x audio x vocab x 4 B x 2",
         "scaled_gib": round((layers + 1) * audio * vocab * 4 * 2 / GiB, 1)},
        {"analysis": "logit lens over audio, chunked (now)", "formula": "(L+1) x audio x d_model x 2 B + 256 MiB",
         "scaled_gib": round(((layers + 1) * audio * d_model * 2 + 256 * 2**20) / GiB, 2)},
        {"analysis": "logits at every position, batch 16", "formula": "16 x pos x vocab x 2 B",
         "scaled_gib": round(batch * positions * vocab * 2 / GiB, 1)},
        {"analysis": "generation KV cache, batch 16, 32 new tokens",
         "formula": "2 x L x 16 x (pos+32) x kv x d_head x 2 B",
         "scaled_gib": round(2 * layers * batch * (positions + 32) * kv * d_head * 2 / GiB, 1)},
    ]


def table(report: dict) -> str:
    rows = ["| analysis (one 30 s clip, bfloat16) | measured, 1+1 layers (GiB) | estimate, 1+1 layers | "
            "scaled to 32+32 layers (GiB) |", "|---|---:|---:|---:|"]
    for r in report["measured"]:
        rows.append(f"| {r['analysis']} | {r['measured_gib']:.2f} | {r.get('estimate_gib', '')} | "
                    f"{r.get('scaled_gib', '')} |")
    for r in report["formulas"]:
        rows.append(f"| {r['analysis']} ({r['formula']}) | | | {r['scaled_gib']} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    parser.add_argument("--checkpoint", type=Path, help="reuse (or write once) the 1+1-layer checkpoint in this folder")
    parser.add_argument("--measure", nargs=2, metavar=("FOLDER", "ANALYSIS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process: one analysis
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_memory-") as scratch:
        folder = args.checkpoint or Path(scratch)
        if not (folder / "config.json").is_file():
            build(folder)
        measured = []
        for name in ANALYSES:
            child = subprocess.run([sys.executable, __file__, "--measure", str(folder), name], capture_output=True,
                                   text=True)
            if child.returncode:
                raise SystemExit(f"{name} failed:\n{child.stderr[-3000:]}")
            measured.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(measured[-1], flush=True)
    report = {"machine": machine(), "widths": WIDTHS, "real_layers": REAL, "measured": measured,
              "formulas": formulas(measured[0]["positions"], measured[0]["audio_positions"])}
    write_report(report, args.out, started, table)


if __name__ == "__main__":
    main()
