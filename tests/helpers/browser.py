"""Open a local HTML page in headless Chromium with the network blocked, through the DevTools protocol (choreographer,
from kaleido): evaluate expressions, collect JavaScript errors, console errors and any non-local request.

The browser's proxy is a closed local port, so anything fetched from the network fails (and is recorded).
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
BLOCKED_PROXY = "127.0.0.1:9"  # the discard port: nothing listens, every proxied request fails

# Every plotly chart of the page, with the number of traces it holds and drew (SVG/GL trace groups).
PLOTLY_CHARTS = (
    "JSON.stringify(Array.from(document.querySelectorAll('.js-plotly-plot'), (d) => ({id: d.id, "
    "traces: (d._fullData || []).length, drawn: d.querySelectorAll('.trace, .hm, .heatmaplayer image').length})))"
)


def open_page(path: Path, script: list[str], screenshot: Path | None = None, width: int = 1280,
              height: int = 1000) -> tuple[list, list, list]:
    """Load `path`, evaluate each expression (awaiting promises); returns (results, errors, network requests)."""
    return asyncio.run(_drive(path, script, screenshot, width, height))


async def _drive(path: Path, script: list[str], screenshot: Path | None, width: int, height: int):
    import choreographer as choreo

    errors, requests, results = [], [], []
    async with choreo.Browser(path=CHROMIUM, headless=True, proxy_server=BLOCKED_PROXY) as browser:
        tab = await browser.create_tab("about:blank", width=width, height=height, window=True)

        async def error(event):
            errors.append(event["params"])

        async def console(event):
            if event["params"].get("type") in ("error", "assert"):
                errors.append(event["params"])

        async def log(event):
            if event["params"]["entry"].get("level") == "error":
                errors.append(event["params"]["entry"])

        async def request(event):
            url = event["params"]["request"]["url"]
            if not url.startswith(("data:", "file:", "about:", "blob:")):
                requests.append(url)

        tab.subscribe("Runtime.exceptionThrown", error)
        tab.subscribe("Runtime.consoleAPICalled", console)
        tab.subscribe("Log.entryAdded", log)
        tab.subscribe("Network.requestWillBeSent", request)
        for domain in ("Runtime", "Page", "Network", "Log"):
            await tab.send_command(f"{domain}.enable")
        await tab.send_command("Emulation.setDeviceMetricsOverride",
                               params={"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
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
        if screenshot is not None:
            shot = await tab.send_command("Page.captureScreenshot",
                                          params={"format": "png", "captureBeyondViewport": True})
            screenshot.write_bytes(base64.b64decode(shot["result"]["data"]))
    return results, errors, requests
