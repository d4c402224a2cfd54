"""The cost plan: printed before the costly stages, its runs those the experiment then makes (counted from the run
files it writes), and `--budget` refusing a larger plan before those stages, naming what lowers it."""

from __future__ import annotations

import copy
import json

import pytest

from lens_audio import cli
from lens_audio.organisms.benchmark_writer import write_benchmark
from lens_audio.paper.cost import cost_plan
from lens_audio.paper.fast_steering import FastSteering


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_benchmark(tmp_path_factory.mktemp("cost") / "b", seed=6, n_clips=12, progress=False) / "workshop.json"


def test_the_budget_refuses_before_the_costly_stages_and_names_the_cheaper_control(bench, tmp_path, capsys):
    argv = ["experiment", "--benchmark", str(bench), "--out", str(tmp_path / "run"), "--betas", "1.0", "--k-heads",
            "2", "--draws", "5"]
    assert cli.main([*argv, "--budget", "10"]) == 1
    captured = capsys.readouterr()
    assert "cost plan (the fast path" in captured.err and "--budget 10" in captured.err and "--draws N" in captured.err
    assert {p.name for p in (tmp_path / "run").glob("*.jsonl")} == {"calibration-baseline.jsonl"}  # nothing more ran
    total = int(next(line for line in captured.err.splitlines() if line.strip().startswith("total")).split()[1]
                .replace(",", ""))
    assert cli.main([*argv, "--budget", str(total)]) == 0  # the same plan within its budget runs


def test_off_the_fast_path_the_plan_counts_the_steered_runs_the_experiment_writes(bench, tmp_path, monkeypatch):
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.paper import Experiment, profile_for

    monkeypatch.setattr(FastSteering, "applies", staticmethod(lambda *a: False))
    model = HookedAudioLM.from_pretrained("workshop")
    profile = profile_for("workshop").replace(k_heads=2, n_random_draws=6, betas=(0.5, 1.0), n_permutations=20,
                                              n_bootstrap=20, depth_matched_control=False, beta_matched_control=False)
    e = Experiment(model, copy.deepcopy(load_mmau(bench)), profile, tmp_path / "run", progress=False)
    plan = {s.stage: s for s in cost_plan(e).stages}
    assert not cost_plan(e).fast
    e.run_all()
    files = {p.name for p in (tmp_path / "run").glob("*.jsonl")}
    assert plan["dev beta sweep"].runs == len([f for f in files if f.startswith("dev-steered-beta")])
    draws = [f for f in files if f.startswith("test-steered-") and not f.startswith("test-steered-beta")]
    assert plan["random-head control"].runs == len(draws)  # distinct layer sets, the specialists' own excluded
    spread = [f for f in files if f.startswith("dev-steered-") and not f.startswith("dev-steered-beta")]
    assert plan["layer spread (dev)"].runs == len(spread)  # one per layer
    n_test = sum(1 for line in (tmp_path / "run" / "test-baseline.jsonl").read_text().splitlines() if line.strip())
    assert plan["random-head control"].items == n_test and json.dumps(plan["random-head control"].why)
