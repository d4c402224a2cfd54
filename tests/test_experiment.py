"""The experiment's command-line stages on the workshop model and a small benchmark."""

from __future__ import annotations

import json

from lens_audio import cli
from lens_audio.workshop.benchmark import write_benchmark


def test_stages_run_and_share_their_files(tmp_path, capsys):
    bench = write_benchmark(tmp_path / "bench", seed=5, n_clips=12, progress=False) / "workshop.json"
    common = ["--benchmark", str(bench), "--out", str(tmp_path / "run"), "--betas", "0.5", "1.0", "--k-heads", "2"]
    assert cli.main(["experiment", *common, "--json", str(tmp_path / "all.json")]) == 0
    result = json.loads((tmp_path / "all.json").read_text())
    assert set(result["test"]) == {"baseline", "steered", "random_control"}
    assert result["dev"]["best_beta"] in (0.5, 1.0) and len(result["specialist_heads"]) == 2
    assert {(h["layer"], h["head"]) for h in result["specialist_heads"]}.isdisjoint({(h["layer"], h["head"]) for h in result["control_heads"]})
    test_items = 3 * 6  # half the clips are test, three hint conditions each
    assert result["test"]["baseline"]["total"]["n"] == test_items
    files = {f.name for f in (tmp_path / "run").iterdir()}
    assert {"calibration-baseline.jsonl", "head_correlation.json", "dev-steered-beta0.5.jsonl", "test-baseline.jsonl", "results.json"} <= files
    before = (tmp_path / "run" / "test-baseline.jsonl").read_text()
    capsys.readouterr()
    assert cli.main(["evaluate", *common, "--beta", str(result["dev"]["best_beta"]), "--json", str(tmp_path / "eval.json")]) == 0
    assert (tmp_path / "run" / "test-baseline.jsonl").read_text() == before  # reused, not recomputed
    assert json.loads((tmp_path / "eval.json").read_text())["test"] == result["test"]
    assert cli.main(["select-heads", *common]) == 0 and "random control:" in capsys.readouterr().out


def test_figures_command_writes_every_figure_and_the_report(tmp_path):
    from lens_audio.figures import FIGURES

    bench = write_benchmark(tmp_path / "bench", seed=6, n_clips=12, progress=False) / "workshop.json"
    assert cli.main(["figures", "--benchmark", str(bench), "--out", str(tmp_path / "figs"), "--runs", str(tmp_path / "runs")]) == 0
    written = {p.name for p in (tmp_path / "figs").iterdir()}
    expected = {f"{name}.png" for name in FIGURES} - {"patching.png"}  # patching needs audio and silence to differ
    assert expected <= written and "report.html" in written
    report = (tmp_path / "figs" / "report.html").read_text()
    assert "baseline" in report and all(f"{name}.png" in report for name in FIGURES if f"{name}.png" in written)
