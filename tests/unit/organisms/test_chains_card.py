"""`"workshop-chains"`'s model card records the experiment on its registered direct benchmark: its numbers are those
of `benchmarks/results/chains_heads_or_depth.json` (written by `benchmarks/bench_heads_or_depth.py`), rendered
again here from the JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]
sys.path.insert(0, str(ROOT))
from benchmarks.bench_control_by_beta import table as beta_table  # noqa: E402
from benchmarks.bench_heads_or_depth import table  # noqa: E402

CARD = ROOT / "lens_audio" / "organisms" / "workshop_chains" / "README.md"
RESULT = ROOT / "benchmarks" / "results" / "chains_heads_or_depth.json"
BY_BETA = ROOT / "benchmarks" / "results" / "chains_control_by_beta.json"


def test_the_cards_control_table_is_the_benchmarks():
    report = json.loads(RESULT.read_text())
    assert table(report) in CARD.read_text()
    assert set(report["result"]["controls"]) == {"random", "depth-matched", "beta-matched"}
    assert all(c["n_draws"] == 200 and c["items"] == "conflicting" for c in report["result"]["controls"].values())


def test_the_cards_other_numbers_are_the_benchmarks():
    result, card = json.loads(RESULT.read_text())["result"], CARD.read_text()
    heads = ", ".join(f"L{layer}H{head}" for layer, head in result["specialists"])
    assert f"The specialists** (calibration, by r): {heads}; beta chosen on dev: {result['beta']}" in card
    baseline, steered = (result["test_accuracy"][run]["conflicting"] for run in ("baseline", "steered"))
    for value in (baseline, steered):
        low, high = value["ci"]
        assert f"{value['accuracy']:.1f}% [{low:.1f}, {high:.1f}]" in card
    arrival = result["arrival"]
    assert f"depth-matched draws use layers {arrival['layer']}-15" in card
    assert f"{arrival['silence']:.1f}% right; {arrival['audio']:.1f}% with the audio" in card
    assert result["controls"]["depth-matched"]["layers"] == list(range(arrival["layer"], 16))
    signal = result["signal_test"]
    within = signal["within"]["hinted_choice"]
    assert f"but {within['r']:.2f} [{within['ci'][0]:.2f}, {within['ci'][1]:.2f}] within the hinted class" in card
    top = ", ".join(f"L{layer}H{head}" for layer, head in signal["top_causal"])
    assert f"answer most are {top}" in card and f"{signal['causal_rank_r']:.2f})" in card


def test_the_cards_control_by_beta_is_the_benchmarks_and_agrees_at_the_chosen_beta():
    by_beta, result = json.loads(BY_BETA.read_text()), json.loads(RESULT.read_text())["result"]
    assert beta_table(by_beta) in CARD.read_text()
    assert by_beta["best_beta"] == result["beta"]
    chosen, random = by_beta["test"][str(result["beta"])], result["controls"]["random"]
    for key in ("specialists", "median", "percentile"):  # the same control, computed by the two benchmarks
        assert chosen[key] == random[key]
