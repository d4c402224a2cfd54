"""Adaptive steered scoring beside its peers: lens_audio's one pass and two-call idiom, nnsight, transformers hooks.

    python benchmarks/bench_steered_scoring_peers.py --out benchmarks/results/steered_scoring_peers.json

The task: the next-token logits at the final prompt position of a batch of audio prompts, with `beta * direction`
added to the last decoder layer's output (`blocks.{n-1}.hook_resid_post`), where each row's direction is the mean
over the direction layers of its residual at the final position with the audio minus the same with its silence
twin (every clip replaced by zeros of the same length). One random checkpoint (the 50M-parameter CPU benchmark
config, 8 decoder layers, float32), 10 s clips, direction layers 4 and 6, beta 1, batch 1 and 8 (left-padded:
the final position is the last column). Contenders, timed round-robin (`lens_audio.timing.interleaved_medians`):

1. `steered_logits` (one pass; the silence-prefix cache warm, as the timing helper's warm-up call leaves it: the
   silence residuals come from the cache and the pass holds the audio rows only), and the same with the cache off.
2. The two-call idiom: `with steer(port, adaptive_direction(port, batch, layers), beta): port(batch)[:, -1]`.
3. nnsight on the transformers model: one trace over the audio rows and their silence twins (2B rows), the
   direction formed inside the trace and added to the last decoder layer's output for the audio rows; and two
   traces (the direction's, stopped after its deepest layer, then the steered audio rows).
4. Plain `register_forward_hook` on the transformers model's decoder layers: one forward of the 2B rows; and the
   same with the silence rows dropped after the deepest direction layer (pre-hooks slice the layers' inputs),
   the algorithm of the one pass without its cache.

Every peer reads the logits at the final position only (a pre-hook, or nnsight's `lm_head.input`, hands the
unembedding that one position: transformers' Qwen2-Audio forward has no `logits_to_keep`) and runs with
`use_cache=False`. The nnsight contenders wrap a deep copy of the transformers model (nnsight replaces every
module's `forward`), so the hooks contenders time plain transformers. Every contender's logits are checked
against the one pass before timing (max abs difference under 1e-3 of the largest logit, else the run fails), and
beta must move the logits by more than that. `--small` uses tiny shapes (seconds; the tests run it).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from lens_audio import HookedAudioLM, make_batch
from lens_audio.analysis.steering import adaptive_direction, steer
from lens_audio.analysis.steering.silence_cache import silence_prefix_cache
from lens_audio.analysis.steering.steered_pass import steered_logits
from lens_audio.inputs.batch import AudioBatch
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.model.hooked_audio_lm import position_ids_from_mask
from lens_audio.testing import tiny_hf_model
from lens_audio.timing import CPU_BENCHMARK_CONFIG, interleaved_medians, machine, write_report

MID = {k: v for k, v in CPU_BENCHMARK_CONFIG.items() if k != "n_layers"}  # the CPU benchmarks' 50M config
SMALL = dict(
    d_model=64, n_heads=4, n_kv_heads=2, d_mlp=128, audio_d_model=48, audio_layers=2, audio_heads=4,
    n_mels=16, chunk_seconds=2,
)
REFERENCE = "lens_audio steered_logits (one pass)"
TOLERANCE = 1e-3  # of the largest reference logit


def prompts(processor, n: int, seconds: float, seed: int) -> AudioBatch:
    """`n` noise clips of `seconds` with a multiple-choice question each (as `gpu_check.prompts` makes them)."""
    rng = np.random.default_rng(seed)
    clips = [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(n)]
    questions = [f"What is sound {i}? Choose the answer from the options. A. dog B. cat" for i in range(n)]
    return make_batch(processor, clips, questions, sampling_rate=16000)


def _output_tensor(output):
    """A decoder layer's hidden states (transformers 5 returns the tensor; older versions a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def _with_output(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def hooks_scoring(hf, inputs: dict, b: int, layers: list[int], beta: float, drop_silence: bool = False) -> torch.Tensor:
    """Plain forward hooks on the transformers model: one forward of the audio rows and their silence twins (the
    first `b` rows are the audio rows), the direction captured at `layers`, pushed at the last decoder layer.
    With `drop_silence` the silence rows leave after the deepest direction layer (the later layers' inputs are
    sliced by pre-hooks)."""
    decoder = hf.model.language_model.layers
    deepest, captured = max(layers), {}

    def capture(layer: int):
        def hook(module, args, output):
            captured[layer] = _output_tensor(output)[:, -1]
            if drop_silence and layer == deepest:
                return _with_output(output, _output_tensor(output)[:b])
        return hook

    def only_audio_rows(module, args, kwargs):
        def cut(value):
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == 2 * b:
                return value[:b]
            return tuple(cut(v) for v in value) if isinstance(value, tuple) else value
        return tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}

    def push(module, args, output):
        hidden = _output_tensor(output)
        stacked = torch.stack([captured[layer] for layer in layers])
        direction = (stacked[:, :b] - stacked[:, b:]).mean(0)
        hidden = hidden.clone()
        hidden[:b, -1] += beta * direction
        return _with_output(output, hidden)

    handles = [decoder[layer].register_forward_hook(capture(layer)) for layer in sorted(set(layers))]
    if drop_silence:
        handles += [decoder[i].register_forward_pre_hook(only_audio_rows, with_kwargs=True)
                    for i in range(deepest + 1, len(decoder))]
    handles.append(decoder[-1].register_forward_hook(push))
    handles.append(hf.lm_head.register_forward_pre_hook(lambda module, args: (args[0][:b, -1:],)))
    try:
        return hf(**inputs).logits[:, -1]
    finally:
        for handle in handles:
            handle.remove()


