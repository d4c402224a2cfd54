"""Splits for any benchmark (`lens_audio.benchmark.splits`): a seeded split stratified by task with clip groups whole,
checked by recounting; the split file; the refusals (partial stages, test chosen on test, 0 items of a split); and an
experiment on MMAU-shaped items (`split: "test-mini"` on every item) that makes, says and records its split."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from lens_audio.benchmark.items import BenchmarkError
from lens_audio.benchmark.manifest import RunMismatchError
from lens_audio.benchmark.mmau import load_mmau
from lens_audio.benchmark.splits import (
    STAGES,
    BenchmarkSplit,
    SplitNote,
    make_split,
    read_split,
    split_from_field,
    stage_rows,
    stage_split,
)
from lens_audio.paper.profile import ExperimentProfile


def mmau_like(n_clips: int = 90, seed: int = 0) -> list[dict]:
    """MMAU-shaped items: every one `split: "test-mini"`, three tasks of unequal size, 1-3 questions per clip."""
    rng = np.random.default_rng(seed)
    items = []
    for clip in range(n_clips):
        task = ["sound", "music", "speech"][int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
        for q in range(int(rng.integers(1, 4))):
            items.append({"id": f"c{clip}-q{q}", "audio_id": f"./a/{clip}.wav", "task": task,
                          "difficulty": ["easy", "hard"][q % 2], "split": "test-mini"})
    return items


def test_a_seeded_split_keeps_clips_whole_and_each_task_in_proportion():
    items = mmau_like()
    split = make_split(items, seed=3)
    stage_of = split.assignment
    assert set(stage_of) == {i["id"] for i in items}
    # clip groups, recounted from the audio paths: every question of a clip is in one stage
    by_clip = defaultdict(set)
    for item in items:
        by_clip[item["audio_id"]].add(stage_of[item["id"]])
    assert all(len(stages) == 1 for stages in by_clip.values())
    # each task is split near 0.25 / 0.25 / 0.5, recounted from the items (a clip holds at most 3 questions)
    for task in ("sound", "music", "speech"):
        counts = Counter(stage_of[i["id"]] for i in items if i["task"] == task)
        n = sum(counts.values())
        for stage, share in zip(STAGES, (0.25, 0.25, 0.5)):
            assert abs(counts[stage] - share * n) <= 5, (task, counts)
        assert split.counts_by_stratum[task] == {s: counts[s] for s in STAGES}
    total = Counter(stage_of.values())
    assert split.counts() == {s: total[s] for s in STAGES} and abs(total["test"] - len(items) / 2) <= 3
    assert split.stratify == ("task",) and split.seed == 3 and split.sizes == (0.25, 0.25, 0.5)


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    items = mmau_like()
    a, b, c = make_split(items, seed=1), make_split(list(reversed(items)), seed=1), make_split(items, seed=2)
    assert a.assignment == b.assignment and a.digest == b.digest  # the items' order does not matter
    assert a.assignment != c.assignment and a.digest != c.digest
    sized = make_split(items, sizes=(0.1, 0.2, 0.7), seed=1, stratify=("task", "difficulty"))
    assert sized.counts()["test"] > a.counts()["test"] and set(sized.counts_by_stratum) >= {"sound/easy", "music/easy"}


def test_bad_sizes_and_unknown_strata_are_refused_naming_the_fix():
    items = mmau_like(20)
    with pytest.raises(ValueError, match="sum to 1"):
        make_split(items, sizes=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"no item has the field\(s\) \['sub-category'\].*fields present"):
        make_split(items, stratify=("sub-category",))
    # one clip cannot fill three stages
    with pytest.raises(ValueError, match="no calibration or dev items .* give more items"):
        make_split(mmau_like(1))


def test_the_split_file_round_trips_and_an_edited_one_is_refused(tmp_path):
    items = mmau_like(30)
    split = make_split(items, seed=4)
    back = read_split(split.write(tmp_path / "split.json"))
    assert back == split and back.label == split.label and back.counts() == split.counts()
    data = json.loads((tmp_path / "split.json").read_text())
    first = next(iter(data["assignment"]))
    data["assignment"][first] = next(s for s in STAGES if s != data["assignment"][first])
    (tmp_path / "split.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="was edited; remove its 'digest'"):
        read_split(tmp_path / "split.json")
    del data["digest"]
    (tmp_path / "split.json").write_text(json.dumps(data))
    assert read_split(tmp_path / "split.json").assignment[first] == data["assignment"][first]
    with pytest.raises(ValueError, match="does not match the benchmark: 1 benchmark items are not in it"):
        split.check_covers([*items, {"id": "new", "audio_id": "x"}])


def test_a_users_own_field_names_the_stages():
    items = [{**i, "fold": ["a", "b", "c", "c"][k % 4]} for k, i in enumerate(mmau_like(20))]
    split = split_from_field(items, "fold", {"calibration": "a", "dev": "b", "test": "c"})
    assert all(split.assignment[i["id"]] == {"a": "calibration", "b": "dev", "c": "test"}[i["fold"]] for i in items)
    assert split.source == "field fold" and split.seed is None
    with pytest.raises(ValueError, match=r"no item has fold = \['calibration', 'dev', 'test'\].*values here are"):
        split_from_field(items, "fold")


def test_a_partial_or_test_on_test_mapping_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"missing \['dev'\]"):
        ExperimentProfile(splits={"calibration": "calibration", "test": "test"})
    with pytest.raises(ValueError, match="maps calibration and test to the same items.*make a split"):
        ExperimentProfile(splits={"calibration": "test-mini", "dev": "test-mini", "test": "test-mini"})
    with pytest.raises(ValueError, match="maps dev and test"):
        ExperimentProfile(splits={"calibration": "a", "dev": "t", "test": "t"})
    items = [{**i, "split": "calibration" if k % 2 else "test"} for k, i in enumerate(mmau_like(20))]
    assert stage_split(items, ExperimentProfile().splits) is None  # a calibration subset still runs its stage
    with pytest.raises(ValueError, match=r"no items for split 'dev'.*own split values are \['calibration', 'test'\]"
                       r".*--split-file"):
        stage_rows(items, "dev", ExperimentProfile().splits, None)
    own = [{**i, "split": STAGES[k % 3]} for k, i in enumerate(mmau_like(20))]
    assert stage_split(own, ExperimentProfile().splits) is None  # the benchmark's own stages, used as they are
    assert isinstance(stage_split(mmau_like(20), ExperimentProfile().splits), BenchmarkSplit)


def test_load_mmau_with_a_split_no_item_has_names_the_splits_present(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    items = [{"id": k, "audio_id": "./a.wav", "question": "What?", "choices": ["dog", "cat"], "answer": "dog",
              "split": "test-mini"} for k in range(3)]
    (tmp_path / "b.json").write_text(json.dumps(items))
    assert len(load_mmau(tmp_path / "b.json", split="test-mini")) == 3
    with pytest.raises(BenchmarkError, match=r"no item has split 'test'; the file's split values are \['test-mini'\]"):
        load_mmau(tmp_path / "b.json", split="test")


def test_an_experiment_on_mmau_shaped_items_makes_says_and_records_its_split(tmp_path):
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark.manifest import read_manifest
    from lens_audio.organisms.benchmark_writer import write_benchmark
    from lens_audio.paper import Experiment, profile_for

    bench = write_benchmark(tmp_path / "bench", seed=6, n_clips=4, progress=False) / "workshop.json"
    items = [{**i, "split": "test-mini"} for i in load_mmau(bench)]
    model = HookedAudioLM.from_pretrained("workshop")
    profile = dataclasses.replace(profile_for("workshop"), k_heads=2, batch_size=4)
    with pytest.warns(SplitNote, match=r"split \w{16} \(seeded, seed 0, .*\): calibration 3, dev 3, test 6 items"):
        experiment = Experiment(model, items, profile, tmp_path / "run", progress=False)
    made = experiment.benchmark_split
    assert made == make_split(items, seed=0) and read_split(tmp_path / "run" / "split.json") == made
    run = experiment.listen("calibration")
    assert sorted(run.ids) == sorted(i for i, s in made.assignment.items() if s == "calibration")
    assert read_manifest(tmp_path / "run" / "calibration-baseline.jsonl").split == made.label
    assert len(experiment.split("test-mini")) == 12  # the benchmark's own split is still there
    with pytest.raises(ValueError, match=r"no items for split 'test-min'.*own split values are \['test-mini'\]"):
        experiment.split("test-min")
    # another split refuses to resume: the folder's split file, and (without it) every run file's manifest
    other = profile.replace(seed=5)
    assert make_split(items, seed=5).digest != made.digest
    with pytest.raises(ValueError, match="runs were made under the split .*--split-file"):
        Experiment(model, items, other, tmp_path / "run", progress=False)
    (tmp_path / "run" / "split.json").unlink()
    with pytest.warns(SplitNote):
        again = Experiment(model, items, other, tmp_path / "run", progress=False)
    with pytest.raises(RunMismatchError, match=r"split '\w{16} \(seeded, seed 0"):
        again.listen("calibration")
