"""The explorer as a JupyterLab widget: ipywidgets controls around plotly FigureWidgets.

Each control redraws only what depends on it: choosing a head (a click on the heatmap or the
dropdown) restyles the attention traces, the marker and the token panel; the beta slider and the
source layers recompute the option bars from the stored final-position residuals (no forward).
`select_head`, `set_beta` and `set_layers` are the callbacks, callable directly (tests, scripts).

A reload of the browser page on a running kernel rebuilds every view from the widgets' synced state: the
controls' values are traitlets, and each chart's figure is written back to its synced state after every redraw
(`keep_state`), so a reloaded view shows the beta, layers and head the controls show.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

from lens_audio.explorer import charts
from lens_audio.explorer.data import ExplorerData

BETA_RANGE = (-2.0, 6.0, 0.1)  # slider min, max, step


def _require_widgets():
    try:
        import anywidget  # noqa: F401  (plotly's FigureWidget needs it)
        import ipywidgets
    except ImportError as exc:
        raise ImportError(
            f"the notebook explorer needs ipywidgets and anywidget ({exc.name} is missing): pip install "
            "'lens_audio[notebooks]'; "
            "or write a standalone page with lens_audio.explorer.write_page / `lens-audio explore`."
        ) from exc
    return ipywidgets


class Explorer:
    """One prompt's explorer; display it in a notebook cell (it renders as its `widget`)."""

    def __init__(
        self,
        data: ExplorerData,
        head: tuple[int, int] | None = None,
        beta: float = 0.0,
        layers: Sequence[int] | None = None,
    ):
        import plotly.graph_objects as go

        W = _require_widgets()
        self.data = data
        self.head = tuple(map(int, head)) if head is not None else charts.default_head(data)
        data.check_head(*self.head)
        self.beta = float(beta)
        self.layers = data.check_layers(range(data.n_layers) if layers is None else layers)
        self.timeline = go.FigureWidget(charts.timeline(data, *self.head))
        self.head_map = go.FigureWidget(charts.head_map(data, *self.head))
        self.options = go.FigureWidget(charts.options_chart(data, self.beta, self.layers))
        self.head_map.data[0].on_click(self._clicked)
        self.head_menu = W.Dropdown(
            description="head",
            value=self.head,
            layout=W.Layout(width="160px"),
            options=[(f"L{l}H{h}", (l, h)) for l in range(data.n_layers) for h in range(data.n_heads)],
        )
        low, high, step = BETA_RANGE
        self.beta_slider = W.FloatSlider(
            description="beta", value=self.beta, min=low, max=high, step=step, continuous_update=True
        )
        self.layer_menu = W.SelectMultiple(
            description="from layers",
            value=tuple(self.layers),
            rows=min(data.n_layers, 6),
            options=[(f"L{l}", l) for l in range(data.n_layers)],
        )
        # observers skip values the callbacks themselves just wrote back, so nothing is redrawn twice
        self.head_menu.observe(lambda c: c["new"] != self.head and self.select_head(*c["new"]), names="value")
        self.beta_slider.observe(lambda c: c["new"] != self.beta and self.set_beta(c["new"]), names="value")
        self.layer_menu.observe(
            lambda c: c["new"] and sorted(c["new"]) != self.layers and self.set_layers(c["new"]), names="value"
        )
        self.tokens = W.HTML(charts.tokens_html(data.text_attention(*self.head)))
        players = [W.VBox([W.HTML(f"<b>{charts.clip_caption(data, k)}</b>"),
                           W.Audio(value=clip.wav_bytes(), format="wav", autoplay=False, loop=False)])
                   for k, clip in enumerate(data.clips)]
        controls = W.VBox([self.head_menu, self.beta_slider, self.layer_menu])
        self.widget = W.VBox([
            W.HTML(charts.item_html(data)), W.HTML(charts.default_head_note(data, *self.head)), W.HBox(players),
            self.timeline,
            W.HBox([self.head_map, W.VBox([controls, self.options])]),
            W.HTML("<b>Prompt tokens, shaded by the chosen head's attention</b>"), self.tokens,
        ])

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def _clicked(self, trace, points, state) -> None:
        if points.point_inds:
            layer, head = points.ys[0], points.xs[0]
            self.select_head(int(layer), int(head))

    def select_head(self, layer: int, head: int) -> None:
        """Draw head (layer, head): its attention over every clip's time axis and over the prompt's tokens."""
        self.data.check_head(layer, head)
        self.head = (layer, head)
        n = len(self.data.clips)
        with self.timeline.batch_update():
            for k, weights in enumerate(self.data.clip_attention(layer, head)):
                self.timeline.data[n + k].y = weights
            self.timeline.layout.title.text = charts.head_title(self.data, layer, head)
        with self.head_map.batch_update():
            self.head_map.data[1].x, self.head_map.data[1].y = [head], [layer]
        keep_state(self.timeline)
        keep_state(self.head_map)
        self.tokens.value = charts.tokens_html(self.data.text_attention(layer, head))
        if self.head_menu.value != self.head:
            self.head_menu.value = self.head

    def set_beta(self, beta: float) -> None:
        """Steering strength: recompute the option bars (a norm and an unembedding, no forward)."""
        self.beta = float(beta)
        self._update_options()
        if self.beta_slider.value != self.beta:
            self.beta_slider.value = self.beta

    def set_layers(self, layers: Sequence[int]) -> None:
        """Source layers of the audio-minus-silence direction: recompute the option bars."""
        self.layers = self.data.check_layers(layers)
        self._update_options()
        if tuple(self.layer_menu.value) != tuple(self.layers):
            self.layer_menu.value = tuple(self.layers)

    def _update_options(self) -> None:
        audio, silence = self.data.option_probabilities(self.beta, self.layers)
        with self.options.batch_update():
            self.options.data[0].y, self.options.data[1].y = audio.numpy(), silence.numpy()
            self.options.layout.title.text = charts.options_title(self.beta, self.layers)
        keep_state(self.options)

    def attention_traces(self) -> list[list[float]]:
        """What the timeline shows now: per clip, the chosen head's attention over its audio tokens."""
        n = len(self.data.clips)
        return [list(map(float, _values(trace.y))) for trace in self.timeline.data[n:]]

    def option_bars(self) -> tuple[list[float], list[float]]:
        """What the options chart shows now: (with the audio, with the silence twin)."""
        return tuple(list(map(float, _values(trace.y))) for trace in self.options.data[:2])


def keep_state(figure: Any) -> None:
    """Write a FigureWidget's current figure into its synced state (`_widget_data`, `_widget_layout`).

    plotly sends a redraw from Python to the open views as one-off messages and leaves the synced state at the
    figure the widget was built with; a view built later (a browser reload on the running kernel) renders that
    state, so without this it would show the first beta and head while the controls show the current ones. The two
    lines are plotly's own (`BaseFigureWidget._repr_mimebundle_` writes them before a first display); the open
    views do not redraw on them.
    """
    figure._widget_layout = deepcopy(figure._layout_obj._props)
    figure._widget_data = deepcopy(figure._data)


def _values(y: Any):
    """A trace's y as a sequence of numbers (plotly may hold numpy arrays as base64 `{"dtype", "bdata"}`)."""
    if isinstance(y, dict) and "bdata" in y:
        import numpy as np

        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"]))
    return y
