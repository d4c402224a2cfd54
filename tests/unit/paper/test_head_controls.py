"""Is it the heads or the depth? The depth-matched and beta-matched controls and the arrival stage, each checked a
second way: a draw equal to the specialists scores their accuracy, a single candidate beta gives the plain control,
the depth range is the patching stage's, and the patching restore equals a hand-written hook."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.analysis.final_position import arrival_layer, best_options
from lens_audio.benchmark import load_mmau
from lens_audio.model.hook_point import block_hook_name
from lens_audio.organisms.benchmark_writer import write_benchmark
from lens_audio.paper import Experiment, ExperimentResult, format_table, head_controls, profile_for
from lens_audio.paper.controls import batches
from lens_audio.paper.text import chosen_by, control_basis, depth_mismatch, significant_heads


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heads_or_depth")
    bench = write_benchmark(folder / "bench", seed=6, n_clips=12, progress=False) / "workshop.json"
    model = HookedAudioLM.from_pretrained("workshop")
    profile = dataclasses.replace(profile_for("workshop"), k_heads=2, n_random_draws=12, betas=(0.5, 6.0),
                                  n_permutations=50, n_bootstrap=50)
    return model, load_mmau(bench), profile, folder / "run"


def experiment(setup, **changes) -> Experiment:
    model, items, profile, out = setup
    return Experiment(model, items, profile.replace(**changes), out, progress=False)


def test_a_draw_equal_to_the_specialists_scores_their_accuracy_in_every_control(setup, monkeypatch):
    e = experiment(setup)
    specialists = e.select_heads().specialists
    sweep = e.sweep_beta()
    beta = sweep.best_beta  # the specialists' beta, by the fast path on dev
    for candidate, table in sweep.steered_by_beta.items():  # which equals a real steered dev run at every beta
        real_dev = e.spec_run("dev", e.spec(specialists, candidate), "steered").correct
        assert table["accuracy"] == pytest.approx(100 * real_dev.mean(), abs=0.01)  # tables round to 0.01
    # the dev intervals resample what the test tables resample (clips where clips repeat), the same way
    dev = e.tables(e.listen("dev"), "dev")["total"]
    assert sweep.baseline["ci_unit"] == dev["ci_unit"] == e.tables(e.listen("test"))["total"]["ci_unit"]
    assert sweep.baseline["ci"] == dev["ci"] and sweep.baseline["accuracy"] == dev["accuracy"]
    monkeypatch.setattr(head_controls, "random_head_draws", lambda *a, **k: [list(specialists)] * 5)
    controls = e.control_distributions(beta)
    drawn = [c for c in controls[:4] if c is not None]
    assert {c.kind for c in drawn} == {"random", "depth-matched", "beta-matched"}  # layer-matched: by construction
    real = e.spec_run("test", e.spec(specialists, beta), "steered").correct[e.focus(e.listen("test"))[0]]
    for c in drawn:
        assert c.specialists_accuracy == pytest.approx(100 * real.mean())
        assert np.all(c.accuracies == c.specialists_accuracy) and c.percentile == 50 and c.tied == 100
        assert c.versus_median.a_only == c.versus_median.b_only == 0
    # the dev sweep of a draw picks the beta the specialists' dev sweep picked
    assert controls.beta_matched.betas == [beta] * 5
    assert any("by construction" in n for n in controls.notes)


def test_beta_matching_with_a_single_candidate_beta_is_the_plain_control(setup):
    e = experiment(setup, betas=(6.0,))
    controls = e.control_distributions(6.0)
    plain, matched = controls.random, controls.beta_matched
    assert matched.kind == "beta-matched" and matched.betas == [6.0] * len(plain.draws)
    assert matched.draws == plain.draws and np.array_equal(matched.accuracies, plain.accuracies)
    assert matched.versus_median.to_json() == plain.versus_median.to_json()
    # with two betas the draws are the same heads, each at its own dev choice
    two = experiment(setup).control_distributions(6.0).beta_matched
    assert two.draws == plain.draws and set(two.betas) <= {0.5, 6.0}


def test_the_depth_range_is_the_patching_stages_and_the_restore_equals_a_hook(setup):
    e = experiment(setup)
    arrival = e.audio_arrival()
    n_layers = e.model.cfg.n_layers
    assert len(arrival.by_layer) == n_layers and arrival.by_layer[-1] == arrival.audio  # last layer: the audio run
    shares = [(v - arrival.silence) / (arrival.audio - arrival.silence) for v in arrival.by_layer]
    first = next(layer for layer in range(n_layers) if min(shares[layer:]) >= arrival.threshold)
    assert arrival.arrival == first and arrival.layers == list(range(first, n_layers))
    depth = e.control_distributions(0.5).depth_matched
    assert depth.layers == arrival.layers and depth.kind == "depth-matched"
    outside = [layer for layer, _ in e.select_heads().specialists if layer not in arrival.layers]
    line = control_basis(SimpleNamespace(head_selection=e.select_heads()), depth)  # the text's and report's line
    assert line.startswith(depth.basis) and ("does not match their depth" in line) == bool(outside), line
    assert all(layer in arrival.layers for draw in depth.draws for layer, _ in draw)
    assert not any(set(draw) & set(e.select_heads().specialists) for draw in depth.draws)
    # the restore of one layer, patched by hand with a hook on the silence run
    rows = [i for i in e.split("calibration") if i.get("hint") == "none"]
    layer, model, right = max(first - 1, 0), e.model, []
    name = block_hook_name(layer, "hook_resid_post")
    for batch, options, answer in batches(e, rows):
        final, index = batch.final_position, torch.arange(batch.batch_size)
        _, cache = model.run_with_cache(batch, names_filter=[name])
        clean = cache[name][index, final]

        def patch(act, hook, clean=clean, final=final):
            act[torch.arange(act.shape[0]), final] = clean.to(act)
            return act

        logits = model.run_with_hooks(batch.silence_twin(), fwd_hooks=[(name, patch)])
        right += list(best_options(logits[index, final], options) == np.asarray(answer))
    assert len(right) == arrival.n and 100 * np.mean(right) == pytest.approx(arrival.by_layer[layer])


def test_arrival_layer_rule():
    assert arrival_layer([0.0, 0.2, 0.95, 0.9, 1.0], 0.9) == 2
    assert arrival_layer([0.0, 0.95, 0.5, 1.0], 0.9) == 3  # every later layer must restore
    assert arrival_layer([1.0, 1.0], 0.9) == 0 and arrival_layer([float("nan"), 1.0], 0.9) is None


def test_the_depth_matched_note_names_specialists_outside_the_draws_range():
    line = depth_mismatch([(1, 0), (2, 3), (5, 1), (6, 2)], [3, 4, 5, 6, 7])
    assert line.startswith("2 of the 4 specialists sit in layers 1, 2, below the draws' range 3-7")
    assert "above" in depth_mismatch([(8, 0), (4, 1)], [3, 4, 5])
    assert depth_mismatch([(3, 0), (7, 1)], [3, 4, 5, 6, 7]) is None


def test_the_significant_heads_carry_their_sign_and_the_rule_says_signed_r():
    r = np.array([[0.1, 0.6], [-0.7, 0.2]])
    null = SimpleNamespace(significant=lambda alpha=0.05: [(0, 1), (1, 0)])  # by |r|: both signs
    heads = SimpleNamespace(correlation=SimpleNamespace(r=r), null=null, rule="r", specialists=[(0, 1), (1, 1)])
    assert significant_heads(heads) == "L0H1, L1H0 (r < 0)"
    assert chosen_by(heads) == "specialists: the top 2 by signed r"
    assert "selection rule 'within'" in chosen_by(SimpleNamespace(rule="within", specialists=[(0, 1)]))


def test_the_controls_travel_in_the_result_json_text(setup):
    e = experiment(setup)
    controls = e.control_distributions(0.5)
    tables = dict.fromkeys(("baseline", "steered", "random_control"), e.tables(e.listen("test")))
    result = ExperimentResult(
        "workshop", e.profile, e.select_heads(), e.sweep_beta(), tables, {},
        controls.random, controls.layer_matched, notes=controls.notes, depth_matched_control=controls.depth_matched,
        beta_matched_control=controls.beta_matched, audio_arrival=e.audio_arrival(),
    )
    back = ExperimentResult.from_json(json.loads(json.dumps(result.to_json())))
    assert json.dumps(back.to_json()) == json.dumps(result.to_json())
    assert list(back.controls) == ["random", "depth-matched", "beta-matched"]
    assert back.audio_arrival.layers == e.audio_arrival().layers
    text = format_table(back)
    assert "depth-matched: specialists" in text and "beta-matched: specialists" in text
    assert "where the audio arrives" in text and f"layers {back.depth_matched_control.layers[0]}" in text
    # the control figure draws each control, the report prints each with its paired statistics and the arrival
    from lens_audio.figures import _statistics_figures
    from lens_audio.report_page import results_tables

    names = [trace.name for trace in _statistics_figures(back)["control_distribution"].data]
    assert any(n.startswith("depth-matched heads") for n in names) and any(n.startswith("beta-matched") for n in names)
    page = results_tables(back)
    assert "<td>depth-matched</td>" in page and "<td>beta-matched</td>" in page
    assert "where the audio has arrived" in page
    assert "Where the audio arrives" in page and f"{back.depth_matched_control.detectable:.1f}" in page


def test_the_hinted_class_or_a_named_field_is_a_validity_stratum(setup):
    from lens_audio.paper.controls import specialist_mass
    from lens_audio.paper.text import format_controls

    e = experiment(setup)
    controls = e.validity_controls(("test",))["test"]
    within = controls.signal.within
    assert {"task", "sub-category", "hinted_choice"} <= set(within)
    # second way: demean the specialists' mass and correctness within each hinted class by hand, then one r
    run = e.listen("test")
    index, _ = e.focus(run)
    mass = specialist_mass(run, e.select_heads().specialists)[index]
    correct = run.correct[index].astype(float)
    hinted = np.array([run.records[i]["hinted_choice"] for i in index])
    x, y = mass.copy(), correct.copy()
    for value in set(hinted):
        x[hinted == value] -= x[hinted == value].mean()
        y[hinted == value] -= y[hinted == value].mean()
    expected = np.corrcoef(x, y)[0, 1] if y.std() > 0 and x.std() > 0 else float("nan")
    assert within["hinted_choice"].r == pytest.approx(expected, nan_ok=True)
    assert controls.signal.n_strata["hinted_choice"] == len(set(hinted))
    text = "\n".join(format_controls(ExperimentResult(
        "w", e.profile, e.select_heads(), None, {}, {}, validity_controls={"test": controls})))
    assert "hinted_choice (" in text and "causal vs r: the 4 heads" in text
    named = experiment(setup, validity_strata=("difficulty",)).validity_controls(("test",))["test"]
    assert "difficulty" in named.signal.within and "hinted_choice" not in named.signal.within


def test_a_draw_on_the_specialists_layers_reads_their_run_instead_of_running_it_again(setup, monkeypatch, tmp_path):
    """Off the fast path (options of several tokens) a residual-source draw whose layers are the specialists' steers
    exactly as they do: the control reads the specialists' test run, and writes no twin under another name."""
    from lens_audio.paper.fast_steering import FastSteering

    model, items, profile, _ = setup
    e = Experiment(model, items, profile.replace(n_random_draws=3, depth_matched_control=False,
                                                 beta_matched_control=False), tmp_path / "run", progress=False)
    specialists = e.select_heads().specialists
    monkeypatch.setattr(FastSteering, "applies", staticmethod(lambda *a: False))
    monkeypatch.setattr(head_controls, "random_head_draws", lambda *a, **k: [list(specialists)] * 3)
    beta = profile.betas[0]
    control = e.control_distributions(beta)[0]
    own = e.spec_run("test", e.spec(specialists, beta), "steered").correct[e.focus(e.listen("test"))[0]]
    assert control.specialists_accuracy == pytest.approx(100 * own.mean()) and np.all(control.accuracies ==
                                                                                      100 * own.mean())
    steered = sorted(p.name for p in (tmp_path / "run").glob("test-steered*.jsonl"))
    assert steered == [f"test-steered-beta{beta}.jsonl"]
