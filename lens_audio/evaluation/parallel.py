"""Data-parallel runs and scans over the processes of `accelerate launch` or `torchrun` (one per GPU, or per node).

Launched with N processes, `sharded_run` deals the items out a batch at a time (batch k to rank k mod N, the
same split on every launch, each batch as in one process), runs each rank's share with `run_benchmark` into
the rank's own resumable run file (`NAME.rank{r}-of-{N}.jsonl`, with its manifest), gathers every rank's
records, and returns the whole run in item order on every rank; rank 0 also writes the merged run file
`NAME.jsonl`, which a one-process run resumes from as if it had made it. A rank that dies loses only its
unfinished items: launch the same command again and the finished ranks have nothing left to do while that
rank resumes from its file. `sharded_scan_heads` splits a head-ablation scan's passes the same way. In one
process (no launcher) both are the plain calls.

Processes talk through `torch.distributed` as accelerate sets it up (`PartialState`): NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lens_audio.evaluation.results import RunResult

if TYPE_CHECKING:
    from lens_audio.analysis.ablation import AblationScan
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def launched() -> bool:
    """Whether this process is one of several started by `accelerate launch` or `torchrun`."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_state():
    """accelerate's `PartialState` (initialising `torch.distributed` once), or None in a single process."""
    if not launched():
        return None
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())  # without GPUs: gloo over CPU processes


def rank_and_size() -> tuple[int, int]:
    state = process_state()
    return (0, 1) if state is None else (state.process_index, state.num_processes)


def shard(items: Sequence[Any], rank: int, size: int, block: int = 1) -> list[Any]:
    """Rank `rank`'s share of `items`: blocks of `block` consecutive items dealt out in turn (deterministic).

    With `block` the batch size, every batch holds the same items as in one process, so batched numbers
    (float rounding depends on a row's neighbours' padding) are identical too.
    """
    if block < 1:
        raise ValueError(f"block must be at least 1, got {block}.")
    blocks = [items[start : start + block] for start in range(0, len(items), block)]
    return [item for chunk in blocks[rank::size] for item in chunk]


def rank_path(path: str | Path, rank: int, size: int) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}-of-{size}{path.suffix}")


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (`[value]` in one process)."""
    if not launched():
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def sharded_run(model: "HookedAudioLM", items: Sequence[dict[str, Any]], out_path: str | Path | None,
                **kwargs: Any) -> RunResult:
    """`run_benchmark(model, items, out_path, **kwargs)` with the items split over the launched processes.

    Records and every array equal a one-process run's: each batch holds the same items as there (a resumed
    run's batches are those of its pending items, as in one process).
    """
    from lens_audio.evaluation.runner import run_benchmark

    rank, size = rank_and_size()
    if size == 1:
        return run_benchmark(model, items, out_path, **kwargs)
    mine = shard(items, rank, size, block=kwargs.get("batch_size", 8))
    path = None if out_path is None else rank_path(out_path, rank, size)
    kwargs["progress"] = kwargs.get("progress", True) and rank == 0
    own = run_benchmark(model, mine, path, **kwargs)
    by_id = {record["id"]: record for part in gather(own.records) for record in part}
    records = [by_id[item["id"]] for item in items]
    if out_path is not None and rank == 0:
        _write_merged(model, items, out_path, kwargs)
    if out_path is not None:
        torch.distributed.barrier()
    listening = kwargs.get("listening", True)
    signal = np.array([r["listening"] for r in records], dtype=np.float32) if listening and records else None
    return RunResult(records, signal)


def _write_merged(model, items, out_path, kwargs) -> None:
    """Rank 0: append to the merged run file the records it lacks, taken from the rank files (their records
    carry the digests of the same manifest, which the merged file gets too)."""
    from lens_audio.evaluation.manifest import run_manifest
    from lens_audio.evaluation.run_file import RunFile, read_records

    _, size = rank_and_size()
    done: dict[Any, dict] = {}
    for rank in range(size):
        done.update(read_records(rank_path(out_path, rank, size)))
    manifest = run_manifest(
        model, kwargs.get("template", "instruct"), kwargs.get("mode", "generate"),
        max_new_tokens=kwargs.get("max_new_tokens", 32), listening=kwargs.get("listening", True),
        silence=kwargs.get("silence", False), steering=kwargs.get("steering"), settings=kwargs.get("settings"),
        batch_size=kwargs.get("batch_size", 8),
    )
    with RunFile(out_path, manifest, kwargs.get("fresh", False)) as run:
        for item in items:
            if item["id"] not in run.records:
                run.append(done[item["id"]])


def sharded_scan_heads(model: "HookedAudioLM", batch: "AudioBatch", choice_ids, answer_index, kind="zero",
                       heads_per_pass: int = 8, reference=None) -> "AblationScan":
    """`scan_heads` with its passes (`heads_per_pass` heads each) split over the launched processes; the map
    equals the one-process scan's (each pass holds the same heads as there)."""
    from lens_audio.analysis.ablation import AblationScan, ablate_heads, scan_heads

    rank, size = rank_and_size()
    if size == 1:
        return scan_heads(model, batch, choice_ids, answer_index, kind, heads_per_pass, reference)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    groups = [[(layer, head)] for layer in range(n_layers) for head in range(n_heads)]
    passes = [groups[start : start + heads_per_pass] for start in range(0, len(groups), heads_per_pass)]
    mine = [group for p in shard(range(len(passes)), rank, size) for group in passes[p]]
    change = accuracy = torch.zeros(0)
    if mine:
        change, accuracy, base_margin, base_accuracy = ablate_heads(
            model, batch, choice_ids, answer_index, kind, mine, heads_per_pass, reference
        )
    else:  # more ranks than passes: this rank only measures the baseline, for the same numbers everywhere
        _, _, base_margin, base_accuracy = ablate_heads(
            model, batch, choice_ids, answer_index, kind, groups[:1], heads_per_pass, reference
        )
    parts = gather((change.cpu(), accuracy.cpu()))
    by_pass: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for r, (c, a) in enumerate(parts):
        offset = 0
        for p in shard(range(len(passes)), r, size):
            k = len(passes[p])
            by_pass[p] = (c[offset : offset + k], a[offset : offset + k])
            offset += k
    shape = (n_layers, n_heads)
    change = torch.cat([by_pass[p][0] for p in range(len(passes))]).view(shape)
    accuracy = torch.cat([by_pass[p][1] for p in range(len(passes))]).view(shape)
    return AblationScan(change, accuracy, base_margin, base_accuracy, kind)
