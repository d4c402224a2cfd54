"""The experiment's head selection never ranks an undefined r: heads without one are left out (and said so), and when
no head has one the stage stops with one line saying why and what to do, under every selection rule that needs it.
The rule is `analysis.heads.top_heads`, the one `select-heads` uses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lens_audio.analysis.heads import UndefinedStatisticError
from lens_audio.benchmark.run_result import RunResult
from lens_audio.checks import UserNote
from lens_audio.paper import Experiment
from lens_audio.paper.profile import ExperimentProfile

PROFILE = ExperimentProfile(prompt="instruct", mode="choice", k_heads=2, n_bootstrap=20, n_permutations=10)


def experiment(tiny, items, tmp_path, correct, mass, rule="r") -> Experiment:
    e = Experiment(tiny, items, PROFILE.replace(selection_rule=rule), tmp_path, progress=False)
    rows = e.split("calibration")
    records = [{"id": i["id"], "task": i["task"], "sub-category": i["sub-category"], "correct": bool(c)}
               for i, c in zip(rows, correct)]
    e._baselines["calibration"] = RunResult(records, np.asarray(mass, dtype=np.float32))  # the run, made up
    return e


@pytest.mark.parametrize("rule", ["r", "within_stratum_r"])
@pytest.mark.parametrize("right, why", [(True, "every calibration item is correct (5 of 5)"),
                                        (False, "no calibration item is correct (0 of 5)")])
def test_no_head_is_ranked_when_every_item_is_right_or_every_item_wrong(tiny, mmau_like, tmp_path, rule, right, why):
    mass = np.random.default_rng(0).random((5, 2, 4))
    e = experiment(tiny, mmau_like, tmp_path, [right] * 5, mass, rule)
    with pytest.raises(UndefinedStatisticError, match="no head can be ranked") as caught:
        e.select_heads()
    message = str(caught.value)
    assert why in message and "\n" not in message
    assert ("use a calibration split" in message) if right else ("check the prompt template" in message)


def test_heads_without_an_r_are_left_out_and_said_so(tiny, mmau_like, tmp_path):
    mass = np.random.default_rng(1).random((5, 2, 4))
    mass[:, 1, 0] = 0.7  # two heads whose mass never varies: r undefined
    mass[:, 0, 3] = 0.2
    correct = [True, False, True, True, False]
    e = experiment(tiny, mmau_like, tmp_path, correct, mass)
    with pytest.warns(UserNote, match=r"undefined for 2 of 8 heads \(L0H3, L1H0\)"):
        chosen = e.select_heads().specialists
    # a second way: scipy's r head by head over the heads whose mass varies, the two highest
    r = {(l, h): stats.pearsonr(mass[:, l, h], correct).statistic for l in range(2) for h in range(4)
         if (l, h) not in {(1, 0), (0, 3)}}
    assert chosen == sorted(r, key=r.get, reverse=True)[:2]
