"""Forward speed and loading memory of HookedAudioLM against transformers and TransformerLens's bridge.

One run, one random ~50M-parameter Qwen2-Audio config, the same weights and
inputs for every contender:

- forward: median wall time of `model(batch)` for the port (no hooks, SDPA
  path), the port under `run_with_cache` (every hook cached, explicit
  attention), transformers with SDPA and with eager attention, and
  TransformerLens 4's `TransformerBridge` (its plain forward and its
  `run_with_cache`). Ratios are against the faster transformers path.
- loading: peak resident memory added by `HookedAudioLM.from_pretrained`
  (and by transformers' `from_pretrained`, for reference), each in a fresh
  subprocess, divided by the checkpoint's bytes on disk.

Usage: python benchmarks/bench_forward_and_loading.py [--repeats 7] [--dtype float32] [--device cpu]
Writes benchmarks/results/forward_and_loading.json.
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

from lens_audio.timing import CPU_BENCHMARK_CONFIG as CONFIG
from lens_audio.timing import interleaved_medians

ROOT = Path(__file__).resolve().parents[1]


def build(folder: Path):
    from lens_audio.testing import save_checkpoint, tiny_hf_model

    hf, processor = tiny_hf_model(**CONFIG)
    save_checkpoint(hf, processor, folder)
    return processor


def forward_benchmark(folder: Path, processor, repeats: int, dtype: torch.dtype, device: str) -> dict:
    import numpy as np
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import Qwen2AudioForConditionalGeneration

    from lens_audio import HookedAudioLM, make_batch
    from lens_audio.model.hooked_audio_lm import position_ids_from_mask

    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (10, 6)]
    batch = make_batch(processor, clips, ["Describe the sound in detail.", "What is it?"], sampling_rate=16000).to(
        device
    )
    inputs = batch.model_inputs()
    mask = batch.attention_mask
    position_ids = position_ids_from_mask(mask)

    ours = HookedAudioLM.from_pretrained(folder, dtype=dtype, device=device)
    hf = {
        implementation: Qwen2AudioForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, attn_implementation=implementation
        )
        .to(device)
        .eval()
        for implementation in ("sdpa", "eager")
    }
    bridge_hf = (
        Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
        .to(device)
        .eval()
    )
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=bridge_hf, tokenizer=processor.tokenizer, device=device
    )
    kwargs = dict(
        input_features=inputs["input_features"],
        feature_attention_mask=inputs["feature_attention_mask"],
        attention_mask=mask,
    )
    decoder_only = lambda name: not name.startswith("audio.")  # the bridge wraps the audio encoder opaquely
    contenders = {
        "port_forward": lambda: ours(batch),
        "port_run_with_cache": lambda: ours.run_with_cache(batch),
        "port_run_with_cache_decoder": lambda: ours.run_with_cache(batch, names_filter=decoder_only),
        "transformers_sdpa": lambda: hf["sdpa"](**inputs, position_ids=position_ids),
        "transformers_eager": lambda: hf["eager"](**inputs, position_ids=position_ids),
        "bridge_forward": lambda: bridge(batch.input_ids, **kwargs),
        "bridge_run_with_cache": lambda: bridge.run_with_cache(batch.input_ids, **kwargs),
    }
    with torch.no_grad():
        results = interleaved_medians(contenders, repeats)
    fastest = min(results["transformers_sdpa"], results["transformers_eager"])
    return {
        "seconds": results,
        "ratio_to_fastest_transformers": {k: round(v / fastest, 3) for k, v in results.items()},
        "tokens": list(batch.input_ids.shape),
        "parameters": sum(p.numel() for p in ours.parameters()),
    }


# Loads a small checkpoint first so that every lazy import (transformers, processors, librosa) is
# already resident, resets the kernel's peak-RSS counter (Linux: write 5 to /proc/self/clear_refs),
# then measures the peak that loading the big checkpoint adds on top.
LOAD_SNIPPET = """
import sys, psutil, torch

def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

loader, folder, warmup, dtype = sys.argv[1], sys.argv[2], sys.argv[3], getattr(torch, sys.argv[4])
if loader == "port":
    from lens_audio import HookedAudioLM
    load = lambda path: HookedAudioLM.from_pretrained(path, dtype=dtype)
else:
    from transformers import Qwen2AudioForConditionalGeneration
    load = lambda path: Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=dtype)
del_me = load(warmup); del del_me
open("/proc/self/clear_refs", "w").write("5")
before = psutil.Process().memory_info().rss
model = load(folder)
with torch.no_grad():  # touch every weight, so lazily mapped pages count as they would in use
    for p in model.parameters():
        p.sum()
peak = peak_rss()
print(peak - before, sum(p.numel() * p.element_size() for p in model.parameters()))
"""


def loading_benchmark(folder: Path, dtype_name: str) -> dict:
    from lens_audio.testing import save_checkpoint, tiny_hf_model

    warmup = folder.parent / "warmup"
    save_checkpoint(*tiny_hf_model(n_mels=CONFIG["n_mels"], chunk_seconds=CONFIG["chunk_seconds"]), warmup)
    checkpoint_bytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    out = {"checkpoint_bytes": checkpoint_bytes}
    for loader in ("port", "transformers"):
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        command = [sys.executable, "-c", LOAD_SNIPPET, loader, str(folder), str(warmup), dtype_name]
        line = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout.split()
        peak, weights = int(line[0]), int(line[1])
        out[loader] = {
            "peak_added_bytes": peak,
            "weights_bytes": weights,
            "peak_over_weights": round(peak / weights, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "forward_and_loading.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "checkpoint"
        processor = build(folder)
        report = {
            "machine": {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__},
            "dtype": args.dtype,
            "config": CONFIG,
            "forward": forward_benchmark(folder, processor, args.repeats, getattr(torch, args.dtype), args.device),
            "loading": loading_benchmark(folder, args.dtype),
        }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
