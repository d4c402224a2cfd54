"""Data-parallel runs on 2 CPU processes (gloo) equal one process, a dead rank resumes, and the scans shard: head
ablation, residual patching by layer, the fast-steering collection pass, any `sharded_map`; rank 0's bar shows the
whole job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lens_audio.benchmark.parallel import rank_path, shard
from lens_audio.benchmark.run_file import read_records
from lens_audio.organisms.benchmark_writer import write_benchmark

ROOT = Path(__file__).resolve().parents[3]
WORKER = ROOT / "tests" / "helpers" / "dp_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(benchmark: Path, out: Path, processes: int, progress: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "DP_PROGRESS": "1" if progress else "0"}
    env.pop("WORLD_SIZE", None)
    launcher = [] if processes == 1 else [
        "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={_free_port()}",
    ]
    done = subprocess.run([sys.executable, *launcher, str(WORKER), str(benchmark), str(out)], env=env,
                          timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, f"{processes} process(es) failed:\n{done.stderr[-12000:]}"
    return {**json.loads((out / f"result-{processes}.json").read_text()), "stderr": done.stderr}


def test_shards_are_deterministic_and_cover_every_item_once():
    items = list(range(11))
    parts = [shard(items, rank, 3) for rank in range(3)]
    assert sorted(i for part in parts for i in part) == items and [len(p) for p in parts] == [4, 4, 3]
    assert shard(items, 1, 2, block=3) == [3, 4, 5, 9, 10]  # batches of 3: the second and the fourth
    assert rank_path("runs/calibration.jsonl", 1, 3) == Path("runs/calibration.rank1-of-3.jsonl")


@pytest.fixture(scope="module")
def workshop_json(tmp_path_factory) -> Path:
    folder = write_benchmark(tmp_path_factory.mktemp("bench") / "w", seed=2, n_clips=2, progress=False)
    return folder / "workshop.json"


def test_two_processes_equal_one_and_a_dead_rank_resumes_alone(workshop_json, tmp_path):
    one = _launch(workshop_json, tmp_path / "one", 1)
    two = _launch(workshop_json, tmp_path / "two", 2, progress=True)
    # records (outputs, correctness, listening signal), the head scan, the patching table, the fast-steering
    # states and a sharded_map's results, exactly
    assert {k: v for k, v in two.items() if k != "stderr"} == {k: v for k, v in one.items() if k != "stderr"}
    assert one["squares"] == [0, 1, 4, 9, 16] and not np.isnan(np.array(one["patching"])).any()
    # rank 0's bar counts the whole job (both ranks' items), not its own share
    assert "evaluating (all 2 processes)" in two["stderr"] and "4/4" in two["stderr"]
    assert len(one["records"]) == 4 and len({r["id"] for r in one["records"]}) == 4
    merged, single = read_records(tmp_path / "two" / "run.jsonl"), read_records(tmp_path / "one" / "run.jsonl")
    assert merged.keys() == single.keys()
    assert all({k: v for k, v in merged[i].items()} == single[i] for i in single)  # the same records, digests too

    # Rank 1 dies after its first item: its file keeps one whole record and a torn line; the merged file is gone.
    out = tmp_path / "two"
    rank0, rank1 = rank_path(out / "run.jsonl", 0, 2), rank_path(out / "run.jsonl", 1, 2)
    lines = rank1.read_text().splitlines()
    rank1.write_text(lines[0] + "\n" + '{"id": "cut off mid-wri')
    (out / "run.jsonl").unlink()
    before = rank0.read_text()
    resumed = _launch(workshop_json, out, 2)
    # Rank 1's last item now runs in a batch of its own, as a one-process resume would: the same outputs, and
    # listening signals that move by float rounding only.
    assert resumed["scan"] == one["scan"] and len(resumed["records"]) == len(one["records"])
    for got, want in zip(resumed["records"], one["records"]):
        assert {k: v for k, v in got.items() if k != "listening"} == {k: v for k, v in want.items() if k != "listening"}
        assert np.allclose(got["listening"], want["listening"], atol=1e-5)
    assert rank0.read_text() == before  # rank 0 had nothing left to do
    assert read_records(out / "run.jsonl").keys() == single.keys()


def test_the_job_bar_counts_whole_lines_of_every_rank_file_and_restarts_with_a_rewritten_file(tmp_path):
    from lens_audio.benchmark.parallel import JobProgress

    files = [rank_path(tmp_path / "run.jsonl", r, 2) for r in range(2)]
    files[0].write_text('{"id": 1}\n{"id": 2}\n')
    bar = JobProgress(files, total=5, description="job", every=60)  # polled by hand below
    try:
        assert bar.count() == 2  # rank 1's file does not exist yet
        files[1].write_text('{"id": 3}\n{"id": 4')  # a line still being written is not a record yet
        assert bar.count() == 3
        with open(files[1], "a") as f:
            f.write('}\n{"id": 5}\n{"id": 6}\n')
        assert bar.count() == 5  # six records, never past the total
        files[0].write_text("")  # a fresh start shrinks the file: counted anew
        assert bar.count() == 4
    finally:
        bar.close()
    assert bar.bar.n == 4



def test_the_whole_experiment_on_two_processes_equals_one(tmp_path):
    """`torchrun --nproc_per_node 2 -m lens_audio.cli experiment` (what `accelerate launch --multi_gpu
    --num_processes 2` starts on a CPU) gives the one-process `--json`, every statistic included: runs split by
    batch, the fast-steering states by batch, the random draws by layer set."""
    # seed 2: the workshop model gets 3 of its 6 calibration items right (r needs errors to correlate with)
    bench = write_benchmark(tmp_path / "bench", seed=2, n_clips=8, progress=False) / "workshop.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    results = {}
    for processes in (1, 2):
        launcher = [] if processes == 1 else [
            "-m", "torch.distributed.run", f"--nproc_per_node={processes}", f"--master_port={_free_port()}",
        ]
        out = tmp_path / f"p{processes}"
        command = [sys.executable, *launcher, "-m", "lens_audio.cli", "experiment", "--benchmark", str(bench),
                   "--out", str(out / "run"), "--betas", "0.5", "1.0", "--k-heads", "2", "--draws", "20",
                   "--json", str(out / "result.json")]
        subprocess.run(command, env=env, check=True, timeout=900, capture_output=True)
        results[processes] = _without_creation_time(json.loads((out / "result.json").read_text()))
    assert results[2] == results[1]
    assert read_records(tmp_path / "p2" / "run" / "test-baseline.jsonl").keys() == read_records(
        tmp_path / "p1" / "run" / "test-baseline.jsonl").keys()


def _without_creation_time(value):
    """A result with its manifests' creation times left out (everything else must match)."""
    if isinstance(value, dict):
        return {k: _without_creation_time(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list):
        return [_without_creation_time(v) for v in value]
    return value
