"""The plotting rules, one place (`plots.charts.label_groups`, `curve_with_band`): every marked group has a legend
entry, with one group or several; a "95% CI" band only when an interval is given; accuracy curves carry their
baseline."""

from __future__ import annotations

import numpy as np
import pytest

from lens_audio import plots
from tests.unit.figures.test_reexport import _inputs

ONE = {"top 4 by r": [(1, 2), (3, 0)]}
SEVERAL = {"specialists": [(1, 2), (3, 0)], "largest ablation drop": [(0, 5)], "most on the asked clip": [(2, 2)]}


def _legend_names(fig) -> list[str]:
    return [t.name for t in fig.data if t.name and t.showlegend is not False]


@pytest.mark.parametrize("marked", [ONE, SEVERAL], ids=["one group", "several groups"])
def test_every_marked_group_of_a_head_map_is_in_the_legend(marked):
    fig = plots.head_heatmap(np.random.default_rng(0).normal(size=(4, 6)), "r", "r", marked=marked)
    assert fig.layout.showlegend is True  # plotly would hide the legend of a single marked group
    names = _legend_names(fig)
    assert len(names) == len(marked)
    for label, heads in marked.items():
        assert any(n.startswith(label) and all(f"L{l}H{h}" in n for l, h in heads) for n in names), (label, names)


@pytest.mark.parametrize("groups", [{"top 2 by r": [(1, 0)]}, None], ids=["one head, one group", "several groups"])
def test_every_group_of_the_attention_figure_is_in_the_legend(groups):
    inputs = _inputs()
    groups = groups or inputs.shown
    fig = plots.audio_attention(inputs.attention_signal(), inputs.attention_batch(), highlight=1, groups=groups)
    assert fig.layout.showlegend is True
    names = _legend_names(fig)
    assert len(names) == sum(len(h) for h in groups.values())
    for label, heads in groups.items():
        for layer, head in heads:
            assert any(n.startswith(f"{label} L{layer}H{head}") for n in names), (label, names)


def test_a_band_is_drawn_and_called_a_95_ci_only_when_one_is_given():
    x, y = [0.5, 1, 2, 4], [88.3, 90.0, 91.7, 90.0]
    given = plots.curve_with_band(x, y, [v - 3 for v in y], [v + 3 for v in y], "t", "beta", "accuracy (%)",
                                  name="steered")
    assert [t.name for t in given.data] == ["steered 95% CI", "steered"]
    assert list(given.data[0].y) == [v + 3 for v in y] + [v - 3 for v in y][::-1]
    for no_interval in (plots.curve_with_band(x, y, y, y, "t", "beta", "%", name="steered"),  # notebook 04's call
                        plots.curve_with_band(x, y, title="t", name="steered")):
        assert [t.name for t in no_interval.data] == ["steered"]
        assert not any("CI" in (t.name or "") or t.fill for t in no_interval.data)
        assert no_interval.layout.showlegend is True  # a single named line still says what it is


def test_an_accuracy_curve_carries_its_baseline():
    x, y = [0.5, 1, 2, 4], [88.3, 90.0, 91.7, 90.0]
    fig = plots.curve_with_band(x, y, title="t", x_title="beta", y_title="accuracy (%)", name="steered",
                                baseline=76.7, baseline_name="unsteered baseline")
    line = next(t for t in fig.data if t.name.startswith("unsteered baseline"))
    assert list(line.y) == [76.7, 76.7] and list(line.x) == [0.5, 4] and "76.7" in line.name
    # the axis autoscales over every trace, so the baseline is inside it: the curve's spread is not the whole story
    lowest = min(min(t.y) for t in fig.data)
    assert lowest == 76.7
    # overlays keep one colour per curve, bands or not
    fig = plots.curve_with_band(x, y, title="t", name="a")
    fig = plots.curve_with_band(x, [v - 5 for v in y], [v - 8 for v in y], [v - 2 for v in y], name="b", fig=fig)
    colours = [t.line.color for t in fig.data if t.mode == "lines+markers"]
    assert len(set(colours)) == 2