def nnsight_one_trace(model, inputs: dict, b: int, layers: list[int], beta: float) -> torch.Tensor:
    """nnsight: one trace of the 2B rows; the direction formed inside it, pushed for the audio rows."""
    decoder = model.model.language_model.layers
    finals = {}
    with model.trace(**inputs):
        for layer in sorted(set(layers)):  # a trace reads modules in the order they run
            finals[layer] = decoder[layer].output[:, -1]
        stacked = torch.stack([finals[layer] for layer in layers])
        direction = (stacked[:, :b] - stacked[:, b:]).mean(0)
        decoder[-1].output[:b, -1] += beta * direction
        model.lm_head.input = model.lm_head.input[:b, -1:]
        logits = model.lm_head.output[:, -1].save()
    return logits


def nnsight_two_traces(model, both: dict, audio: dict, b: int, layers: list[int], beta: float) -> torch.Tensor:
    """nnsight: the direction's trace of the 2B rows (stopped after the deepest layer), then the steered trace."""
    decoder = model.model.language_model.layers
    saved = {}
    with model.trace(**both) as tracer:
        for layer in sorted(set(layers)):
            saved[layer] = decoder[layer].output[:, -1].save()
        tracer.stop()
    stacked = torch.stack([saved[layer] for layer in layers])
    direction = (stacked[:, :b] - stacked[:, b:]).mean(0)
    with model.trace(**audio):
        decoder[-1].output[:, -1] += beta * direction
        model.lm_head.input = model.lm_head.input[:, -1:]
        logits = model.lm_head.output[:, -1].save()
    return logits


def _direction_then_steer(port, batch, layers, beta):
    with steer(port, adaptive_direction(port, batch, layers), beta):
        return port(batch)[:, -1]


def hf_inputs(batch: AudioBatch) -> dict:
    return {**batch.model_inputs(), "position_ids": position_ids_from_mask(batch.attention_mask), "use_cache": False}


