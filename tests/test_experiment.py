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
