"""Data-parallel runs and scans over the processes of `accelerate launch` or `torchrun` (one per GPU, or per node).

Launched with N processes, `sharded_run` deals the items out a batch at a time (batch k to rank k mod N, the
same split on every launch, each batch as in one process), runs each rank's share with `run_benchmark` into
the rank's own resumable run file (`NAME.rank{r}-of-{N}.jsonl`, with its manifest), gathers every rank's
records, and returns the whole run in item order on every rank; rank 0 also writes the merged run file
`NAME.jsonl`, which a one-process run resumes from as if it had made it. The merged file's manifest is the ranks'
manifest, read from their files (every field, the SNR of a noise run included, so relaunching a finished run resumes);
ranks whose manifests differ (another template or setting on one rank) are refused on every rank, naming the
ranks and what differs, before anything is merged. A rank that dies loses only its
unfinished items: launch the same command again and the finished ranks have nothing left to do while that
rank resumes from its file. `sharded_scan_heads` splits a head-ablation scan's passes the same way. In one
process (no launcher) both are the plain calls.

Processes talk through `torch.distributed` as accelerate sets it up (`PartialState`): NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lens_audio.benchmark.manifest import RunManifest, RunMismatchError, read_manifest
from lens_audio.benchmark.run_result import RunResult

if TYPE_CHECKING:
    from lens_audio.analysis.ablation import AblationScan
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


LAUNCHER_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")  # set with WORLD_SIZE by torchrun and accelerate launch


def launched() -> bool:
    """Whether this process is one of several started by `accelerate launch` or `torchrun`.

    `WORLD_SIZE` above 1 alone is not enough: one left in the environment of a plain run (exported by an earlier
    job) would make this process wait for peers that never come, so it is refused, naming the variables, unless
    the launcher's other variables (`LAUNCHER_VARIABLES`) are set too.
    """
    import os

    text = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(text)
    except ValueError:
        raise RuntimeError(f"the environment variable WORLD_SIZE={text!r} is not a whole number; unset it (a plain "
                           "run) or start the processes with torchrun / accelerate launch.") from None
    if size <= 1:
        return False
    missing = [name for name in LAUNCHER_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={size} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                           "not, so this process was not started by torchrun or accelerate launch and would wait for "
                           "peers that never come; unset WORLD_SIZE for a one-process run (`env -u WORLD_SIZE ...`), "
                           "or launch with `accelerate launch` / `torchrun --nproc_per_node N`.")
    return True


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


def sharded_map(function: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
    """`[function(task) for task in tasks]`, with the tasks dealt out to the launched processes (task k to rank
    k mod N) and every result returned, in task order, on every rank. Results travel between processes pickled
    (`gather`), their tensors moved to the CPU first. In one process, the plain list (tensors where `function`
    left them)."""
    rank, size = rank_and_size()
    if size == 1:
        return [function(task) for task in tasks]
    own = [_on_cpu(function(task)) for task in shard(tasks, rank, size)]
    results: list[Any] = [None] * len(tasks)
    for r, part in enumerate(gather(own)):
        for index, result in zip(shard(range(len(tasks)), r, size), part):
            results[index] = result
    return results


def _on_cpu(value: Any) -> Any:
    """`value` with every tensor in it (through tuples, lists and dicts) moved to the CPU, for the exchange."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, (tuple, list)):
        return type(value)(_on_cpu(v) for v in value)
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    return value


def sharded_run(model: "HookedAudioLM", items: Sequence[dict[str, Any]], out_path: str | Path | None,
                **kwargs: Any) -> RunResult:
    """`run_benchmark(model, items, out_path, **kwargs)` with the items split over the launched processes.

    Records and every array equal a one-process run's: each batch holds the same items as there (a resumed
    run's batches are those of its pending items, as in one process).
    """
    from lens_audio.benchmark.runner import run_benchmark

    rank, size = rank_and_size()
    if size == 1:
        return run_benchmark(model, items, out_path, **kwargs)
    mine = shard(items, rank, size, block=kwargs.get("batch_size", 8))
    path = None if out_path is None else rank_path(out_path, rank, size)
    show = kwargs.get("progress", True) and rank == 0
    description = kwargs.get("description", "evaluating")
    bar = None
    if show and out_path is not None:  # rank 0 shows the whole job, read from every rank's run file
        bar = JobProgress([rank_path(out_path, r, size) for r in range(size)], len(items),
                          f"{description} (all {size} processes)")
        kwargs["progress"] = False
    else:
        kwargs["progress"] = show
        kwargs["description"] = f"{description} (rank 0's share)" if show else description
    try:
        own = run_benchmark(model, mine, path, **kwargs)
        manifest = None if path is None else read_manifest(path)
        parts = gather((own.records, None if manifest is None else manifest.to_json()))
    finally:
        if bar is not None:
            bar.close()
    by_id = {record["id"]: record for records, _ in parts for record in records}
    records = [by_id[item["id"]] for item in items]
    if out_path is not None:
        shared = common_manifest(out_path, [stored for _, stored in parts])  # every rank refuses alike
        if rank == 0:
            _write_merged(items, out_path, shared, kwargs.get("fresh", False))
    if out_path is not None:
        torch.distributed.barrier()
    listening = kwargs.get("listening", True)
    signal = np.array([r["listening"] for r in records], dtype=np.float32) if listening and records else None
    return RunResult(records, signal)


