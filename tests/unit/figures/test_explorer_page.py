"""The standalone explorer page, driven in headless Chromium through the DevTools protocol (choreographer, from
kaleido).

Opens a three-clip page from `file://`, with the network blocked: no JavaScript error, one audio element per clip
holding that clip, a chosen head changes the attention trace to that head's numbers, and the beta slider's
probabilities equal the Python path's. A screenshot is written next to the page (`LENS_SCREENSHOT=path`
copies it out for a look).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from lens_audio import HookedAudioLM
from lens_audio.benchmark import load_mmau
from lens_audio.explorer import explorer_data
from lens_audio.explorer.charts import DEFAULT_HEAD_RULE, default_head
from lens_audio.explorer.page import page_html, write_page
from lens_audio.organisms.benchmark_writer import SETS_JSON_NAME, write_set_benchmark
from tests.helpers.browser import CHROMIUM, PLOTLY_CHARTS, open_page

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explorer")
    bench = write_set_benchmark(folder / "bench", seed=0, partitions=(("test", 1, ("conflicting",)),), progress=False)
    item = next(i for i in load_mmau(bench / SETS_JSON_NAME) if i["target_clip"] == 2)
    data = explorer_data(HookedAudioLM.from_pretrained("workshop"), item)
    return data, write_page(data, folder / "page.html")


def test_page_plays_every_clip_and_redraws_for_head_and_beta(page):
    data, path = page
    layer, head = (data.n_layers - 1, 1) if default_head(data) != (data.n_layers - 1, 1) else (0, 0)
    durations = ("Promise.all(Array.from(document.querySelectorAll('audio'), (a) => a.readyState >= 1 ? a.duration : "
                 "new Promise((done) => a.addEventListener('loadedmetadata', () => done(a.duration)))))")
    script = [
        "JSON.stringify(window.__lens_state())",
        f"window.__lens_select_head({layer}, {head}); JSON.stringify(window.__lens_state())",
        "window.__lens_set_layers([1, 2]); window.__lens_set_beta(1.5); JSON.stringify(window.__lens_state())",
        durations,
        "Array.from(document.querySelectorAll('audio'), (a) => a.src.slice(0, 22))",
    ]
    screenshot = path.with_suffix(".png")
    results, errors, requests = open_page(path, script, screenshot, height=1400)
    if os.environ.get("LENS_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["LENS_SCREENSHOT"])
    assert not errors, json.dumps(errors)[:2000]
    assert not requests  # nothing fetched from a network
    first, chosen, steered = (json.loads(r) for r in results[:3])
    assert [first["layer"], first["head"]] == list(default_head(data))
    for shown, expected in zip(first["attention"], data.clip_attention(*default_head(data))):
        assert np.allclose(shown, expected, atol=1e-6)
    assert [chosen["layer"], chosen["head"]] == [layer, head] and chosen["marker"] == [layer, head]
    assert chosen["attention"] != first["attention"] and len(chosen["attention"]) == len(data.clips) == 3
    for shown, expected in zip(chosen["attention"], data.clip_attention(layer, head)):
        assert np.allclose(shown, expected, atol=1e-6)
    assert chosen["tokens"] != first["tokens"] and "[Audio 2:" in chosen["tokens"]
    audio, silence = data.option_probabilities(1.5, [1, 2])
    assert steered["beta"] == 1.5 and steered["layers"] == [1, 2]
    assert np.allclose(steered["options"][0], audio.numpy(), atol=1e-4) and np.allclose(
        steered["options"][1], silence.numpy(), atol=1e-4
    )
    assert not np.allclose(steered["options"][0], first["options"][0], atol=1e-3)  # the slider moved the bars
    assert np.allclose(
        results[3], [len(c.waveform) / 16000 for c in data.clips], atol=0.01
    )  # each element holds its clip
    assert results[4] == ["data:audio/wav;base64,"] * 3
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000


def test_opens_on_the_head_that_attends_most_to_the_asked_clip(page):
    data, path = page
    start, end = data.clips[data.target_clip].span
    asked = data.rows[:, :, start:end].sum(-1)
    layer, head = default_head(data)
    assert asked[layer, head] == asked.max() and data.target_clip == 1
    text = path.read_text()
    assert f"Opened on L{layer}H{head}: {DEFAULT_HEAD_RULE}" in text.replace("&#x27;", "'")
    assert f"Audio 2 (asked about), {data.clips[1].seconds:.2f} s" in text  # durations beside the players


HOSTILE = "<!--<script>"


def test_hostile_item_text_cannot_break_the_page(page, tmp_path):
    """Item text that would open a comment or a script, or close the data block, is shown as text in every panel."""
    data, _ = page
    hostile = ["</script><script>window.__owned = 1</script>", HOSTILE + "x", "-->]]></style><!--", "&lt;b&gt;"]
    item = {**data.item, "question": hostile[0] + " " + HOSTILE, "choices": hostile[: len(data.options)],
            "answer": hostile[1], "id": "x</title><!--"}
    tokens = [HOSTILE + t if i % 7 == 3 else t for i, t in enumerate(data.tokens)]
    bad = dataclasses.replace(data, item=item, tokens=tokens, options=hostile[: len(data.options)])
    html = page_html(bad)
    body = html.split("<script type='application/json' id='la-data'>", 1)[1].split("</script>", 1)[0]
    assert "<" not in body and json.loads(body)["n_clips"] == 3  # escaped, and the JSON still parses
    path = tmp_path / "hostile.html"
    path.write_text(html, encoding="utf-8")
    script = [
        PLOTLY_CHARTS,
        "JSON.stringify({owned: window.__owned || 0, tokens: document.getElementById('la-tokens').textContent,"
        " item: document.querySelector('.la-item').textContent, title: document.title,"
        " menu: document.getElementById('la-head').options.length, boxes: document.querySelectorAll('#la-layers "
        "input').length, audio: document.querySelectorAll('audio').length, state: typeof window.__lens_state})",
    ]
    results, errors, requests = open_page(path, script)
    assert not errors and not requests, json.dumps(errors)[:2000]
    charts = {c["id"]: c for c in json.loads(results[0])}
    assert set(charts) == {"la-timeline", "la-heads", "la-options"}
    assert all(c["traces"] >= 2 and c["drawn"] >= 1 for c in charts.values()), charts
    shown = json.loads(results[1])
    assert shown["owned"] == 0 and shown["state"] == "function"
    assert shown["tokens"].count(HOSTILE) == sum(text.startswith(HOSTILE) for text, _, _ in bad.token_groups()) > 0
    assert hostile[0] in shown["item"] and HOSTILE in shown["item"] and shown["title"].endswith("x</title><!--")
    assert shown["menu"] == data.n_layers * data.n_heads and shown["boxes"] == data.n_layers and shown["audio"] == 3
