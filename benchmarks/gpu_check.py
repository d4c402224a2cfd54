"""One-command device check: equivalence to transformers, the speed table, peak memory, steering on device batches.

On a GPU (about 3-5 minutes on an H100)::

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json

1. Equivalence on a full-width Qwen2-Audio-7B slice with random weights (2 decoder layers, 4 encoder
   layers) in float32 and bfloat16: the port's logits against transformers' SDPA, beside transformers'
   own eager-vs-SDPA difference (the noise floor): mean and max absolute difference, top-1 agreement.
2. The timing table at 7B width (decoder depth `--timing-layers`, default 32 = the full model),
   bfloat16, batch 1 and 8, 10 s clips, medians: transformers forward / generate, and the port's forward,
   `run_with_cache` (residual stream only), `listening_signal`, `adaptive_direction`, `generate`,
   `steered_generate`, with ratios to transformers from the same run, and peak GPU memory.
3. The steering API on batches moved to the device: `steered_generate` equals `adaptive_direction`
   followed by a steered `generate`.

`--small` uses tiny shapes so it runs anywhere in seconds (tests run it on the CPU); `--mid` times the
50M-parameter CPU config (`--mid --skip-equivalence --out benchmarks/results/cpu_ratios.json` gives the CPU
ratios the project tracks: steered / plain generate, port / transformers generate, adaptive_direction / forward).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lens_audio import HookedAudioLM, make_batch
from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.steering import adaptive_direction, steer, steered_generate, steering_hooks
from lens_audio.analysis.steering.steered_pass import steered_logits
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.model.hook_point import block_hook_name
from lens_audio.model.hooked_audio_lm import position_ids_from_mask
from lens_audio.testing import tiny_hf_model
from lens_audio.timing import CPU_BENCHMARK_CONFIG, interleaved_medians

FULL = dict(
    d_model=4096, n_heads=32, n_kv_heads=32, d_mlp=11008, vocab_size=156032,
    audio_d_model=1280, audio_layers=4, audio_heads=20, n_mels=128, chunk_seconds=30,
)  # Qwen2-Audio-7B widths
SMALL = dict(
    d_model=64, n_heads=4, n_kv_heads=2, d_mlp=128, audio_d_model=48, audio_layers=2, audio_heads=4,
    n_mels=16, chunk_seconds=2,
)
MID = {k: v for k, v in CPU_BENCHMARK_CONFIG.items() if k != "n_layers"}  # the CPU benchmarks' 50M-parameter config


def make_pair(shape: dict, n_layers: int, processor, dtype: torch.dtype, device: str, attn: str = "sdpa"):
    hf, _ = tiny_hf_model(processor, attn_implementation=attn, n_layers=n_layers, **shape)
    hf = hf.to(device=device, dtype=dtype)
    return hf, HookedAudioLM.from_hf_model(hf, processor)


def prompts(processor, n: int, seconds: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    clips = [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(n)]
    questions = [f"What is sound {i}? Choose the answer from the options. A. dog B. cat" for i in range(n)]
    return make_batch(processor, clips, questions, sampling_rate=16000)


def set_attn(hf, implementation: str) -> None:
    for config in (hf.config, hf.config.audio_config, hf.config.text_config):
        config._attn_implementation = implementation


@torch.no_grad()
def equivalence(shape: dict, processor, device: str, seconds: float) -> dict:
    """Port vs transformers SDPA, beside transformers eager vs SDPA, per dtype."""
    report = {}
    for dtype in (torch.float32, torch.bfloat16):
        hf, port = make_pair(shape, 2, processor, dtype, device)
        batch = prompts(processor, 4, seconds).to(device)
        positions, valid = position_ids_from_mask(batch.attention_mask), batch.attention_mask.bool()
        set_attn(hf, "sdpa")
        sdpa = hf(**batch.model_inputs(), position_ids=positions).logits.float()
        set_attn(hf, "eager")
        eager = hf(**batch.model_inputs(), position_ids=positions).logits.float()
        ours = port(batch).float()

        def compare(a: torch.Tensor) -> dict:
            diff = (a - sdpa).abs()[valid]
            top1 = (a.argmax(-1) == sdpa.argmax(-1))[valid].float().mean()
            return {"mean_abs": float(diff.mean()), "max_abs": float(diff.max()), "top1_agreement": float(top1)}

        row = {
            "port_vs_sdpa": compare(ours),
            "eager_vs_sdpa (floor)": compare(eager),
            "logit_std": float(sdpa[valid].std()),
        }
        floor = row["eager_vs_sdpa (floor)"]["mean_abs"]
        row["mean_abs_ratio_to_floor"] = row["port_vs_sdpa"]["mean_abs"] / floor if floor > 0 else None
        report[str(dtype).removeprefix("torch.")] = row
        del hf, port
    return report


def _direction_then_steer(port, batch, layers):
    """The two-call idiom `steered_logits` replaces."""
    with steer(port, adaptive_direction(port, batch, layers), 1.0):
        return port(batch)[:, -1]


@torch.no_grad()
def timings(
    shape: dict,
    n_layers: int,
    processor,
    device: str,
    dtype: torch.dtype,
    batch_sizes,
    seconds: float,
    new_tokens: int,
    repeats: int,
) -> dict:
    hf, port = make_pair(shape, n_layers, processor, dtype, device)
    layers = sorted(
        {n_layers // 2, (3 * n_layers) // 4, n_layers - 2 if n_layers > 2 else 0}
    )  # a typical specialist set
    report: dict = {"direction_layers": layers, "by_batch": {}}
    for size in batch_sizes:
        batch = prompts(processor, size, seconds, seed=size).to(device)
        inputs = {**batch.model_inputs(), "position_ids": position_ids_from_mask(batch.attention_mask)}
        gen_hf = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        gen = dict(max_new_tokens=new_tokens, eos_token_id=[], do_sample=False)
        resid = [block_hook_name(i, "hook_resid_post") for i in range(n_layers)]
        contenders = {
            "transformers forward (SDPA)": lambda: hf(**inputs),
            "port forward": lambda: port(batch),
            "port run_with_cache, residual stream only": lambda: port.run_with_cache(
                batch, names_filter=resid, return_cache_object=False
            ),
            "port listening_signal": lambda: listening_signal(port, batch),
            "port adaptive_direction": lambda: adaptive_direction(port, batch, layers),
            f"transformers generate, {new_tokens} new tokens": lambda: hf.generate(**batch.model_inputs(), **gen_hf),
            f"port generate, {new_tokens} new tokens": lambda: port.generate(batch, **gen),
            "port steered_generate": lambda: steered_generate(port, batch, layers, 1.0, **gen),
            "port steered_logits (one pass)": lambda: steered_logits(port, batch, layers, 1.0),
            "port adaptive_direction then steer(forward)": lambda: _direction_then_steer(port, batch, layers),
        }
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds_by = interleaved_medians(contenders, repeats)
        forward, generate = (
            seconds_by["transformers forward (SDPA)"],
            seconds_by[f"transformers generate, {new_tokens} new tokens"],
        )
        rows = {
            name: {"seconds": round(s, 4), "ratio": round(s / (generate if "generate" in name else forward), 3)}
            for name, s in seconds_by.items()
        }
        report["by_batch"][size] = {
            "prompt_tokens": int(batch.input_ids.shape[1]),
            "rows": rows,
            "steered / plain port generate": round(
                seconds_by["port steered_generate"] / seconds_by[f"port generate, {new_tokens} new tokens"], 3
            ),
            "adaptive_direction / port forward": round(
                seconds_by["port adaptive_direction"] / seconds_by["port forward"], 3
            ),
            "steered_logits / port forward": round(
                seconds_by["port steered_logits (one pass)"] / seconds_by["port forward"], 3
            ),
            "steered_logits / (adaptive_direction then steer)": round(
                seconds_by["port steered_logits (one pass)"]
                / seconds_by["port adaptive_direction then steer(forward)"],
                3,
            ),
            "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        }
    return report


@torch.no_grad()
def steering_on_device(shape: dict, processor, device: str, seconds: float) -> dict:
    """The steering API with the batch on the device and with the batch left on the CPU."""
    _, port = make_pair(shape, 4, processor, torch.float32, device)
    report = {}
    for where in ("device", "cpu"):
        batch = prompts(processor, 2, seconds, seed=5)
        batch = batch.to(device) if where == "device" else batch
        direction = adaptive_direction(port, batch, [1, 2])
        gen = dict(max_new_tokens=6, eos_token_id=[], do_sample=False)
        two_pass = port.generate(batch, fwd_hooks=steering_hooks(port, direction, 8.0), **gen)
        fused = steered_generate(port, batch, [1, 2], 8.0, **gen)
        report[f"batch on {where}"] = {
            "steered_generate equals two-pass": bool(torch.equal(two_pass.cpu(), fused.cpu()))
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/gpu_check.json")
    parser.add_argument("--small", action="store_true", help="tiny shapes (runs on the CPU in seconds)")
    parser.add_argument(
        "--mid", action="store_true", help="the 50M-parameter CPU benchmark config for the timing table"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timing-layers", type=int, default=None, help="decoder layers for the timing table (7B: 32)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length (10 s on the GPU)")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--skip-equivalence", action="store_true")
    args = parser.parse_args()

    small = args.small
    timing_shape = SMALL if small else (MID if args.mid else FULL)
    chunk = timing_shape["chunk_seconds"]
    seconds = args.seconds or (1.0 if small else 10.0)
    processor = build_offline_processor(n_mels=timing_shape["n_mels"], chunk_seconds=chunk)
    start = time.perf_counter()
    report: dict = {
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "shapes": {
            "equivalence": "small" if small else "Qwen2-Audio-7B width, 2 decoder + 4 encoder layers",
            "timing": timing_shape,
        },
    }
    if not args.skip_equivalence:
        eq_shape = SMALL if small else FULL
        eq_processor = (
            processor
            if eq_shape is timing_shape
            else build_offline_processor(n_mels=eq_shape["n_mels"], chunk_seconds=eq_shape["chunk_seconds"])
        )
        report["equivalence"] = equivalence(eq_shape, eq_processor, args.device, seconds)
        report["steering_on_device"] = steering_on_device(
            SMALL, build_offline_processor(n_mels=16, chunk_seconds=2), args.device, 1.0
        )
    layers = args.timing_layers or (3 if small else (8 if args.mid else 32))
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    report["timing"] = timings(
        timing_shape, layers, processor, args.device, dtype, [int(b) for b in args.batch_sizes.split(",")], seconds,
        args.new_tokens, args.repeats or (2 if small else 5),
    )
    report["timing"].update(dtype=str(dtype).removeprefix("torch."), decoder_layers=layers, clip_seconds=seconds)
    report["wall_seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
