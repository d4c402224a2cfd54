"""Every page the package writes works with the network blocked: figures (one local plotly.min.js per folder) and
report.html, opened from file:// in headless Chromium; the report stays inside its column at 1280 px."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from plotly.offline import get_plotlyjs

from lens_audio import plots
from lens_audio.figures import FIGURES
from lens_audio.paper.results import ExperimentResult
from lens_audio.report_page import report_html
from tests.helpers.browser import CHROMIUM, PLOTLY_CHARTS, open_page

RESULTS = Path(__file__).parents[3] / "figures" / "results.json"


def _figures() -> dict:
    r = np.random.default_rng(0).normal(size=(4, 6))
    heads = plots.head_heatmap(r, "r", "r", marked={"specialists": [(1, 2), (3, 0)], "other rule": [(0, 5)]})
    sweep = plots.curve_with_band([0.5, 1, 2], [60, 70, 65], [55, 64, 58], [66, 76, 71], "sweep", "beta", "%",
                                  name="steered")
    plots.mark_chosen(sweep, 1, "chosen on dev: beta 1")
    control = plots.control_distribution_plot([50, 50, 60, 70], 60, 50, "control", 10, not_drawn=["cannot differ"])
    wide = plots.head_heatmap(r, "a figure 980 px wide, as the listening check", "r").update_layout(width=980)
    return {"head_correlation": heads, "beta_sweep": sweep, "control_distribution": control, "listening_check": wide}


def test_html_figures_share_one_local_plotly(tmp_path):
    written, problem = plots.save_figures(_figures(), tmp_path, formats=("html",))
    assert problem is None and len(written) == len(_figures())
    assert (tmp_path / plots.PLOTLY_JS).read_text() == get_plotlyjs()
    for name in written:
        page = (tmp_path / f"{name}.html").read_text()
        assert re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", page) == [plots.PLOTLY_JS]
        assert "cdn" not in page.lower() and get_plotlyjs()[:2000] not in page  # referenced, not copied
    stamp = (tmp_path / plots.PLOTLY_JS).stat().st_mtime_ns
    plots.save_figures(_figures(), tmp_path, formats=("html",))
    assert (tmp_path / plots.PLOTLY_JS).stat().st_mtime_ns == stamp  # written once, not per figure
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium (Debian: apt-get install chromium)")
def test_figures_and_report_render_with_the_network_blocked(tmp_path):
    figures = _figures()
    plots.save_figures(figures, tmp_path, formats=("html", "png"), static_required=True)
    result = ExperimentResult.load(RESULTS)
    (tmp_path / "report.html").write_text(report_html(result, {name: FIGURES[name] for name in figures},
                                                      folder=tmp_path))
    for name, fig in figures.items():
        results, errors, requests = open_page(tmp_path / f"{name}.html", [PLOTLY_CHARTS])
        assert not errors and not requests, (name, errors, requests)
        (chart,) = json.loads(results[0])
        assert chart["traces"] == len(fig.data) and chart["drawn"] >= 1, (name, chart)
    layout = (
        "JSON.stringify({page: document.documentElement.scrollWidth, body: document.body.getBoundingClientRect().width,"
        " widest: Math.max(...Array.from(document.body.querySelectorAll('*'), (e) => e.getBoundingClientRect().right)),"
        " captions: Array.from(document.querySelectorAll('table caption'), (c) => c.textContent),"
        " images: Array.from(document.images, (i) => i.complete && i.naturalWidth > 0),"
        " shown: Object.fromEntries(Array.from(document.images, (i) => [i.alt, i.getBoundingClientRect().width])),"
        " pre: document.querySelectorAll('pre').length})"
    )
    shot = tmp_path / "report.png"
    results, errors, requests = open_page(tmp_path / "report.html", [layout], screenshot=shot, width=1280)
    assert not errors and not requests, (errors, requests)
    page = json.loads(results[0])
    assert page["page"] <= 1280 and page["body"] <= 1240 + 24, page  # the 1,240 px column (and its padding)
    # at 1280 px every figure shows whole at its own width (a 980 px one too: title and colour bar not cut off)
    assert page["shown"] == {name: fig.layout.width for name, fig in figures.items()}, page["shown"]
    assert page["widest"] <= (1280 + page["body"]) / 2 + 1, page  # nothing sticks out of the column
    assert page["pre"] == 0 and any(c.startswith("Test accuracy") for c in page["captions"])
    assert any(c.startswith("Specialist heads") for c in page["captions"]) and len(page["captions"]) >= 4
    assert page["images"] == [True] * len(figures)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_tables_hold_the_result_numbers():
    result = ExperimentResult.load(RESULTS)
    page = report_html(result, {})
    total = result.test["steered"]["total"]
    assert f"{total['accuracy']:.1f} [{total['ci'][0]:.1f}, {total['ci'][1]:.1f}]" in page
    for head in result.head_selection.specialists:
        assert f"<td>L{head[0]}H{head[1]}</td>" in page
    # residual source: the layer-matched control is the specialists by construction, said so instead of drawn
    assert result.layer_matched_control is None and "equals theirs by construction" in page
    assert "<pre>" not in page
    assert ("What made these numbers" in page) == (result.manifest is not None)  # provenance whenever recorded
    assert result.manifest is None or result.manifest.html_table() in page
