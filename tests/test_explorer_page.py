"""The standalone explorer page, driven in headless Chromium through the DevTools protocol (choreographer, from
kaleido).

Opens a three-clip page from `file://`, with no network: no JavaScript error, one audio element per clip
holding that clip, a chosen head changes the attention trace to that head's numbers, and the beta slider's
probabilities equal the Python path's. A screenshot is written next to the page (`LENS_SCREENSHOT=path`
copies it out for a look).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lens_audio import HookedAudioLM
from lens_audio.evaluation import load_mmau
from lens_audio.explorer import explorer_data
from lens_audio.explorer.charts import default_head
from lens_audio.explorer.page import write_page
from lens_audio.workshop.benchmark import SETS_JSON_NAME, write_set_benchmark

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs a Chromium (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explorer")
    bench = write_set_benchmark(folder / "bench", seed=0, partitions=(("test", 1, ("conflicting",)),), progress=False)
    item = next(i for i in load_mmau(bench / SETS_JSON_NAME) if i["target_clip"] == 2)
    data = explorer_data(HookedAudioLM.from_pretrained("workshop"), item)
    return data, write_page(data, folder / "page.html")


async def _drive(path: Path, script: list[str], screenshot: Path) -> tuple[list, list, list]:
    """Load the page, evaluate each expression (awaiting promises), and collect errors and network requests."""
    import choreographer as choreo

    errors, requests, results = [], [], []
    async with choreo.Browser(path=CHROMIUM, headless=True) as browser:
        tab = await browser.create_tab("about:blank", width=1280, height=1400, window=True)

        async def error(event):
            errors.append(event["params"])

        async def console(event):
            if event["params"].get("type") in ("error", "assert"):
                errors.append(event["params"])

        async def request(event):
            url = event["params"]["request"]["url"]
            if not url.startswith(("data:", "file:", "about:")):
                requests.append(url)

        tab.subscribe("Runtime.exceptionThrown", error)
        tab.subscribe("Runtime.consoleAPICalled", console)
        tab.subscribe("Network.requestWillBeSent", request)
        for domain in ("Runtime", "Page", "Network"):
            await tab.send_command(f"{domain}.enable")
        loaded = tab.subscribe_once("Page.loadEventFired")
        await tab.send_command("Page.navigate", params={"url": path.resolve().as_uri()})
        await asyncio.wait_for(loaded, timeout=60)
        for expression in script:
            reply = await tab.send_command(
                "Runtime.evaluate", params={"expression": expression, "returnByValue": True, "awaitPromise": True}
            )
            result = reply["result"]
            if "exceptionDetails" in result:
                errors.append(result["exceptionDetails"])
                results.append(None)
            else:
                results.append(result["result"].get("value"))
        shot = await tab.send_command("Page.captureScreenshot", params={"format": "png", "captureBeyondViewport": True})
        screenshot.write_bytes(base64.b64decode(shot["result"]["data"]))
    return results, errors, requests


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
    results, errors, requests = asyncio.run(_drive(path, script, screenshot))
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
