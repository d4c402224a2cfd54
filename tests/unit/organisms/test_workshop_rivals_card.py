"""`"workshop"`'s model card records `lens-audio rivals` on it: its table is the saved comparison's
(`benchmarks/results/workshop_rivals.json`), rendered again here, and the prose's numbers are the comparison's."""

from __future__ import annotations

import json
from pathlib import Path

from lens_audio.paper.rival_results import RivalComparison

ROOT = Path(__file__).parents[3]
CARD = ROOT / "lens_audio" / "organisms" / "workshop" / "README.md"
RESULT = ROOT / "benchmarks" / "results" / "workshop_rivals.json"


def test_the_cards_rivals_table_is_the_saved_comparison():
    comparison = RivalComparison.from_json(json.loads(RESULT.read_text()))
    card = CARD.read_text()
    assert comparison.markdown() in card
    methods = {m.method: m for m in comparison.methods}
    mask = methods["head mask (trained)"]
    assert mask.setting.startswith("step 100: 10 heads") and max(mask.dev, key=mask.dev.get) == "step 100"
    assert f"from {methods['baseline'].text_dominance()}% to {mask.text_dominance()}%" in card
    scaling = comparison.controls["attention scaling (specialists)"]
    assert f"at any of {len(scaling.draws)} draws of 4 random heads" in card and scaling.tied == 100
    control = comparison.controls["head mask (trained)"]
    assert f"Against {len(control.draws)} random masks of 10 heads" in card
    assert f"at the {control.percentile:.0f}th percentile" in card
    spread = f"(5-95%: {control.q05:.1f}-{control.q95:.1f})"
    assert f"their median is {control.median:.1f}% on conflicting items {spread}" in card
    cost = methods["audio-contrastive correction"].versus("baseline", "other")
    assert f"costs {-cost.difference:.1f}" in card and f"(p = {cost.p_value:.1g})" in card
