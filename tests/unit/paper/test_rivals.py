"""Adaptive steering against its rivals from one command on the workshop model: every method chosen on dev and read
once on test, its numbers equal to counts from its run files, the paired statistics those of the two runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lens_audio import cli
from lens_audio.analysis.statistics import mcnemar
from lens_audio.files import escape_html
from lens_audio.organisms.benchmark_writer import write_benchmark
from lens_audio.paper.rival_results import run_identity, saved_comparison
from lens_audio.paper.rivals import RivalComparison, back_patch_grid, verdict


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("rivals")
    bench = write_benchmark(root / "bench", seed=6, n_clips=12, progress=False) / "workshop.json"
    argv = ["rivals", "--benchmark", str(bench), "--out", str(root / "run"), "--betas", "1.0", "3.0", "--k-heads",
            "2", "--json", str(root / "rivals.json"), "--mask-steps", "40", "80", "--control-draws", "3"]
    assert cli.main(argv) == 0
    return root, bench, RivalComparison.from_json(json.loads((root / "rivals.json").read_text()))


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_method_is_chosen_on_dev_and_read_from_its_own_test_run(compared):
    root, bench, comparison = compared
    methods = {m.method: m for m in comparison.methods}
    assert list(methods) == ["baseline", "adaptive steering (specialists)", "fixed direction (specialists' layers)",
                             "audio-contrastive correction", "back-patching", "attention scaling (specialists)",
                             "attention scaling (random heads)", "head mask (trained)", "head mask (random heads)"]
    items = {i["id"]: i for i in json.loads(bench.read_text())}
    for method, run in (("fixed direction (specialists' layers)", "fixed-direction"),
                        ("audio-contrastive correction", "audio-contrastive"), ("back-patching", "back-patching"),
                        ("attention scaling (specialists)", "audio-attention-scale-specialists"),
                        ("head mask (trained)", "head-mask-trained")):
        m = methods[method]
        best = max(m.dev, key=lambda s: (m.dev[s], -list(m.dev).index(s)))  # the best on dev
        assert m.setting.split(":")[0] == best
        [path] = root.glob(f"run/test-rival-{run}-*.jsonl")
        rows = records(path)
        assert m.test["total"]["accuracy"] == round(100 * np.mean([r["correct"] for r in rows]), 2)
        conflicting = [r for r in rows if items[r["id"]]["hint"] == "conflicting"]
        text = sum(r["extracted"] == items[r["id"]]["hinted_choice"] for r in conflicting)
        audio = sum(r["correct"] for r in conflicting)
        assert m.conflict.overall["text_dominance"]["accuracy"] == round(100 * text / (text + audio), 2)
    assert len(list(root.glob("run/dev-rival-back-patching-*.jsonl"))) == len(back_patch_grid(8))
    assert not list(root.glob("run/test-steered-L*"))  # adaptive steering is the experiment's own run, not a twin


def test_the_head_masks_are_the_trained_ones_and_the_control_a_distribution_of_random_masks(compared):
    root, bench, comparison = compared
    saved = json.loads((root / "run" / "calibration-head-mask.json").read_text())
    assert saved["settings"]["checkpoints"] == [40, 80] and sorted(saved["training"]["masked"]) == ["40", "80"]
    methods = {m.method: m for m in comparison.methods}
    trained, control = methods["head mask (trained)"], methods["head mask (random heads)"]
    chosen = trained.setting.split(":")[0].removeprefix("step ")
    heads = saved["training"]["masked"][chosen]
    [trained_path] = root.glob(f"run/test-rival-head-mask-trained-step-{chosen}.jsonl")
    manifest = json.loads(trained_path.with_suffix(".manifest.json").read_text())
    assert f'"heads": {json.dumps(heads)}' in manifest["steering"]  # the run records the heads it masked
    assert trained.setting == f"step {chosen}: {len(heads)} heads" and trained.forwards == control.forwards == 1
    assert control.setting == f"{len(heads)} heads, median of 3 draws"
    draws = sorted(root.glob(f"run/test-rival-head-mask-random-heads-{len(heads)}-heads-draw-*.jsonl"))
    assert len(draws) == 3
    items = {i["id"]: i for i in json.loads(bench.read_text())}
    focus = [i for i, item in items.items() if item["split"] == "test" and item["hint"] == "conflicting"]
    accuracy = []
    for path in draws:  # each draw: as many heads, none of the trained mask's, its own run
        drawn = json.loads(json.loads(path.with_suffix(".manifest.json").read_text())["steering"][len("HeadMask("):-1])
        assert len(drawn["heads"]) == len(heads) and not set(map(tuple, drawn["heads"])) & set(map(tuple, heads))
        correct = {r["id"]: r["correct"] for r in records(path)}
        accuracy.append(100 * np.mean([correct[i] for i in focus]))
    distribution = comparison.controls["head mask (trained)"]
    assert sorted(distribution.accuracies) == pytest.approx(sorted(accuracy))
    mine = {r["id"]: r["correct"] for r in records(trained_path)}  # the trained mask's own test run
    ours = 100 * np.mean([mine[i] for i in focus])
    below = sum(a < ours - 1e-9 for a in accuracy) + 0.5 * sum(abs(a - ours) < 1e-9 for a in accuracy)
    assert distribution.percentile == pytest.approx(100 * below / 3)
    assert control.test["hint"]["conflicting"]["accuracy"] == pytest.approx(
        accuracy[[int(p.stem.rsplit("-", 1)[1]) for p in draws].index(distribution.median_draw)], abs=0.01)
    scaling = comparison.controls["attention scaling (specialists)"]  # the same kind of control for attention scaling
    runs = sorted(root.glob("run/test-rival-audio-attention-scale-random-heads-draw-*.jsonl"))
    assert len(runs) == len(scaling.draws) == 3
    assert all(not set(map(tuple, d)) & set(map(tuple, comparison.specialists)) for d in scaling.draws)
    row = next(m for m in comparison.methods if m.method == "attention scaling (random heads)")
    assert row.setting == f"{len(comparison.specialists)} heads, median of 3 draws"


def test_the_paired_statistics_are_those_of_the_two_runs(compared):
    root, bench, comparison = compared
    items = json.loads(bench.read_text())
    conflicting = [i["id"] for i in items if i["split"] == "test" and i["hint"] == "conflicting"]
    baseline = {r["id"]: r["correct"] for r in records(root / "run" / "test-baseline.jsonl")}
    [path] = root.glob("run/test-rival-audio-contrastive-*.jsonl")
    contrastive = {r["id"]: r["correct"] for r in records(path)}
    expected = mcnemar([contrastive[i] for i in conflicting], [baseline[i] for i in conflicting])
    got = next(m for m in comparison.methods if m.method == "audio-contrastive correction")
    paired = got.paired["audio-contrastive correction vs baseline (conflicting)"]
    assert (paired.a_only, paired.b_only, paired.n) == (expected.a_only, expected.b_only, expected.n)
    assert paired.p_value == pytest.approx(expected.p_value)
    assert "vs adaptive steering" in " ".join(got.paired) and "fwd" in comparison.describe()
    other = [i["id"] for i in items if i["split"] == "test" and i["hint"] != "conflicting"]
    cost = got.paired["audio-contrastive correction vs baseline (other)"]  # what it costs where the text agrees
    assert cost.n == len(other) and cost.accuracy_b == pytest.approx(
        100 * np.mean([baseline[i] for i in other]), abs=0.01)
    assert (root / "run" / "rivals.html").exists()  # the figure: gained on conflicting items vs lost elsewhere
    line = f"audio-contrastive correction {verdict(paired)} baseline"
    assert line in comparison.verdicts() and line in comparison.describe()
    assert verdict(paired) == ("beats" if paired.p_value < 0.05 and paired.ci[0] > 0 else
                               "is beaten by" if paired.p_value < 0.05 and paired.ci[1] < 0 else
                               "is not shown to differ from")
    assert len(comparison.verdicts()) == 2 * (len(comparison.methods) - 2) + 1  # each vs baseline and vs adaptive


def test_generation_mode_decodes_every_method(tmp_path):
    """In generate mode each method's dev and test runs decode (contrastive decoding for the contrast), and the
    records are generated answers, scored as the experiment scores them."""
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.paper import Experiment, profile_for

    bench = write_benchmark(tmp_path / "bench", seed=6, n_clips=6, progress=False) / "workshop.json"
    model = HookedAudioLM.from_pretrained("workshop")
    profile = profile_for("workshop").replace(mode="generate", max_new_tokens=4, betas=(1.0, 3.0), k_heads=2,
                                              n_random_draws=5, n_bootstrap=200)
    experiment = Experiment(model, load_mmau(bench), profile, tmp_path / "run", progress=False)
    comparison = experiment.rivals(alphas=(1.0,), scales=(2.0,), patches=[], mask_steps=(60,), control_draws=2)
    assert [m.method for m in comparison.methods][-2:] == ["head mask (trained)", "head mask (random heads)"]
    [path] = (tmp_path / "run").glob("test-rival-audio-contrastive-*.jsonl")
    rows = records(path)
    assert json.loads(path.with_suffix(".manifest.json").read_text())["mode"] == "generate"
    contrastive = next(m for m in comparison.methods if m.method == "audio-contrastive correction")
    assert contrastive.test["total"]["accuracy"] == round(100 * np.mean([r["correct"] for r in rows]), 2)
    from lens_audio.paper import ContrastiveCorrection

    alpha = float(contrastive.setting.removeprefix("alpha "))
    chunk = experiment.split("test")[: profile.batch_size]
    [batch] = experiment.batches(chunk)
    tokens = ContrastiveCorrection(alpha).generate(model, batch, profile.max_new_tokens)
    decoded = [model.tokenizer.decode(row[batch.input_ids.shape[1]:], skip_special_tokens=True).strip()
               for row in tokens]
    outputs = {r["id"]: r["output"] for r in rows}
    assert [outputs[i["id"]] for i in chunk] == decoded  # the run's answers are the contrastive decoding's



def test_the_experiment_carries_the_saved_comparison_into_the_report(compared):
    """`lens-audio experiment` in the rivals' run folder (same flags) carries the comparison in its result, and
    `figures --from` that result shows its table, verdicts and figure; one made for another beta is left out, with a
    note."""
    root, bench, comparison = compared
    flags = ["--benchmark", str(bench), "--out", str(root / "run"), "--k-heads", "2"]
    result = str(root / "result.json")
    assert cli.main(["experiment", *flags, "--betas", "1.0", "3.0", "--draws", "5", "--json", result]) == 0
    saved = json.loads((root / "result.json").read_text())["rivals"]
    from lens_audio.paper import ExperimentResult, format_table

    table = format_table(ExperimentResult.load(root / "result.json"))  # the printed table names every verdict
    assert all(f"  {line}" in table for line in comparison.verdicts())
    assert RivalComparison.from_json(saved).to_json() == comparison.to_json()
    assert cli.main(["figures", "--from", str(root / "result.json"), "--out", str(root / "figs"), "--formats",
                     "html"]) == 0
    report = (root / "figs" / "report.html").read_text()
    assert "Rival interventions on the test split" in report and (root / "figs" / "rivals.html").exists()
    for m in comparison.methods[1:]:
        focus = m.paired[f"{m.method} vs baseline ({comparison.focus})"]
        row = report[report.index(f"<td>{escape_html(m.method)}</td>"):].split("</tr>")[0]
        assert f"{focus.difference:+.1f} [{focus.ci[0]:+.1f}, {focus.ci[1]:+.1f}]" in row
        assert verdict(focus) in row
    baseline = run_identity(records(root / "run" / "test-baseline.jsonl"))
    assert comparison.baseline == baseline
    assert saved_comparison(root / "run", comparison.specialists, comparison.beta, baseline)[0] is not None
    heads = [tuple(h) for h in comparison.specialists]
    for made_for in ([heads[::-1], comparison.beta, baseline], [heads, 99.0, baseline], [heads, comparison.beta, "x"]):
        found, note = saved_comparison(root / "run", *made_for)  # other heads, beta or baseline: left out, said so
        assert found is None and "other specialists, another beta or another test baseline" in note
    (root / "broken").mkdir()
    (root / "broken" / "rivals.json").write_text("{")
    assert "cannot be read" in saved_comparison(root / "broken", heads, comparison.beta, baseline)[1]
    edited = records(root / "run" / "test-baseline.jsonl")
    edited[0]["item_digests"] = {"question": "another question"}  # the same ids, other content
    assert run_identity(edited) != baseline


def test_the_trained_mask_is_reused_while_nothing_changed_and_refused_without_steps(compared, monkeypatch):
    root, bench, _ = compared
    import lens_audio.paper.rivals as rivals

    def no_training(*args, **kwargs):
        raise AssertionError("the saved masks should have been reused")

    monkeypatch.setattr(rivals, "train_head_mask", no_training)
    argv = ["rivals", "--benchmark", str(bench), "--out", str(root / "run"), "--betas", "1.0", "3.0", "--k-heads",
            "2", "--mask-steps", "80", "40", "--control-draws", "3"]
    assert cli.main(argv) == 0  # every run file and the masks are read back
    with pytest.raises(ValueError, match="mask_steps must be positive"):
        rivals.mask_checkpoints([])
