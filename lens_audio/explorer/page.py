"""The explorer as one self-contained HTML page: no server, no network, plotly.js and the audio inlined.

The page holds the three charts (as plotly JSON), each clip as a base64 WAV in an `<audio>` element,
and the numbers the controls need (`ExplorerData.page_payload`): every head's final-row attention,
the final-position residuals of every layer with the audio and with the silence twin, and the options'
unembedding rows, bias and the final norm's weight. `page.js` redraws the attention trace for a chosen
head and recomputes the option probabilities for a beta and a set of source layers in the browser,
with the same arithmetic as `ExplorerData.option_probabilities`. For tests it exposes
`window.__lens_select_head(layer, head)`, `__lens_set_beta(beta)`, `__lens_set_layers([...])` and
`__lens_state()`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io as pio
from plotly.offline import get_plotlyjs

from lens_audio.explorer import charts
from lens_audio.explorer.data import ExplorerData
from lens_audio.explorer.widget import BETA_RANGE
from lens_audio.files import escape_html, script_json, write_atomically

STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; }
.la-item th { text-align: left; padding-right: 12px; color: #555; font-weight: 600; vertical-align: top; }
.la-players { display: flex; gap: 18px; flex-wrap: wrap; margin: 10px 0; }
.la-players figure { margin: 0; } .la-players figcaption { font-weight: 600; }
.la-row { display: flex; gap: 12px; align-items: flex-start; flex-wrap: wrap; }
.la-controls { display: flex; flex-direction: column; gap: 10px; padding-top: 40px; min-width: 220px;
  max-width: 280px; }
.la-layers label { margin-right: 8px; white-space: nowrap; }
"""


def _array(values: np.ndarray) -> dict[str, Any]:
    values = np.ascontiguousarray(values, dtype="<f4")
    return {"shape": list(values.shape), "b64": base64.b64encode(values.tobytes()).decode("ascii")}


def page_html(
    data: ExplorerData, head: tuple[int, int] | None = None, beta: float = 0.0, layers: Sequence[int] | None = None
) -> str:
    """The whole page as a string; `write_page` writes it."""
    head = tuple(map(int, head)) if head is not None else charts.default_head(data)
    data.check_head(*head)
    layers = data.check_layers(range(data.n_layers) if layers is None else layers)
    figures = {
        "timeline": charts.timeline(data, *head),
        "heads": charts.head_map(data, *head),
        "options": charts.options_chart(data, beta, layers),
    }
    payload = {
        "figures": {name: json.loads(pio.to_json(fig, validate=False)) for name, fig in figures.items()},
        "arrays": {name: (_array(v) if isinstance(v, np.ndarray) else v) for name, v in data.page_payload().items()},
        "groups": data.token_groups(), "n_layers": data.n_layers, "n_heads": data.n_heads, "n_clips": len(data.clips),
        "head": list(head), "beta": float(beta), "layers": layers, "beta_range": list(BETA_RANGE),
        "titles": {"head": charts.HEAD_TITLE, "options": charts.OPTIONS_TITLE},
    }
    players = "".join(
        f"<figure><figcaption>{escape_html(charts.clip_caption(data, k))}</figcaption>"
        f"<audio controls preload='auto' data-clip='{k}' "
        f"src='data:audio/wav;base64,{base64.b64encode(clip.wav_bytes()).decode('ascii')}'>"
        "</audio></figure>"
        for k, clip in enumerate(data.clips)
    )
    title = escape_html(f"lens_audio explorer: {(data.item or {}).get('id', 'prompt')}")
    blob = script_json(payload)
    script = resources.files("lens_audio.explorer").joinpath("page.js").read_text()
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>\n"
        f"<script>{get_plotlyjs()}</script></head>\n<body>\n<h2>{title}</h2>\n{charts.item_html(data)}\n"
        f"<p class='la-note'>{escape_html(charts.default_head_note(data, *head))}</p>\n"
        f"<div class='la-players'>{players}</div>\n<div id='la-timeline'></div>\n"
        "<div class='la-row'><div id='la-heads'></div><div class='la-controls'>"
        "<label>head <select id='la-head'></select></label>"
        "<label>beta <input id='la-beta' type='range'> <span id='la-beta-value'></span></label>"
        "<div class='la-layers' id='la-layers'>direction from layers:<br></div></div><div "
        "id='la-options'></div></div>\n"
        "<h3>Prompt tokens, shaded by the chosen head's attention</h3><div id='la-tokens'></div>\n"
        f"<script type='application/json' id='la-data'>{blob}</script>\n"
        f"<script>{script}</script>\n</body></html>\n"
    )


__all__ = ["page_html", "script_json", "write_page"]  # script_json: lens_audio.files's, named here for old callers


def write_page(data: ExplorerData, path: str | Path, head: tuple[int, int] | None = None, beta: float = 0.0,
               layers: Sequence[int] | None = None) -> Path:
    """Write the explorer of `data` as one self-contained HTML file at `path`."""
    path = Path(path)
    write_atomically(path, page_html(data, head, beta, layers))
    return path
