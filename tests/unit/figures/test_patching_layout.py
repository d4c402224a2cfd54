"""The patching map: its PDF/SVG exports are laid out for a page (positions wrapped into rows), and its colour
bar's title does not touch a tick label (measured in headless Chromium, offline)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from lens_audio import plots
from lens_audio.plots.paper import PAPER_WIDTH, for_paper
from tests.helpers.browser import CHROMIUM, open_page

FIGURES = Path(__file__).resolve().parents[3] / "figures"


def long_prompt(n_columns: int = 174, n_layers: int = 8) -> tuple[np.ndarray, list[str]]:
    """A patching table as wide as the one that drew 3,680 px: `n_columns` positions, three audio spans."""
    rng = np.random.default_rng(0)
    table = rng.uniform(-0.3, 0.3, (n_layers, n_columns))
    table[:, -1] = 1.0
    table[2, 5] = 1.7  # one overshoot, noted under the map
    labels = [f"tok{i}" for i in range(n_columns)]
    for k, start in enumerate((20, 60, 100), start=1):
        labels[start : start + 3] = [f"Audio {k}"] * 3
    return table, labels


def test_the_pdf_layout_wraps_every_position_into_rows_at_a_page_width():
    table, labels = long_prompt()
    wide = plots.patching_map(table, labels, "Restoring the audio<br><sup>model m, test split, n = 1</sup>")
    assert wide.layout.width == 20 * 174 + 200 == 3680
    paper = for_paper(wide)
    assert paper.layout.width == PAPER_WIDTH <= 7.5 * 96  # plotly's static export: 96 px to the inch
    heatmaps = [t for t in paper.data if t.type == "heatmap"]
    assert len(heatmaps) > 1
    # every position once, in prompt order, with its value and its token label (a second way: from the facets)
    columns = np.concatenate([np.asarray(t.x) for t in heatmaps])
    assert columns.tolist() == list(range(174))
    assert np.allclose(np.concatenate([np.asarray(t.z, dtype=float) for t in heatmaps], axis=1), table)
    ticks = [tick for i in range(len(heatmaps)) for tick in paper.layout[f"xaxis{i + 1 if i else ''}"].ticktext]
    assert ticks == list(wide.layout.xaxis.ticktext)
    assert max(len(t.x) for t in heatmaps) * 14 <= PAPER_WIDTH - 200  # cells keep a readable width
    assert [t.showscale for t in heatmaps] == [True] + [False] * (len(heatmaps) - 1)  # one colour bar
    assert {(t.zmin, t.zmax) for t in heatmaps} == {(-1.0, 1.0)}  # one shared scale
    assert paper.layout.title.text == wide.layout.title.text  # the model, split and n stay under the title
    assert any("1 cell beyond" in a.text for a in paper.layout.annotations)
    # a figure that did not opt in, or is narrow enough, is printed as it is
    heads = plots.head_heatmap(np.zeros((8, 8)), "heads", "r")
    assert for_paper(heads) is heads
    narrow = plots.patching_map(table[:, :20], labels[:20], "short")
    assert for_paper(narrow, width=narrow.layout.width) is narrow


def test_pdf_and_svg_exports_fit_a_page(tmp_path):
    table, labels = long_prompt()
    fig = plots.patching_map(table, labels, "Restoring the audio")
    try:
        written = plots.save_figure(fig, "patching", tmp_path, ["svg", "pdf", "png"])
    except plots.StaticExportUnavailable as exc:
        pytest.skip(str(exc))
    svg, pdf, png = written
    width = float(re.search(r'<svg[^>]* width="([\d.]+)"', svg.read_text()).group(1))
    assert width == PAPER_WIDTH
    media_box = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)", pdf.read_bytes())
    assert float(media_box.group(1)) <= 7.5 * 72  # points: at most 7.5 inches wide (the wide map was ~38 in)
    from PIL import Image

    assert Image.open(png).width == 2 * 3680  # the PNG keeps its natural size (scale 2): the report scrolls it


COLORBAR_BOXES = (
    "new Promise((done) => setTimeout(() => done(JSON.stringify({"
    "title: Array.from(document.querySelectorAll('.colorbar .cbtitle text'), (t) => t.getBoundingClientRect()),"
    "ticks: Array.from(document.querySelectorAll('.colorbar .cbaxis text'), (t) => t.getBoundingClientRect())"
    "})), 800))"
)


def overlaps(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def colorbar_collisions(fig: go.Figure, folder: Path) -> tuple[list, list]:
    plots.save_figure(fig, "patching", folder, ["html"])
    results, errors, requests = open_page(folder / "patching.html", [COLORBAR_BOXES], width=1400, height=700)
    assert not errors and not requests
    boxes = json.loads(results[0])
    assert boxes["title"] and len(boxes["ticks"]) == 3
    return [(t, k) for t in boxes["title"] for k in boxes["ticks"] if overlaps(t, k)], boxes["ticks"]


@pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium browser (apt-get install chromium)")
def test_the_colorbar_title_touches_no_tick_label(tmp_path):
    inputs = json.loads((FIGURES / "figure_inputs.json").read_text())
    fig = plots.patching_map(inputs["patching"], inputs["patching_labels"], "Restoring the audio")
    collisions, ticks = colorbar_collisions(fig, tmp_path / "now")
    assert not collisions
    # the measurement sees the old placement's collision (title on top, over the top tick's label)
    fig.update_traces(colorbar_title=dict(text="share of the<br>audio's effect<br>restored", side="top"))
    collisions, _ = colorbar_collisions(fig, tmp_path / "before")
    assert collisions
