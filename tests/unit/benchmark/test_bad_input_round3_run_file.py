"""Round 3 of bad input, run files edited by hand: a record that lost or changed a field the run reads is refused
naming the file, the line and the item (not a KeyError later), and the run resumes once the line is deleted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.manifest import RunMismatchError
from lens_audio.benchmark.runner import run_benchmark

RUN = dict(template="letters", mode="choice", batch_size=4, progress=False)


def edit_line(path, number, edit):
    lines = path.read_text().splitlines()
    record = json.loads(lines[number - 1])
    edit(record)
    lines[number - 1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    return record["id"]


@pytest.mark.parametrize("edit,says", [
    (lambda r: r.pop("correct"), "'correct' must be true or false, not 'missing'"),
    (lambda r: r.update(correct="yes"), "'correct' must be true or false, not 'yes'"),
    (lambda r: r.pop("output"), "'output' must be a string"),
    (lambda r: r.pop("listening"), "'listening' must be a [layer][head] table of finite numbers, not missing"),
    (lambda r: r.update(listening=[[0.1, "x"]]), "'listening' must be a [layer][head] table"),
    (lambda r: r.update(listening=[[0.5] * 4]), "'listening' is 1x4, the other records' 2x4"),
])
def test_hand_edited_record_names_the_file_line_and_item(own_model, small_bench, tmp_path, edit, says):
    items, path = load_mmau(small_bench)[:4], tmp_path / "run.jsonl"
    first = run_benchmark(own_model, items, path, **RUN)
    item_id = edit_line(path, 3, edit)
    with pytest.raises(RunMismatchError) as refused:
        run_benchmark(own_model, items, path, **RUN)
    assert f"run.jsonl, line 3: the record of item {item_id!r}" in str(refused.value) and says in str(refused.value)
    # deleting the line (the fix the message names) reruns that item alone: the answers of the first run, and its
    # listening signal up to batch padding's float rounding (a second computation)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    again = run_benchmark(own_model, items, path, **RUN)
    assert [r["output"] for r in again] == [r["output"] for r in first] and (again.correct == first.correct).all()
    assert np.allclose(again.listening, first.listening, atol=1e-5)
