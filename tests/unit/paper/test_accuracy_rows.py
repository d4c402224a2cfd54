"""The rows the printed table and the report share: MMAU's breakdowns in its order, none that repeats the total or
renames the hint conditions, each row's numbers those of the tables computed from the records."""

from __future__ import annotations

from lens_audio.benchmark.report import mmau_report
from lens_audio.paper.results import accuracy_cell, accuracy_rows


def record(i: int, **fields) -> dict:
    return {"id": i, "correct": i % 3 != 0, **fields}


def test_breakdowns_in_mmau_order_without_repeats():
    hints = ("none", "congruent", "conflicting")
    records = [record(i, task=("sound", "music")[i % 2], difficulty=("hard", "easy", "medium")[(i // 2) % 3],
                      hint=hints[i % 3], **{"sub-category": f"{hints[i % 3]} hint"}) for i in range(30)]
    tables = mmau_report(records)
    tables["hint"] = {h: t for h, t in (("none", None), ("congruent", None), ("conflicting", None))}
    for h in hints:  # the hint tables as the experiment computes them, from the same records
        tables["hint"][h] = mmau_report([r for r in records if r["hint"] == h])["total"]
    rows = accuracy_rows(tables)
    labels = [label for _, _, label in rows]
    assert labels[:6] == ["total", "music", "sound", "difficulty: easy", "difficulty: medium", "difficulty: hard"]
    assert not [label for label in labels if label.startswith("sub-category")]  # the hint conditions renamed
    assert labels[6:] == list(hints)
    for table, key, _ in rows:
        cell = accuracy_cell(tables, table, key)
        field = {"total": None, "hint": "hint"}.get(table, table)
        chosen = [r for r in records if field is None or str(r[field]) == key]
        assert cell["n"] == len(chosen) and cell["accuracy"] == round(100 * sum(r["correct"] for r in chosen)
                                                                       / len(chosen), 2)


def test_one_difficulty_repeats_the_total_and_is_left_out():
    records = [record(i, task="speech", difficulty="easy", **{"sub-category": ("a", "b")[i % 2]}) for i in range(8)]
    labels = [label for _, _, label in accuracy_rows(mmau_report(records))]
    assert labels == ["total", "speech", "sub-category: a", "sub-category: b"]
