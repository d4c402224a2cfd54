"""Text dominance as 2026's work measures it: the conflict suite made from any MMAU-format benchmark, and the three
rates, each equal to a count made by hand from the records."""

from __future__ import annotations

import json

import pytest

from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.conflict import base_key, conflict_measures
from lens_audio.benchmark.conflict_suite import HINTS, conflict_suite, write_conflict_suite
from lens_audio.benchmark.splits import clip_group, make_split
from tests.helpers.mmau_shaped import write_mmau_shaped


@pytest.fixture(scope="module")
def mmau(tmp_path_factory):
    return write_mmau_shaped(tmp_path_factory.mktemp("mmau"), n_items=12)


def test_the_suite_is_three_seeded_variants_of_each_item(mmau):
    raw = json.loads(mmau.read_text())
    suite = conflict_suite(raw, seed=3)
    assert len(suite) == 3 * len(raw) and suite == conflict_suite(raw, seed=3)
    assert [v["hinted_choice"] for v in suite] != [v["hinted_choice"] for v in conflict_suite(raw, seed=4)]
    for item, variants in zip(raw, (suite[i : i + 3] for i in range(0, len(suite), 3))):
        assert [v["hint"] for v in variants] == list(HINTS) and {base_key(v) for v in variants} == {item["id"]}
        none, congruent, conflicting = variants
        assert none["question"] == item["question"] and none["hinted_choice"] is None
        assert congruent["hinted_choice"] == item["answer"] and conflicting["hinted_choice"] != item["answer"]
        assert conflicting["hinted_choice"] in item["choices"]
        assert congruent["question"].replace(item["answer"], "X") == conflicting["question"].replace(
            conflicting["hinted_choice"], "X")  # the same sentence, naming another option
    with pytest.raises(ValueError, match="already carry hint conditions"):
        conflict_suite(suite)


def test_the_written_suite_loads_and_a_split_keeps_each_questions_variants_together(mmau):
    path = write_conflict_suite(mmau, seed=1)
    assert path.parent == mmau.parent and path.name == "mmau-test-mini-conflict-seed1.json"
    items = load_mmau(path)
    assert len(items) == 36 and all(i["audio_path"] for i in items)
    split = make_split(items, seed=0)
    stages = {}
    for item in items:
        stages.setdefault(base_key(item), set()).add(split.assignment[str(item["id"])])
    assert all(len(s) == 1 for s in stages.values()) and len({clip_group(i) for i in items}) == 12
    with pytest.raises(ValueError, match="beside its benchmark"):
        write_conflict_suite(mmau, mmau.parent.parent / "elsewhere.json")


def test_the_rates_equal_counts_from_the_records(mmau):
    items = conflict_suite(json.loads(mmau.read_text()), seed=0)
    # answers made up so each case occurs: follow the text, follow the audio, neither
    answers = []
    for i, item in enumerate(items):
        wrong = [c for c in item["choices"] if c not in (item["answer"], item["hinted_choice"])]
        pick = [item["hinted_choice"] or item["answer"], item["answer"], wrong[0] if wrong else item["answer"]][i % 3]
        answers.append(pick)
    records = [{"id": item["id"], "answer": item["answer"], "extracted": a, "correct": a == item["answer"]}
               for item, a in zip(items, answers)]  # as run files hold them: "answer" is the right one
    silence = [{"id": r["id"], "extracted": r["extracted"] if k % 4 else "silence"} for k, r in enumerate(records)]
    clusters = [base_key(i) for i in items]
    m = conflict_measures(records, items, clusters, silence)
    conflicting = [(r, i) for r, i in zip(records, items) if i["hint"] == "conflicting"]
    text = sum(r["extracted"] == i["hinted_choice"] for r, i in conflicting)
    audio = sum(r["correct"] for r, i in conflicting)
    assert m.overall["text_dominance"]["n"] == text + audio
    assert m.overall["text_dominance"]["accuracy"] == round(100 * text / (text + audio), 2)
    neutral = {i["base_id"]: r["extracted"] for r, i in zip(records, items) if i["hint"] == "none"}
    flips = [r["extracted"] != neutral[i["base_id"]] for r, i in conflicting]
    assert m.overall["same_audio_flip"]["accuracy"] == round(100 * sum(flips) / len(flips), 2)
    assert m.overall["silence_flip"]["accuracy"] == round(100 * sum(k % 4 == 0 for k in range(len(records)))
                                                          / len(records), 2)
    music = [(r, i) for r, i in conflicting if i["task"] == "music"]
    text_music = sum(r["extracted"] == i["hinted_choice"] for r, i in music)
    decided = text_music + sum(r["correct"] for r, i in music)
    assert m.by_field["task"]["music"]["text_dominance"]["accuracy"] == round(100 * text_music / decided, 2)
    assert m.overall["text_dominance"]["ci_unit"] == "item"  # one conflicting item per question
    assert "text dominance" in m.describe() and type(m).from_json(json.loads(json.dumps(m.to_json()))) == m
    with pytest.raises(ValueError, match="no item has hint 'conflicting'"):
        conflict_measures(records[:1], items[:1])


def test_breakdowns_in_mmau_order_and_none_that_renames_the_hint_conditions(mmau):
    items = conflict_suite(json.loads(mmau.read_text()), seed=0)
    for item in items:
        item["sub-category"] = f"{item['hint']} hint"  # as the workshop benchmarks write it
    records = [{"id": i["id"], "extracted": i["answer"], "correct": True} for i in items]
    m = conflict_measures(records, items)
    assert "sub-category" not in m.by_field and list(m.by_field["difficulty"]) == ["easy", "medium", "hard"]
