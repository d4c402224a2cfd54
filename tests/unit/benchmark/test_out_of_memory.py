"""Out of memory during a run: the batch halves from there on (said once per halving), the records are those of a
run that never ran out, and a single item that does not fit stops the run with its name, keeping what was done."""

from __future__ import annotations

import json

import pytest

from lens_audio.benchmark import load_mmau, runner
from lens_audio.benchmark.runner import OUT_OF_MEMORY, run_benchmark
from lens_audio.model.memory import NotEnoughMemory


def fits(monkeypatch, rows: int, refuse: set[str] = frozenset()) -> list[int]:
    """Make `_score_chunk` run out of memory on chunks of more than `rows` items, or holding an item of `refuse`;
    returns the list of chunk sizes it was called with."""
    real, sizes = runner._score_chunk, []

    def score(model, chunk, *args):
        sizes.append(len(chunk))
        if len(chunk) > rows or {i["id"] for i in chunk} & refuse:
            raise OUT_OF_MEMORY("CUDA out of memory. Tried to allocate 3.90 GiB")
        return real(model, chunk, *args)

    monkeypatch.setattr(runner, "_score_chunk", score)
    return sizes


def answers(path):
    return [(r["id"], r["answer"], r["correct"]) for r in map(json.loads, path.read_text().splitlines())]


def test_the_batch_halves_and_the_records_equal_an_uninterrupted_run(own_model, small_bench, tmp_path, monkeypatch):
    items = load_mmau(small_bench)
    plain = run_benchmark(own_model, items, tmp_path / "plain.jsonl", batch_size=3, progress=False)
    assert len(items) == 6
    sizes = fits(monkeypatch, rows=1)
    with pytest.warns(UserWarning, match="out of memory scoring") as caught:
        backed = run_benchmark(own_model, items, tmp_path / "backed.jsonl", batch_size=6, progress=False)
    assert sizes == [6, 3, 1, 1, 1, 1, 1, 1]  # halved twice (6, 3, then 1), then kept
    said = [str(w.message) for w in caught if "out of memory" in str(w.message)]
    assert [s.split(":")[0] for s in said] == ["out of memory scoring 6 items at once", "out of memory scoring 3 items "
                                                                                         "at once"]
    assert [(r["id"], r["answer"]) for r in backed.records] == [(r["id"], r["answer"]) for r in plain.records]
    assert answers(tmp_path / "backed.jsonl") == answers(tmp_path / "plain.jsonl")


def test_an_item_that_does_not_fit_alone_is_named_and_the_run_resumes(own_model, small_bench, tmp_path, monkeypatch):
    items = load_mmau(small_bench)
    bad = items[4]["id"]
    fits(monkeypatch, rows=1, refuse={bad})
    with pytest.warns(UserWarning, match="out of memory"), pytest.raises(NotEnoughMemory) as error:
        run_benchmark(own_model, items, tmp_path / "run.jsonl", batch_size=4, progress=False)
    assert repr(bad) in str(error.value) and "--dtype bfloat16" in str(error.value) and "resumes" in str(error.value)
    kept = [r[0] for r in answers(tmp_path / "run.jsonl")]
    assert kept and bad not in kept  # what was scored before it is on disk
    monkeypatch.undo()
    resumed = run_benchmark(own_model, items, tmp_path / "run.jsonl", batch_size=4, progress=False)
    assert len(resumed.records) == len(items) and len(answers(tmp_path / "run.jsonl")) == len(items)
