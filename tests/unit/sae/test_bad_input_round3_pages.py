"""Bad input, round 3, for pages: every HTML page the package writes escapes item text with the one function
(`lens_audio.files.script_json` / `escape_html`) and is written whole or not at all, a failed write naming the file.

The SAE dashboard is the case of the issue: an item id such as `<!--<script>` blanked every chart, and its page was
written in place. Each test fails on the code before this round (866792f)."""

from __future__ import annotations

import errno
import json
import os
import re

import numpy as np
import plotly.graph_objects as go
import pytest

from lens_audio import files
from lens_audio.sae.dashboard import FeatureDashboard, TopActivation
from tests.helpers.browser import CHROMIUM, PLOTLY_CHARTS, open_page

HOSTILE = "<!--<script>"


def dashboard(item_id: str = HOSTILE) -> FeatureDashboard:
    top = [TopActivation(value=2.5 - k, item_id=item_id, position=10 + k, clip=-1, token_in_clip=-1,
                         label="</script><b>", context=[(HOSTILE, 0.2), ("x", 1.0)]) for k in range(2)]
    rng = np.random.default_rng(0)
    return FeatureDashboard(hook_name="blocks.1.hook_resid_post", positions="all", feature=3, top=top,
                            values=np.abs(rng.normal(size=200)), promoted=[(HOSTILE, 1.5), ("dog", 1.0)],
                            suppressed=[("</script>", -1.0), ("cat", -0.5)], spectrograms=[], n_items=2)


def _data_block(page: str, element_id: str) -> str:
    return re.search(rf"<script type=.application/json. id=.{element_id}.>(.*?)</script>", page, re.S).group(1)


def test_dashboard_data_is_escaped_like_every_page():
    board = dashboard()
    page = board.page_html()
    block = _data_block(page, "la-figs")
    assert "<" not in block and ">" not in block  # no comment, no script can open inside the data
    assert block == files.script_json(json.loads(block))  # the one escaping function made it
    assert set(json.loads(block)) == set(board.figures())  # the charts' JSON parses back whole
    table = page.split("<table class='la-top'>", 1)[1].split("</table>", 1)[0]
    assert HOSTILE not in table and files.escape_html(HOSTILE) in table


@pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium (Debian: apt-get install chromium)")
def test_a_hostile_item_id_leaves_every_dashboard_chart_drawn(tmp_path):
    board = dashboard()
    path = board.write_page(tmp_path / "board.html")
    shown = "JSON.stringify({owned: window.__owned || 0, table: document.querySelector('.la-top').textContent})"
    results, errors, requests = open_page(path, [PLOTLY_CHARTS, shown])
    assert not errors and not requests, json.dumps(errors)[:2000]
    charts = {c["id"]: c for c in json.loads(results[0])}
    assert set(charts) == {f"la-fig-{name}" for name in board.figures()}
    assert all(c["traces"] == len(board.figures()[c["id"].removeprefix("la-fig-")].data) and c["drawn"] >= 1
               for c in charts.values()), charts
    assert json.loads(results[1])["table"].count(HOSTILE) >= 2  # shown as text


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_leaves_the_old_dashboard_and_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "board.html"
    path.write_text("the earlier page")
    monkeypatch.setattr(files.os, "fsync", _full_disk)
    with pytest.raises(OSError, match=re.escape(f"could not write {path}") + ".*the disk is full"):
        dashboard().write_page(path)
    assert path.read_text() == "the earlier page" and sorted(p.name for p in tmp_path.iterdir()) == ["board.html"]


def test_figure_pages_inline_their_data_with_the_one_escaping(tmp_path):
    from lens_audio.plots import save_figures

    fig = go.Figure(go.Bar(x=[HOSTILE, "</script>x"], y=[1, 2]), layout=dict(title=HOSTILE))
    written, _ = save_figures({"hostile": fig}, tmp_path, formats=("html",))
    page = (tmp_path / "hostile.html").read_text()
    block = _data_block(page, "la-figure-data")
    assert "<" not in block and block == files.script_json(json.loads(block))
    assert json.loads(block)["data"][0]["x"] == [HOSTILE, "</script>x"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-written left


def test_a_full_disk_names_the_figure_and_leaves_nothing(tmp_path, monkeypatch):
    from lens_audio.plots import save_figures

    save_figures({"plain": go.Figure(go.Bar(x=[1], y=[1]))}, tmp_path, formats=("html",))  # plotly.min.js exists
    before = sorted(p.name for p in tmp_path.iterdir())
    monkeypatch.setattr(files.os, "fsync", _full_disk)
    with pytest.raises(OSError, match=re.escape(f"could not write {tmp_path / 'hostile.html'}")):
        save_figures({"hostile": go.Figure(go.Bar(x=[HOSTILE], y=[1]))}, tmp_path, formats=("html",))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
