"""Writing figures: `save_figure` writes `<name>.html` and `<name>.png` (kaleido drives a local Chromium; on Debian
`apt-get install chromium`) into `figures/` or a folder you choose; PDF and SVG on request, laid out for a page
where a figure is wider than one (`plots.paper`). The HTML files work
offline: they load one copy of plotly.js, `plotly.min.js`, written once into the same folder (nothing comes from a
CDN). Each file appears complete or not at all (`files.write_atomically`), and each page's data is escaped by
`files.script_json`, as every page of the package is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from lens_audio.files import escape_html, script_json, write_atomically
from lens_audio.plots.paper import for_paper

STATIC_FORMATS = ("png", "svg", "pdf")
FORMATS = ("html", *STATIC_FORMATS)
PNG_SCALE = 2  # PNGs are drawn at twice the figure's size (sharp on high-density screens)
PLOTLY_JS = "plotly.min.js"  # the one local copy the HTML figures of a folder share
STATIC_EXPORT_HINT = (
    "static export (PNG/SVG/PDF) needs kaleido>=1 and a Chromium-based browser: on Debian/Ubuntu `apt-get install "
    "chromium`, elsewhere `plotly_get_chrome` or set BROWSER_PATH"
)


class StaticExportUnavailable(RuntimeError):
    """PNG/SVG/PDF export cannot run on this machine (kaleido or a Chromium browser is missing)."""


def save_figure(
    fig: go.Figure, name: str, folder: str | Path = "figures", formats: Sequence[str] = ("html", "png")
) -> list[Path]:
    """Write `fig` as `<folder>/<name>.<format>` for each format (html, png, svg, pdf); each file appears complete
    or not at all.

    An HTML figure loads `plotly.min.js` from its own folder (written there once, see `write_plotly_js`), so it
    works with no network. Raises `StaticExportUnavailable` (after writing the other formats) when PNG/SVG/PDF
    export cannot run here.
    """
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise ValueError(f"unknown figure format {unknown[0]!r}; use {', '.join(FORMATS)}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, missing = [], None
    for fmt in formats:
        if fmt == "html":
            write_plotly_js(folder)
            write_atomically(folder / f"{name}.html", figure_page(fig, name))
            written.append(folder / f"{name}.html")
            continue
        try:
            write_atomically(folder / f"{name}.{fmt}", lambda path, fmt=fmt: _write_static(fig, path, fmt))
            written.append(folder / f"{name}.{fmt}")
        except StaticExportUnavailable as exc:
            missing = exc
    if missing is not None:
        raise missing
    return written


def write_plotly_js(folder: str | Path) -> Path:
    """`<folder>/plotly.min.js`, the plotly.js bundled with the installed plotly; rewritten only if it differs."""
    target = Path(folder) / PLOTLY_JS
    source = get_plotlyjs()
    if not (target.exists() and target.stat().st_size == len(source.encode()) and target.read_text() == source):
        write_atomically(target, source)
    return target


def figure_page(fig: go.Figure, title: str) -> str:
    """One figure as an HTML page that loads `plotly.min.js` from its folder; the figure's JSON is inlined with
    `files.script_json`, the escaping every page of the package uses."""
    blob = script_json(json.loads(pio.to_json(fig, validate=False)))
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{escape_html(title)}</title>\n"
        f"<script src=\"{PLOTLY_JS}\"></script></head>\n<body>\n"
        "<div id=\"la-figure\" class=\"plotly-graph-div\" style=\"height:100%; width:100%;\"></div>\n"
        f"<script type=\"application/json\" id=\"la-figure-data\">{blob}</script>\n"
        "<script>const figure = JSON.parse(document.getElementById('la-figure-data').textContent);"
        "Plotly.newPlot('la-figure', figure.data, figure.layout, {responsive: true});</script>\n</body></html>\n"
    )


def save_figures(figures: dict[str, go.Figure], folder: str | Path, formats: Sequence[str] = ("html", "png"),
                 static_required: bool = False) -> tuple[dict[str, list[Path]], str | None]:
    """Write every figure; returns the paths per figure and, when static export was skipped, one line saying why.

    With `static_required=False` a machine without kaleido/Chromium still gets every HTML figure;
    with `static_required=True` the `StaticExportUnavailable` error propagates.
    """
    written: dict[str, list[Path]] = {}
    problem = None
    for name, fig in figures.items():
        wanted = [fmt for fmt in formats if problem is None or fmt not in STATIC_FORMATS]
        try:
            written[name] = save_figure(fig, name, folder, wanted)
        except StaticExportUnavailable as exc:
            if static_required:
                raise
            problem = str(exc)
            written[name] = save_figure(fig, name, folder, [fmt for fmt in formats if fmt not in STATIC_FORMATS])
    return written, problem


def _write_static(fig: go.Figure, path: str, fmt: str) -> None:
    if fmt in ("pdf", "svg"):  # print formats: a figure wider than a page is laid out for one (`plots.paper`)
        fig = for_paper(fig)
    try:
        fig.write_image(path, format=fmt, scale=PNG_SCALE if fmt == "png" else 1)
    except (ImportError, ValueError, RuntimeError) as exc:
        text = str(exc).lower()
        if "kaleido" in text or "chrome" in text or "browser" in text:
            raise StaticExportUnavailable(f"{fmt.upper()} not written: {STATIC_EXPORT_HINT}.") from exc
        raise