class JobProgress:
    """Rank 0's progress bar over a whole sharded run: a background thread counts the records (whole lines) in
    every rank's run file once a second, reading only what was appended since the last look. It can show a
    count but never block: the ranks meet only in `gather`, which closes the bar at the job's total."""

    def __init__(self, paths: Sequence[Path], total: int, description: str, every: float = 1.0) -> None:
        import threading

        from tqdm.auto import tqdm

        self.paths, self.total, self.every = list(paths), total, every
        self.seen = {path: (0, 0) for path in self.paths}  # bytes read, whole lines counted
        self.bar = tqdm(total=total, initial=self.count(), desc=description)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def count(self) -> int:
        """Records written so far over all the rank files (an append-only file's new bytes only; a file that
        shrank, restarted with `fresh`, is counted anew)."""
        for path in self.paths:
            read, lines = self.seen[path]
            try:
                size = path.stat().st_size
                if size < read:
                    read, lines = 0, 0
                with open(path, "rb") as file:
                    file.seek(read)
                    new = file.read(size - read)
            except FileNotFoundError:
                read, lines, new = 0, 0, b""
            self.seen[path] = (read + len(new), lines + new.count(b"\n"))
        return min(self.total, sum(lines for _, lines in self.seen.values()))

    def _poll(self) -> None:
        while not self.stopped.wait(self.every):
            self.bar.n = self.count()
            self.bar.refresh()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.bar.n = self.count()
        self.bar.close()


def common_manifest(out_path: str | Path, stored: Sequence[dict[str, Any] | None]) -> RunManifest:
    """The one manifest of every rank's run file (`stored`: each rank's manifest as JSON, in rank order), which the
    merged file takes; a `RunMismatchError` naming the ranks and what differs if they were launched with different
    settings (or a rank's manifest is missing)."""
    size = len(stored)
    missing = [rank for rank, data in enumerate(stored) if data is None]
    if missing:
        raise RunMismatchError(
            f"{out_path}: the run files of rank(s) {missing} ({rank_path(out_path, missing[0], size)}) have no "
            f"manifest, so their records cannot be merged; relaunch the same command (or with --fresh) on every rank.")
    manifests = [RunManifest.from_json(data) for data in stored]
    first = manifests[0]
    for rank, other in enumerate(manifests[1:], start=1):
        if other.digest != first.digest:
            raise RunMismatchError(
                f"{out_path}: the ranks were launched with different settings, so their records cannot be merged: "
                f"rank 0 ({rank_path(out_path, 0, size).name}) -> rank {rank} "
                f"({rank_path(out_path, rank, size).name}): "
                f"{'; '.join(first.differences(other))}; launch every rank with the same command and settings.")
    return first


def _write_merged(items: Sequence[dict[str, Any]], out_path: str | Path, manifest: RunManifest, fresh: bool) -> None:
    """Rank 0: append to the merged run file the records it lacks, taken from the rank files (their records
    carry the digest of `manifest`, the ranks' common manifest, which the merged file gets too)."""
    from lens_audio.benchmark.run_file import RunFile, read_records

    _, size = rank_and_size()
    done: dict[Any, dict] = {}
    for rank in range(size):
        done.update(read_records(rank_path(out_path, rank, size)))
    with RunFile(out_path, manifest, fresh) as run:
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


def sharded_patch_residual_by_position(model: "HookedAudioLM", clean: "AudioBatch", corrupted: "AudioBatch", metric,
                                       site: str = "hook_resid_pre", group_audio: bool | str = True,
                                       columns_per_pass: int = 8):
    """`patch_residual_by_position` with its layers dealt out to the launched processes (layer L to rank L mod N:
    patching from layer L runs the blocks from L on, so dealing in turn balances the work); the table equals the
    one-process table (each cell is computed as there) and every rank returns it."""
    from lens_audio.analysis.patching import patch_residual_by_position

    rank, size = rank_and_size()
    if size == 1:
        return patch_residual_by_position(model, clean, corrupted, metric, site, group_audio, columns_per_pass)
    mine = shard(range(model.cfg.n_layers), rank, size)
    table, labels = patch_residual_by_position(model, clean, corrupted, metric, site, group_audio, columns_per_pass,
                                               layers=mine)
    for r, part in enumerate(gather(table[mine].cpu())):
        table[shard(range(model.cfg.n_layers), r, size)] = part
    return table, labels
