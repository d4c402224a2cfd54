"""The researcher's path, end to end on this machine: an MMAU test-mini-shaped file (no calibration/dev/test items,
2-8 choices, one-element-list categories, mono and stereo clips of 1-39 s) and a random checkpoint of Qwen2-Audio's
real audio front end loaded by Hub id from the local cache; `lens-audio experiment` then `lens-audio figures` on the
same folder. The split is printed and recorded, the breakdowns MMAU reports (pooled total, task, difficulty,
sub-category) equal a second computation from the run files, and clips over the window are recorded as truncated."""

from __future__ import annotations

import json
import warnings
from collections import defaultdict

import huggingface_hub
import pytest

from lens_audio import cli
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.splits import make_split, read_split
from lens_audio.paper.profile import ProfileFallbackWarning
from tests.helpers.mmau_shaped import cache_random_qwen2_audio, write_mmau_shaped


@pytest.fixture(scope="module")
def researcher(tmp_path_factory):
    root = tmp_path_factory.mktemp("researcher")
    bench = write_mmau_shaped(root / "mmau", n_items=36)
    repo = cache_random_qwen2_audio(root / "hub")
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root / "hub"))
    yield root, bench, repo
    patch.undo()


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_hand(rows, field):
    """Accuracy (%) per value of `field`, counted from run records."""
    groups = defaultdict(list)
    for r in rows:
        groups[r[field]].append(bool(r["correct"]))
    return {k: round(100 * sum(v) / len(v), 2) for k, v in groups.items()}


def test_experiment_then_figures_on_an_mmau_shaped_file(researcher, capsys):
    root, bench, repo = researcher
    out, figures = root / "run", root / "figures"
    argv = ["experiment", "--model", repo, "--benchmark", str(bench), "--out", str(out), "--mode", "choice",
            "--k-heads", "2", "--betas", "1.0", "--draws", "4", "--batch-size", "4", "--json", str(root / "all.json")]
    with warnings.catch_warnings():  # no registered profile for this Hub id: the default (said once per process)
        warnings.simplefilter("ignore", ProfileFallbackWarning)
        assert cli.main(argv) == 0
    captured = capsys.readouterr()
    # the split is made (no calibration/dev/test items), said at the start, written beside the runs and recorded
    split = read_split(out / "split.json")
    assert split == make_split(load_mmau(bench), seed=0)
    assert "lens-audio: note: split " in captured.err and split.digest in captured.err
    result = json.loads((root / "all.json").read_text())
    assert result["manifest"]["split"] == split.label
    assert result["profile"]["mode"] == "choice" and result["profile"]["choice_scoring"] == "mean"  # the default
    # MMAU's breakdowns in the JSON and the printed table equal a count from the test run file
    test_rows = records(out / "test-baseline.jsonl")
    assert len(test_rows) == sum(1 for s in split.assignment.values() if s == "test")
    tables = result["test"]["baseline"]
    assert tables["total"]["accuracy"] == round(100 * sum(r["correct"] for r in test_rows) / len(test_rows), 2)
    for field in ("task", "difficulty", "sub-category"):
        assert {k: v["accuracy"] for k, v in tables[field].items()} == by_hand(test_rows, field), field
    for sub, accuracy in by_hand(test_rows, "sub-category").items():
        line = next(line for line in captured.out.splitlines() if line.startswith(f"sub-category: {sub} "))
        assert f"{accuracy:6.2f}" in line
    # mixed choice counts ran, and clips over the 30 s window are recorded as truncated
    choices = {str(i["id"]): len(i["choices"]) for i in load_mmau(bench)}
    assert len({choices[str(r["id"])] for r in test_rows}) > 2
    every = [r for f in out.glob("*-baseline.jsonl") for r in records(f)]
    long = [r for r in every if r.get("truncated_s")]
    assert long and all(r["truncated_s"] == pytest.approx(9.0, abs=0.01) for r in long)

    # the figures follow the experiment's recorded settings on the same folder
    assert cli.main(["figures", "--runs", str(out), "--out", str(figures), "--formats", "html"]) == 0
    captured = capsys.readouterr()
    assert "following the experiment" in captured.err
    report = (figures / "report.html").read_text()
    assert "sub-category: " in report and "difficulty: " in report
    assert repo in report
