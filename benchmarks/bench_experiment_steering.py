"""The experiment's steered runs against its plain runs: decoder prefills per batch and wall time, in one run.

    python benchmarks/bench_experiment_steering.py --out benchmarks/results/experiment_steering.json

On the shipped workshop model (float32) and its bundled benchmark (the test split's conflicting items, the
experiment's focus), in generate and choice mode under the workshop profile, each contender is a whole
`Experiment.run` of the same items (in memory, no run file):

1. plain: `experiment.run(items, None)`, the reference of the ratios;
2. steered, one pass: `experiment.steered_run` from the calibration specialists at `--beta` (the profile's options:
   residual source, `resid_post`, no gate); the runner takes `SteeringSpec.generate` / `.logits`;
3. steered, two passes: the same spec's hooks only (its `__call__`: a direction pass, then the steered pass), the
   path the experiment took before `SteeringSpec`;
4. and 5. the same two for the head-output source with the signal gate (the options' hardest case: the gate's
   audio mass is read in the steered forward too; the two-pass path runs a listening pass besides).

Counted per batch, at block 0 (the counts do not depend on the machine): *as the issue counted them*, every
forward of `blocks.0` over more than one position, seen by a forward hook (a hook turns the silence-prefix
sharing off, so the one pass holds the audio and silence rows); and *unobserved* (the block's `forward` wrapped,
no hook), the prompt-wide forwards (as long as the batch's prompt) apart from the shorter ones of the silence
twins' text tails and prefixes (`silence_prefix`). The records of each one-pass contender are checked to equal
its two-pass contender's before timing. Wall time: medians of `--repeats` round-robin runs
(`lens_audio.timing.interleaved_medians`; its warm-up run leaves the silence-prefix cache warm, as an experiment's
many runs over the same items do), as ratios to the plain run of the same mode.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from lens_audio import HookedAudioLM
from lens_audio.benchmark import load_mmau
from lens_audio.organisms import benchmark_for
from lens_audio.paper import Experiment, SteeringSpec, profile_for
from lens_audio.timing import interleaved_medians, machine, write_report

REFERENCE = "plain"


class HooksOnly:
    """A spec seen through its hooks only (no `generate`/`logits`): the runner's two-pass path."""

    def __init__(self, spec: SteeringSpec) -> None:
        self.spec = spec

    def __call__(self, model, batch, start: int = -1):
        return self.spec(model, batch, start)


@contextlib.contextmanager
def block0_lengths(model: HookedAudioLM, hooked: bool) -> Iterator[list]:
    """Record the positions of every `blocks.0` forward, and "batch" where the runner builds each batch. `hooked`:
    by a forward hook (silence-prefix sharing off); else by wrapping `forward` and `to_batch` (nothing hooked)."""
    block, seen = model.blocks[0], []
    original_to_batch = model.to_batch

    def to_batch(*args, **kwargs):
        seen.append("batch")
        return original_to_batch(*args, **kwargs)

    model.to_batch = to_batch
    if hooked:
        handle = block.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[1]))
    else:
        original = block.forward

        def counted(resid, *args, **kwargs):
            seen.append(resid.shape[1])
            return original(resid, *args, **kwargs)

        block.forward = counted
    try:
        yield seen
    finally:
        del model.to_batch
        if hooked:
            handle.remove()
        else:
            del block.forward


def per_batch(seen: list) -> list[list[int]]:
    """The multi-position forwards (prefills; a generation step has one position) of each batch."""
    batches: list[list[int]] = []
    for entry in seen:
        if entry == "batch":
            batches.append([])
        elif entry > 1:
            batches[-1].append(entry)
    return batches


def prefill_counts(model: HookedAudioLM, run: Callable[[], object]) -> dict:
    with block0_lengths(model, hooked=True) as seen:
        run()
    hooked = per_batch(seen)
    with block0_lengths(model, hooked=False) as seen:
        run()
    unobserved = per_batch(seen)
    wide = [sum(n == max(lengths) for n in lengths) for lengths in unobserved]
    return {
        "as_counted_in_the_issue_per_batch": [len(lengths) for lengths in hooked],
        "unobserved_prompt_wide_per_batch": wide,
        "unobserved_shorter_per_batch": [len(lengths) - w for lengths, w in zip(unobserved, wide)],
        "prompt_positions_per_batch": [max(lengths) for lengths in unobserved],
    }


