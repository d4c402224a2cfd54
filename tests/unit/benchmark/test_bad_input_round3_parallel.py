"""Round 3 of bad input, data-parallel merges: ranks launched with different settings are refused, and the merged run
file takes the ranks' manifest (every field, the SNR of a noise run included), so relaunching a finished run resumes.

Two ranks are simulated in one process by two threads (each with its own copy of the model): `rank_and_size`,
`gather` and the barrier are replaced by thread-local and threading equivalents, so `sharded_run` runs as under
`torchrun` up to the transport (tests/unit/benchmark/test_parallel.py launches real processes)."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from lens_audio.benchmark import load_mmau, parallel
from lens_audio.benchmark.manifest import RunMismatchError, read_manifest
from lens_audio.benchmark.run_file import read_records
from lens_audio.benchmark.runner import run_benchmark

RUN = dict(template="letters", mode="choice", batch_size=2, progress=False, listening=False)


@pytest.fixture
def two_ranks(monkeypatch):
    """`launch(model, items, out, [kwargs of rank 0, kwargs of rank 1])` -> each rank's result or exception."""
    local, size = threading.local(), 2
    exchange, meet = [None] * size, threading.Barrier(size, timeout=300)

    def gather(value):
        exchange[local.rank] = value
        meet.wait()
        values = list(exchange)
        meet.wait()
        return values

    monkeypatch.setattr(parallel, "rank_and_size", lambda: (local.rank, size))
    monkeypatch.setattr(parallel, "gather", gather)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: meet.wait())

    def launch(model, items, out, kwargs):
        results: list = [None] * size

        def rank_main(rank):
            local.rank = rank
            try:
                results[rank] = parallel.sharded_run(copy.deepcopy(model), items, out, **kwargs[rank])
            except Exception as exc:  # noqa: BLE001 - the test inspects it
                results[rank] = exc

        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        return results

    return launch


def test_ranks_with_different_templates_are_refused_on_every_rank(own_model, small_bench, tmp_path, two_ranks):
    items, out = load_mmau(small_bench)[:4], tmp_path / "run.jsonl"
    results = two_ranks(own_model, items, out, [RUN, {**RUN, "template": "instruct"}])
    for rank, result in enumerate(results):
        assert isinstance(result, RunMismatchError), f"rank {rank} returned {result!r}"
        text = str(result)
        assert "different settings" in text and "run.rank1-of-2.jsonl" in text
        assert "prompt 'letters' -> 'instruct'" in text
    assert not out.exists()  # nothing merged: no file holding two manifests' records


def test_noise_run_merges_its_snr_and_a_finished_run_resumes(own_model, small_bench, tmp_path, two_ranks):
    items, out = load_mmau(small_bench)[:4], tmp_path / "noisy.jsonl"
    kwargs = {**RUN, "noise_snr_db": 5.0}
    first = two_ranks(own_model, items, out, [kwargs, kwargs])
    assert all(not isinstance(r, Exception) for r in first), first
    merged = read_manifest(out)
    assert merged.noise_snr_db == 5.0 and merged.digest == read_manifest(parallel.rank_path(out, 0, 2)).digest
    # a second computation: the one-process run of the same items and noise gives the same records
    single = run_benchmark(own_model, items, tmp_path / "single.jsonl", **kwargs)
    records = read_records(out)
    assert [records[i["id"]] for i in items] == [dict(r) for r in single]  # outputs, scores and digests
    # relaunching the finished sweep resumes (old code: the merged manifest lacked the SNR and was refused)
    again = two_ranks(own_model, items, out, [kwargs, kwargs])
    assert all(not isinstance(r, Exception) for r in again), again
    assert [r["id"] for r in again[0]] == [i["id"] for i in items] and read_records(out) == records
    # and a one-process run resumes from the merged file without a forward
    resumed = run_benchmark(own_model, items, out, **kwargs)
    assert [dict(r) for r in resumed] == [records[i["id"]] for i in items]