@torch.no_grad()
def compare(shape: dict, n_layers: int, layers: list[int], beta: float, seconds: float, batch_sizes, repeats: int,
            device: str) -> dict:
    from nnsight import NNsight

    processor = build_offline_processor(n_mels=shape["n_mels"], chunk_seconds=shape["chunk_seconds"])
    hf, _ = tiny_hf_model(processor, attn_implementation="sdpa", n_layers=n_layers, **shape)
    hf = hf.to(device)
    port = HookedAudioLM.from_hf_model(hf, processor)
    cold = HookedAudioLM.from_hf_model(hf, processor)
    silence_prefix_cache(cold, max_bytes=0)
    traced = NNsight(copy.deepcopy(hf))  # nnsight wraps every module's forward: keep `hf` plain for the hooks
    report: dict = {}
    for size in batch_sizes:
        batch = prompts(processor, size, seconds, seed=size).to(device)
        twin = batch.silence_twin()
        if not torch.equal(twin.input_ids, batch.input_ids):
            raise RuntimeError("the silence twin's tokens differ from the batch's")
        if not bool((batch.final_position == batch.input_ids.shape[1] - 1).all()):
            raise RuntimeError("the batch is not left-padded: its final prompt positions are not the last column")
        both, audio, b = hf_inputs(AudioBatch.concat([batch, twin])), hf_inputs(batch), batch.batch_size
        contenders = {
            REFERENCE: lambda: steered_logits(port, batch, layers, beta).logits,
            "lens_audio steered_logits, silence cache off": lambda: steered_logits(cold, batch, layers, beta).logits,
            "lens_audio adaptive_direction then steer(forward)": lambda: _direction_then_steer(
                port, batch, layers, beta
            ),
            "nnsight, one trace (2B rows)": lambda: nnsight_one_trace(traced, both, b, layers, beta),
            "nnsight, two traces (direction, then steered)": lambda: nnsight_two_traces(
                traced, both, audio, b, layers, beta
            ),
            "transformers hooks, one forward (2B rows)": lambda: hooks_scoring(hf, both, b, layers, beta),
            f"transformers hooks, silence rows dropped after layer {max(layers)}": lambda: hooks_scoring(
                hf, both, b, layers, beta, drop_silence=True
            ),
        }
        reference = contenders[REFERENCE]().float()
        scale = float(reference.abs().max())
        effect = float((reference - steered_logits(port, batch, layers, 0.0).logits.float()).abs().max())
        diffs = {name: float((fn().float() - reference).abs().max()) for name, fn in contenders.items()}
        failed = {name: d for name, d in diffs.items() if not d <= TOLERANCE * scale}
        if failed:
            raise RuntimeError(f"batch {size}: logits differ from {REFERENCE!r} (largest logit {scale:.3g}): {failed}")
        if not effect > TOLERANCE * scale:
            raise RuntimeError(f"batch {size}: beta {beta} moves the logits by {effect:.3g} only, within the "
                               "tolerance: the comparison would not test the steering; raise --beta")
        store = silence_prefix_cache(port)
        hits, misses = store.hits, store.misses
        seconds_by = interleaved_medians(contenders, repeats)
        report[str(size)] = {
            "prompt_tokens": int(batch.input_ids.shape[1]),
            "silence_cache_while_timed": {"hits": store.hits - hits, "misses": store.misses - misses},
            "largest_logit": scale,
            "steering_effect_max_abs": effect,
            "rows": {
                name: {
                    "seconds": round(s, 4),
                    "ratio_to_one_pass": round(s / seconds_by[REFERENCE], 3),
                    "max_abs_logit_diff": diffs[name],
                }
                for name, s in seconds_by.items()
            },
        }
    return report


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def table(report: dict) -> str:
    lines = []
    for size, result in report["by_batch"].items():
        lines.append(f"batch {size} ({result['prompt_tokens']} tokens; steering moves the logits by "
                     f"{result['steering_effect_max_abs']:.3g}, largest logit {result['largest_logit']:.3g})")
        lines.append(f"  {'contender':<58} {'seconds':>8} {'ratio':>7} {'max diff':>9}")
        for name, row in result["rows"].items():
            lines.append(f"  {name:<58} {row['seconds']:>8.4f} {row['ratio_to_one_pass']:>7.3f} "
                         f"{row['max_abs_logit_diff']:>9.2e}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/steered_scoring_peers.json")
    parser.add_argument("--small", action="store_true", help="tiny shapes (seconds on a CPU; for the tests)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per contender (default 5; 2 small)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="direction layers (default 4 6; 1 2 small)")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=None, help="clip length (default 10; 1 small)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    shape, n_layers = (SMALL, 4) if args.small else (MID, CPU_BENCHMARK_CONFIG["n_layers"])
    layers = args.layers or ([1, 2] if args.small else [4, 6])
    seconds = args.seconds or (1.0 if args.small else 10.0)
    repeats = args.repeats or (2 if args.small else 5)
    start = time.perf_counter()
    by_batch = compare(shape, n_layers, layers, args.beta, seconds, args.batch_sizes, repeats, args.device)
    report = {
        "task": "adaptive steered scoring: final-position logits, beta * (audio - silence) direction at the last "
                "decoder layer's output",
        "config": {"shape": "small" if args.small else "50M CPU benchmark config", **shape, "decoder_layers": n_layers,
                   "direction_layers": layers, "beta": args.beta, "clip_seconds": seconds, "dtype": "float32",
                   "repeats": repeats, "reference": REFERENCE, "tolerance_of_largest_logit": TOLERANCE},
        "by_batch": by_batch,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     **{p: _version(p) for p in ("transformers", "nnsight", "lens_audio")}},
        "machine": machine(args.device),
    }
    write_report(report, args.out, start, table)


if __name__ == "__main__":
    main()