def measure(model, items, profile, selection, beta: float, mode: str, repeats: int, out: Path) -> dict:
    """Prefill counts and interleaved wall times of the five contenders in `mode` (see the module docstring); the
    runs are in memory (`out` stays empty)."""
    experiment = Experiment(model, items, profile.replace(mode=mode), out, progress=False)
    specialists = selection.specialists
    spec = experiment.spec(specialists, beta)
    gated = SteeringSpec.from_profile(profile.replace(steering_source="head_outputs", gate="signal"), specialists,
                                      beta, selection=selection)
    contenders = {
        REFERENCE: lambda: experiment.run(items, None),
        "steered, one pass": lambda: experiment.steered_run(items, None, specialists, beta),
        "steered, two passes": lambda: experiment.run(items, None, HooksOnly(spec), settings=spec.settings()),
        "head outputs + signal gate, one pass": lambda: experiment.run(items, None, gated,
                                                                        settings=gated.settings()),
        "head outputs + signal gate, two passes": lambda: experiment.run(items, None, HooksOnly(gated),
                                                                          settings=gated.settings()),
    }
    outputs = {name: [(r["output"], r["correct"]) for r in fn()] for name, fn in contenders.items()}
    for one, two in (("steered, one pass", "steered, two passes"),
                     ("head outputs + signal gate, one pass", "head outputs + signal gate, two passes")):
        if outputs[one] != outputs[two]:
            raise RuntimeError(f"{mode}: {one!r} and {two!r} differ in their records")
    if outputs["steered, one pass"] == outputs[REFERENCE]:
        raise RuntimeError(f"{mode}: steering at beta {beta} changes no answer: raise --beta")
    counts = {name: prefill_counts(model, fn) for name, fn in contenders.items()}
    seconds = interleaved_medians(contenders, repeats)
    return {
        "accuracy": {name: round(100 * sum(c for _, c in out) / len(out), 2) for name, out in outputs.items()},
        "rows": {
            name: {"seconds": round(s, 4), "ratio_to_plain": round(s / seconds[REFERENCE], 3), **counts[name]}
            for name, s in seconds.items()
        },
    }


def table(report: dict) -> str:
    lines = []
    for mode, result in report["by_mode"].items():
        lines.append(f"{mode} mode ({report['config']['items']} items, batch {report['config']['batch_size']})")
        lines.append(f"  {'contender':<40} {'seconds':>8} {'ratio':>6}  prefills/batch (issue; unobserved wide+short)")
        for name, row in result["rows"].items():
            issue = row["as_counted_in_the_issue_per_batch"]
            wide, short = row["unobserved_prompt_wide_per_batch"], row["unobserved_shorter_per_batch"]
            lines.append(f"  {name:<40} {row['seconds']:>8.4f} {row['ratio_to_plain']:>6.3f}  {issue}; {wide}+{short}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/experiment_steering.json")
    parser.add_argument("--items", type=int, default=64, help="test conflicting items per run (default 64)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--beta", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    model = HookedAudioLM.from_pretrained("workshop")
    bundled = load_mmau(benchmark_for("workshop"))
    items = [i for i in bundled if i["split"] == "test" and i.get("hint") == "conflicting"][: args.items]
    profile = profile_for("workshop").replace(batch_size=args.batch_size, n_permutations=50, n_bootstrap=50)
    with tempfile.TemporaryDirectory() as tmp:  # the calibration run's file
        calibration = Experiment(model, bundled, profile, tmp, progress=False)
        selection = calibration.select_heads()  # the specialists and the gate's reference mass, as the experiment's
        by_mode = {
            mode: measure(model, items, profile, selection, args.beta, mode, args.repeats, Path(tmp) / mode)
            for mode in ("generate", "choice")
        }
    report = {
        "task": "the experiment's steered runs against its plain runs (workshop model): decoder prefills per batch "
                "at block 0 and wall-time ratios in the same run",
        "config": {"model": "workshop", "dtype": "float32", "items": len(items), "split": "test, conflicting",
                   "batch_size": args.batch_size, "beta": args.beta, "specialists": selection.specialists,
                   "reference_mass": selection.reference_mass, "max_new_tokens": profile.max_new_tokens,
                   "repeats": args.repeats, "reference": REFERENCE},
        "by_mode": by_mode,
        "machine": machine(),
    }
    write_report(report, args.out, start, table)


if __name__ == "__main__":
    main()
