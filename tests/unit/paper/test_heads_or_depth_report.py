"""`benchmarks/bench_heads_or_depth.py` reduces an experiment to the numbers a model card records; checked on the
shipped figures' saved result against the control distributions recomputed from their draws."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from lens_audio.paper.results import ExperimentResult

ROOT = Path(__file__).parents[3]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_heads_or_depth import compare, reduce  # noqa: E402


def test_the_report_holds_each_control_recomputed_from_its_draws():
    result = ExperimentResult.load(ROOT / "figures" / "results.json")
    report = reduce(result)
    assert set(report["controls"]) == {"random", "depth-matched", "beta-matched"} & set(result.controls)
    for kind, row in report["controls"].items():
        draws = np.asarray(result.controls[kind].accuracies)
        below, tied = (draws < row["specialists"]).mean(), (draws == row["specialists"]).mean()
        assert row["percentile"] == pytest.approx(100 * (below + tied / 2))
        assert row["median"] == pytest.approx(float(np.median(draws)))
        assert row["n_draws"] == len(draws)
    assert report["arrival"]["layer"] == result.audio_arrival.arrival
    assert report["specialists"] == [list(h) for h in result.head_selection.specialists]


def test_a_run_whose_numbers_moved_is_named():
    report = reduce(ExperimentResult.load(ROOT / "figures" / "results.json"))
    assert compare(report, report, tolerance=0.5) == []
    moved = copy.deepcopy(report)
    moved["controls"]["random"]["percentile"] += 10
    assert compare(report, moved, tolerance=3.0) == [
        f"random percentile: {report['controls']['random']['percentile']:.1f} against "
        f"{moved['controls']['random']['percentile']:.1f} recorded"
    ]
