"""The experiment's command-line stages on the workshop model and a small benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lens_audio import cli
from lens_audio.organisms.benchmark_writer import write_benchmark
from lens_audio.paper.results import ExperimentResult


def test_stages_run_and_share_their_files(tmp_path, capsys):
    # seed 6: calibration holds errors (with none, r is undefined for every head and selection stops)
    bench = write_benchmark(tmp_path / "bench", seed=6, n_clips=12, progress=False) / "workshop.json"
    common = [
        "--benchmark",
        str(bench),
        "--out",
        str(tmp_path / "run"),
        "--betas",
        "0.5",
        "1.0",
        "--k-heads",
        "2",
        "--draws",
        "30",
    ]
    assert cli.main(["experiment", *common, "--json", str(tmp_path / "all.json")]) == 0
    result = ExperimentResult.from_json(json.loads((tmp_path / "all.json").read_text()))
    assert set(result.test) == {"baseline", "steered", "random_control"}
    assert (
        result.beta in (0.5, 1.0)
        and len(result.head_selection.specialists) == 2
        and result.profile.n_random_draws == 30
    )
    assert set(result.head_selection.specialists).isdisjoint(result.head_selection.control)
    test_items = 3 * 6  # half the clips are test, three hint conditions each
    assert result.test["baseline"]["total"]["n"] == test_items
    # the paired comparison agrees with the two runs' tables
    paired = result.paired["steered vs baseline (all)"]
    assert paired.accuracy_a == pytest.approx(result.test["steered"]["total"]["accuracy"], abs=0.01)
    assert paired.accuracy_b == pytest.approx(result.test["baseline"]["total"]["accuracy"], abs=0.01)
    control = result.control
    assert len(control.draws) == 30 and all(not set(d) & set(result.head_selection.specialists) for d in control.draws)
    assert control.specialists_accuracy == pytest.approx(
        result.test["steered"]["hint"]["conflicting"]["accuracy"], abs=0.01
    )
    assert not [n for n in result.notes if "disagree" in n]  # the fast path agreed with the steered run on every item
    # residual steering: layer-matched draws share the specialists' direction, so they are stated, not drawn
    assert result.layer_matched_control is None and any("by construction" in n for n in result.notes)
    # is it the heads or the depth? depth-matched draws from the arrival stage's layers, beta-matched draws
    assert list(result.controls) == ["random", "depth-matched", "beta-matched"]
    assert result.depth_matched_control.layers == result.audio_arrival.layers
    assert result.beta_matched_control.draws == control.draws and len(result.beta_matched_control.betas) == 30
    # each v1 clip is asked three times (once per hint condition): pooled intervals resample clips
    assert result.test["baseline"]["total"]["ci_unit"] == "clip"
    assert result.test["baseline"]["hint"]["conflicting"]["ci_unit"] == "item"
    controls = result.validity_controls["test"]
    n_conflicting = result.test["baseline"]["hint"]["conflicting"]["n"]
    assert controls.items == "conflicting" and controls.n == n_conflicting
    # the specialists' r agrees with the held-out validity computed another way (signal_validity)
    assert controls.signal.audio.r == pytest.approx(result.validity["test"]["conflicting"].r, abs=1e-9)
    from scipy import stats

    records = [json.loads(line) for line in (tmp_path / "run" / "test-baseline.jsonl").read_text().splitlines()]
    conflicting = [r for r in records if r["hint"] == "conflicting"]
    layer, head = result.head_selection.specialists[0]
    expected = stats.pearsonr([r["listening"][layer][head] for r in conflicting], [r["correct"] for r in conflicting])
    assert controls.r_audio[layer, head] == pytest.approx(expected.statistic, abs=1e-5)
    assert (tmp_path / "run" / "test-silence.jsonl").exists() and controls.causal is not None
    assert set(controls.causal_exact) >= {f"L{l}H{h}" for l, h in result.head_selection.specialists}
    assert set(result.layer_spread.accuracy_by_layer) == set(
        range(result.head_selection.correlation.shape[0])
    )  # every layer
    assert "gate=signal" in result.options and "steering_source=head_outputs" in result.options
    assert json.dumps(result.to_json()) == json.dumps(ExperimentResult.from_json(result.to_json()).to_json())
    # text dominance: the baseline's ratio and flip rates equal counts from its run files
    items = {str(i["id"]): i for i in json.loads(bench.read_text())}
    rows = [json.loads(line) for line in (tmp_path / "run" / "test-baseline.jsonl").read_text().splitlines()]
    silent = {r["id"]: r["extracted"] for r in map(json.loads, (tmp_path / "run" / "test-silence.jsonl").open())}
    conflicting = [r for r in rows if items[r["id"]]["hint"] == "conflicting"]
    text = sum(r["extracted"] == items[r["id"]]["hinted_choice"] for r in conflicting)
    audio = sum(r["correct"] for r in conflicting)
    measured = result.conflict["baseline"].overall
    assert measured["text_dominance"]["accuracy"] == round(100 * text / (text + audio), 2)
    flips = sum(r["extracted"] != silent[r["id"]] for r in rows)
    assert measured["silence_flip"]["accuracy"] == round(100 * flips / len(rows), 2)
    assert result.conflict["steered"].overall["silence_flip"] is None  # no steered silence run to compare with
    files = {f.name for f in (tmp_path / "run").iterdir()}
    assert {"calibration-baseline.jsonl", "dev-baseline.jsonl", "test-baseline.jsonl"} <= files
    assert not [f for f in files if f.startswith("dev-steered")]  # the dev sweep took the fast path
    before = (tmp_path / "run" / "test-baseline.jsonl").read_text()
    capsys.readouterr()
    assert cli.main(["evaluate", *common, "--beta", str(result.beta), "--json", str(tmp_path / "eval.json")]) == 0
    assert (tmp_path / "run" / "test-baseline.jsonl").read_text() == before  # reused, not recomputed
    assert json.loads((tmp_path / "eval.json").read_text())["test"] == result.test
    assert cli.main(["select-heads", *common]) == 0 and "random control:" in capsys.readouterr().out
    from lens_audio.analysis.validity import NoiseSweep

    assert cli.main(["noise-sweep", *common, "--snrs", "-20", "--json", str(tmp_path / "noise.json")]) == 0
    sweep = NoiseSweep.from_json(json.loads((tmp_path / "noise.json").read_text()))
    clean, noisy = sweep.points
    assert clean.snr_db is None and noisy.snr_db == -20.0 and (tmp_path / "run" / "noise_sweep.html").exists()
    assert clean.accuracy["all"] == pytest.approx(result.test["baseline"]["total"]["accuracy"], abs=0.01)
    noisy_run = [json.loads(line) for line in (tmp_path / "run" / "test-noise-20dB.jsonl").read_text().splitlines()]
    assert noisy.accuracy["all"] == pytest.approx(100 * np.mean([r["correct"] for r in noisy_run]))


def test_experiment_result_round_trips_through_json(tmp_path):
    from lens_audio.analysis.heads import correlate_heads
    from lens_audio.analysis.statistics import control_distribution, max_r_permutation, mcnemar, signal_validity
    from lens_audio.paper.profile import profile_for
    from lens_audio.paper.results import BetaSweep, HeadSelection, LayerSpread

    rng = np.random.default_rng(0)
    mass, correct = rng.random((40, 3, 2)), rng.random(40) < 0.7
    mass[:, 0, 0] = 0.2  # a constant head: NaN r must survive the round trip
    selection = HeadSelection(
        correlate_heads(mass, correct, n_bootstrap=20),
        max_r_permutation(mass, correct, 50),
        [(1, 0), (2, 1)],
        [(0, 1), (1, 1)],
        0.3,
        int((~correct).sum()),
    )
    draws = [[(0, 1), (1, 1)]] * 5
    result = ExperimentResult(
        "m",
        profile_for("workshop"),
        selection,
        BetaSweep(
            {"accuracy": 50.0, "n": 4, "ci": [0.0, 100.0]}, {0.5: {"accuracy": 75.0, "n": 4, "ci": [25.0, 100.0]}}, 0.5
        ),
        {"baseline": {"total": {"accuracy": 50.0, "n": 4, "ci": [0.0, 100.0]}}},
        {"s vs b": mcnemar(correct, ~correct)},
        control_distribution(correct[:10], rng.random((5, 10)) < 0.5, draws),
        None,
        {"dev": {"all": signal_validity(mass[:, 1, 0], correct)}},
        LayerSpread("conflicting", 0.5, {0: 50.0, 1: 70.0}),
        {"gate=signal": {"0.5": 60.0}},
        mass.mean(0),
        ["a note"],
    )
    result.save(tmp_path / "r.json")
    back = ExperimentResult.load(tmp_path / "r.json")
    assert back.to_json() == result.to_json()
    assert back.profile.prompt is result.profile.prompt  # the workshop's prompt function, restored by name
    assert np.isnan(back.head_selection.correlation.r[0, 0]) and back.layer_spread.spread == 20.0
    assert back.control.draws == result.control.draws and back.head_selection.specialists == [(1, 0), (2, 1)]
    older = result.to_json()
    older["heads"] = older.pop("head_selection")  # files written before the rename still load
    assert ExperimentResult.from_json(older).to_json() == result.to_json()
    with pytest.warns(DeprecationWarning, match="head_selection"):
        assert result.heads is result.head_selection


def test_figures_command_writes_every_figure_and_the_report(tmp_path):
    from lens_audio.figures import FIGURES

    bench = write_benchmark(tmp_path / "bench", seed=6, n_clips=12, progress=False) / "workshop.json"
    assert (
        cli.main(
            ["figures", "--benchmark", str(bench), "--out", str(tmp_path / "figs"), "--runs", str(tmp_path / "runs")]
        )
        == 0
    )
    written = {p.name for p in (tmp_path / "figs").iterdir()}
    expected = {f"{name}.png" for name in FIGURES} - {"patching.png"}  # patching needs audio and silence to differ
    assert expected <= written and "report.html" in written
    report = (tmp_path / "figs" / "report.html").read_text()
    assert "baseline" in report and all(f"{name}.png" in report for name in FIGURES if f"{name}.png" in written)


def test_locate_runs_on_the_experiments_heads_and_writes_its_file(tmp_path):
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.paper.experiment import Experiment
    from lens_audio.paper.locate import main
    from lens_audio.paper.profile import profile_for

    bench = write_benchmark(tmp_path / "bench", seed=7, n_clips=12, progress=False) / "workshop.json"
    main(["--benchmark", str(bench), "--out", str(tmp_path / "run"), "--betas", "1.0"])
    result = json.loads((tmp_path / "run" / "locate.json").read_text())
    experiment = Experiment(
        HookedAudioLM.from_pretrained("workshop"),
        load_mmau(bench),
        profile_for("workshop"),
        tmp_path / "run",
        progress=False,
    )
    dev = experiment.listen("dev")
    focus = dev.correct[[c == "conflicting" for c in dev.conditions]]
    assert result["layer_grid"][0]["accuracy"] == pytest.approx(
        100 * focus.mean(), abs=0.01
    )  # unsteered row = the dev baseline
    n = experiment.model.cfg.n_layers
    assert len(result["layer_grid"]) == 1 + n + (
        n - 1
    )  # the final site for every source layer, the same layer for all but the last
    assert [tuple(h) for h in result["specialist_head_outputs"][0]["heads"]] == experiment.select_heads().specialists


def test_best_beta_takes_the_highest_accuracy_and_the_smaller_beta_on_a_tie():
    from lens_audio.paper.results import best_beta

    assert best_beta({4.0: {"accuracy": 50.0}, 1.0: {"accuracy": 50.0}, 2.0: {"accuracy": 40.0}}) == 1.0
    assert best_beta({1.0: {"accuracy": 40.0}, 2.0: {"accuracy": 50.0}, 4.0: {"accuracy": 50.0}}) == 2.0
    assert best_beta({8.0: {"accuracy": 61.0}, 0.5: {"accuracy": 60.0}}) == 8.0
