"""The peer benchmark of adaptive steered scoring stays runnable, and every peer computes the one pass's logits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_steered_scoring_peers.py"


def test_peers_match_the_one_pass_with_small_shapes(tmp_path):
    pytest.importorskip("nnsight", reason="the peer benchmark needs nnsight: pip install -e '.[dev]'")
    out = tmp_path / "peers.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--small", "--repeats", "1", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(out.read_text())
    assert set(report["by_batch"]) == {"1", "8"}
    for result in report["by_batch"].values():
        rows = result["rows"]
        assert {"nnsight, one trace (2B rows)", "transformers hooks, one forward (2B rows)",
                "lens_audio adaptive_direction then steer(forward)"} <= set(rows)
        assert rows["lens_audio steered_logits (one pass)"]["ratio_to_one_pass"] == 1.0
        for name, row in rows.items():
            assert row["max_abs_logit_diff"] <= 1e-5 * max(1.0, result["largest_logit"]), name
            assert row["seconds"] > 0, name
        assert result["steering_effect_max_abs"] > 100 * max(row["max_abs_logit_diff"] for row in rows.values())
    assert report["versions"]["nnsight"]
