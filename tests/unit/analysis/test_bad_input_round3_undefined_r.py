"""Round 3 of bad input, undefined statistics: a head whose audio mass does not vary, or correctness that does not vary,
has no r; such heads are left out and said so, and when no head has an r the stage stops with one line saying why
and what to do (`select-heads` never names heads printed with r=nan)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import stats

from lens_audio import cli
from lens_audio.analysis.heads import HeadCorrelation, UndefinedStatisticError, correlate_heads
from lens_audio.checks import UserNote
from lens_audio.organisms.benchmark_writer import write_benchmark


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 2, 3)), rng.random(n) > 0.5


def test_every_item_correct_stops_saying_why_and_what_to_do():
    mass, _ = data()
    correlation = correlate_heads(mass, np.ones(len(mass), bool), n_bootstrap=20)
    assert np.isnan(correlation.r).all()  # a second computation: scipy has no r for a constant label either
    with pytest.raises(UndefinedStatisticError, match="every calibration item is correct .*no errors to correlate with"
                       ".*use a calibration split the model gets partly wrong"):
        correlation.top_k(2)
    with pytest.raises(UndefinedStatisticError, match="no calibration item is correct"):
        correlate_heads(mass, np.zeros(len(mass), bool), n_bootstrap=20).top_k(2)


def test_a_head_without_variance_is_left_out_and_said_so():
    mass, correct = data()
    mass[:, 0, 1] = 0.25  # L0H1 attends equally on every item
    mass[:, 1, 2] = mass[:, 1, 2] + 10 * correct  # L1H2 the best head by far
    correlation = correlate_heads(mass, correct, n_bootstrap=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        heads = correlation.top_k(5)
    notes = [str(w.message) for w in caught if issubclass(w.category, UserNote)]
    assert len(notes) == 1 and "undefined for 1 of 6 heads (L0H1)" in notes[0]
    by_hand = {(a, b): stats.pearsonr(mass[:, a, b], correct).statistic for a in range(2) for b in range(3)
               if (a, b) != (0, 1)}
    assert heads == sorted(by_hand, key=by_hand.get, reverse=True) and (0, 1) not in heads
    with pytest.raises(UndefinedStatisticError, match="only 5 of 6 heads have a defined r.*at most 5 heads"):
        correlation.top_k(6)


def test_old_json_without_the_count_still_loads_and_refuses_generically():
    mass, _ = data()
    saved = correlate_heads(mass, np.ones(len(mass), bool), n_bootstrap=20).to_json()
    del saved["n_correct"]
    with pytest.raises(UndefinedStatisticError, match="undefined for all 6 heads"):
        HeadCorrelation.from_json(json.loads(json.dumps(saved))).top_k(1)


def test_select_heads_exits_non_zero_when_every_calibration_item_is_correct(tmp_path, capsys):
    bench = write_benchmark(tmp_path / "bench", seed=5, n_clips=4, progress=False) / "workshop.json"
    listened = tmp_path / "not" / "yet" / "listen.json"  # --json into folders that do not exist: they are made
    argv = ["listen", "--benchmark", str(bench), "--out", str(tmp_path / "first"), "--json", str(listened)]
    assert cli.main(argv) == 0
    assert json.loads(listened.read_text())["split"] == "calibration"
    outputs = {json.loads(line)["id"]: json.loads(line)["output"]
               for line in (tmp_path / "first" / "calibration-baseline.jsonl").read_text().splitlines()}
    items = json.loads(bench.read_text())
    for item in items:  # every calibration answer made the model's own: every item correct
        item["answer"] = outputs.get(item["id"], item["answer"])
    easy = bench.with_name("easy.json")
    easy.write_text(json.dumps(items))
    capsys.readouterr()
    code = cli.main(["select-heads", "--benchmark", str(easy), "--out", str(tmp_path / "second"), "--k-heads", "2"])
    out, err = capsys.readouterr()
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("lens-audio")]
    assert code == 1 and "r=nan" not in out and len(errors) == 1
    assert "every calibration item is correct (3 of 3): no errors to correlate with" in errors[0]
