"""Feature dashboards you can hear: what one SAE feature responds to across a benchmark.

`feature_dashboard(model, sae, items, feature)` computes, from the benchmark's activations at the SAE's hook
(`collect_activations`, or an `ActivationSet` you pass):

- the top-activating rows; for audio tokens a playable snippet of the clip around each (the token's 40 ms, with
  `context_s` either side) and the clip's class where the items label it; for text positions the prompt tokens
  around each, shaded by the feature's activation;
- for the top audio rows, the clip's log-mel spectrogram with the token's frames marked, above the feature's
  activation over the clip's tokens;
- the histogram of the feature's non-zero activations;
- the logits its decoder direction promotes and suppresses (`W_dec[feature] @ W_U`, the direct path).

`FeatureDashboard` shows itself in Jupyter (an offline iframe of the page) and `write_page(path)` writes the same
as one self-contained HTML page: plotly.js inlined (as the explorer's page), the snippets as base64 WAVs, no network.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import soundfile as sf
import torch
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from lens_audio.benchmark.prompts import render_prompt
from lens_audio.explorer.charts import STYLE, tokens_html
from lens_audio.explorer.data import ClipView, clip_views
from lens_audio.files import escape_html, script_json, write_atomically
from lens_audio.inputs.audio import TARGET_SAMPLE_RATE
from lens_audio.plots.tokens import centred, token_bars, top_and_bottom
from lens_audio.sae.activations import ActivationSet, collect_activations, unique_by_audio
from lens_audio.sae.features import row_classes
from lens_audio.sae.sae import SparseAutoencoder

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

N_LOGITS = 10
N_SPECTROGRAMS = 4
TEXT_CONTEXT = (8, 3)  # prompt tokens shown before and after a text row
PAGE_STYLE = ("body{font-family:system-ui,sans-serif;margin:16px;color:#222} .la-top td,.la-top th{padding:3px 8px;"
              "text-align:left;vertical-align:middle} .la-top tr:nth-child(even){background:#f6f6f6}")


@dataclass
class TopActivation:
    """One of the feature's top rows and where it sits."""

    value: float
    item_id: str
    position: int  # prompt position (decoder hooks) or frame (encoder hooks)
    clip: int  # -1 for text rows
    token_in_clip: int
    label: str | None = None  # the clip's class, where the items say
    start_s: float | None = None  # the token's stretch of its clip (audio rows)
    end_s: float | None = None
    snippet: bytes | None = field(default=None, repr=False)  # WAV: the token's audio with context
    snippet_start_s: float | None = None
    context: list[tuple[str, float]] | None = None  # text rows: (token, activation) around the row


@dataclass
class FeatureDashboard:
    hook_name: str
    positions: str
    feature: int
    top: list[TopActivation]
    values: np.ndarray  # the feature's activation on every row
    promoted: list[tuple]  # (text, centred logit[, token id]), `decoder_logits`
    suppressed: list[tuple]
    spectrograms: list[tuple[TopActivation, ClipView, np.ndarray]] = field(repr=False)  # with per-token activation
    n_items: int = 0

    @property
    def fraction_active(self) -> float:
        return float((self.values > 0).mean()) if len(self.values) else 0.0

    # ------------------------------------------------------------ charts

    def histogram(self) -> go.Figure:
        active = self.values[self.values > 0]
        fig = go.Figure(go.Histogram(x=active, nbinsx=40, marker_color="#1f77b4"))
        fig.update_layout(**STYLE, height=300, title=f"Non-zero activations ({len(active)} of {len(self.values)} rows, "
                          f"{100 * self.fraction_active:.2f}%)", xaxis_title="activation", yaxis_title="rows")
        return fig

    def logits_chart(self) -> go.Figure:
        fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.25,
                            subplot_titles=("promoted (highest)", "suppressed (lowest)"))
        fig.add_trace(token_bars(self.promoted, "#2ca02c"), row=1, col=1)
        fig.add_trace(token_bars(self.suppressed, "#d62728", largest_first=False), row=1, col=2)
        fig.update_layout(**STYLE, height=340, title="Logits of the decoder direction (W_dec[f] @ W_U), centred on "
                          "their mean over the vocabulary")
        return fig

    def spectrogram_chart(self) -> go.Figure | None:
        if not self.spectrograms:
            return None
        n = len(self.spectrograms)
        titles = [f"{t.item_id}<br>clip {t.clip + 1}" + (f" ({t.label})" if t.label else "") for t, _, _ in
                  self.spectrograms]  # two short lines each: side-by-side titles do not run into each other
        fig = make_subplots(rows=2, cols=n, row_heights=[0.65, 0.35], shared_xaxes=True, vertical_spacing=0.08,
                            subplot_titles=titles + [""] * n)
        for col, (top, clip, trace) in enumerate(self.spectrograms, start=1):
            times = (np.arange(clip.mel.shape[1]) + 0.5) * clip.frame_seconds
            fig.add_trace(go.Heatmap(z=clip.mel, x=times, colorscale="Viridis", showscale=False,
                                     hovertemplate="%{x:.2f} s, mel bin %{y}<extra></extra>"), row=1, col=col)
            fig.add_vrect(x0=top.start_s, x1=top.end_s, line=dict(color="#ff7f0e", width=2),
                          fillcolor="rgba(255,127,14,0.25)", row=1, col=col)
            fig.add_trace(go.Scatter(x=clip.token_times, y=trace, mode="lines+markers", line=dict(color="#d62728"),
                                     showlegend=False, hovertemplate="%{x:.2f} s: %{y:.3f}<extra></extra>"),
                          row=2, col=col)
            fig.add_vrect(x0=top.start_s, x1=top.end_s, fillcolor="rgba(255,127,14,0.25)", line_width=0, row=2,
                          col=col)
        fig.update_layout(**STYLE, height=440, title="Top audio tokens: spectrogram (token marked) and the feature "
                          "over the clip")
        fig.update_annotations(font_size=11)
        fig.update_layout(margin=dict(t=110))
        return fig

    def figures(self) -> dict[str, go.Figure]:
        figs = {"spectrograms": self.spectrogram_chart(), "histogram": self.histogram(), "logits": self.logits_chart()}
        return {name: fig for name, fig in figs.items() if fig is not None}

    # ------------------------------------------------------------ page

    def _table(self) -> str:
        rows = []
        for rank, top in enumerate(self.top, start=1):
            if top.snippet is not None:
                where = (f"clip {top.clip + 1}, token {top.token_in_clip} ({top.start_s:.2f}-{top.end_s:.2f} s)")
                sound = ("<audio controls preload='auto' class='la-snippet' "
                         f"data-start='{top.start_s - top.snippet_start_s:.3f}' "
                         f"src='data:audio/wav;base64,{base64.b64encode(top.snippet).decode('ascii')}'></audio>")
            else:
                where, sound = f"position {top.position}", tokens_html(top.context or [])
            label = escape_html(top.label or "")
            rows.append(f"<tr><td>{rank}</td><td>{top.value:.3f}</td><td>{escape_html(top.item_id)}</td>"
                        f"<td>{where}</td><td>{label}</td><td>{sound}</td></tr>")
        return ("<table class='la-top'><tr><th>#</th><th>activation</th><th>item</th><th>where</th><th>class</th>"
                "<th>listen / context</th></tr>" + "".join(rows) + "</table>")

    def page_html(self) -> str:
        title = escape_html(f"lens_audio SAE feature {self.feature} at {self.hook_name} ({self.positions} positions)")
        figs = {name: json.loads(pio.to_json(fig, validate=False)) for name, fig in self.figures().items()}
        blob = script_json(figs)
        divs = "".join(f"<div id='la-fig-{name}' class='la-fig'></div>" for name in figs)
        script = ("const figs = JSON.parse(document.getElementById('la-figs').textContent);"
                  "for (const [name, fig] of Object.entries(figs)) {"
                  "Plotly.newPlot('la-fig-' + name, fig.data, fig.layout, {responsive: true}); }")
        return (
            f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{PAGE_STYLE}</style>\n"
            f"<script>{get_plotlyjs()}</script></head>\n<body>\n<h2>{title}</h2>\n"
            f"<p>Active on {100 * self.fraction_active:.2f}% of {len(self.values)} rows from {self.n_items} items; "
            f"top {len(self.top)} rows below (snippets: the token's audio with context).</p>\n"
            f"{self._table()}\n{divs}\n"
            f"<script type='application/json' id='la-figs'>{blob}</script>\n<script>{script}</script>\n"
            "</body></html>\n"
        )

    def write_page(self, path: str | Path) -> Path:
        """Write the page whole or not at all (`files.write_atomically`: a full disk names `path`)."""
        return write_atomically(path, self.page_html())

    def _repr_html_(self) -> str:
        page = escape_html(self.page_html())
        return f"<iframe srcdoc=\"{page}\" style='width:100%;height:1300px;border:0'></iframe>"


def _snippet(clip: ClipView, start_s: float, end_s: float, context_s: float) -> tuple[bytes, float]:
    first = max(0.0, start_s - context_s)
    last = min(len(clip.waveform) / TARGET_SAMPLE_RATE, end_s + context_s)
    samples = clip.waveform[int(first * TARGET_SAMPLE_RATE) : int(np.ceil(last * TARGET_SAMPLE_RATE))]
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(samples, -1, 1), TARGET_SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), first


@torch.no_grad()
def feature_dashboard(
    model: "HookedAudioLM",
    sae: SparseAutoencoder,
    items: Sequence[dict[str, Any]],
    feature: int,
    activations: ActivationSet | None = None,
    prompt: str | Callable[[dict[str, Any]], str] | None = None,
    n_top: int = 12,
    context_s: float = 0.25,
    progress: bool = False,
) -> FeatureDashboard:
    """The dashboard of `feature` over `items` (see the module docstring); `activations` at the SAE's hook and
    positions (default: collected here, one pass)."""
    from lens_audio.paper.profile import profile_for

    if not 0 <= feature < sae.cfg.d_sae:
        raise ValueError(f"feature {feature} does not exist: this SAE has features 0-{sae.cfg.d_sae - 1}.")
    template = prompt if prompt is not None else profile_for(model.cfg.model_name).prompt
    if activations is None:
        chosen = unique_by_audio(items) if sae.cfg.positions == "audio" else list(items)
        activations = collect_activations(model, chosen, [sae.cfg.hook_name], sae.cfg.positions, template,
                                          progress=progress)[sae.cfg.hook_name]
    if activations.hook_name != sae.cfg.hook_name:
        raise ValueError(f"these activations are from {activations.hook_name}, the SAE reads {sae.cfg.hook_name}.")
    values = feature_values(sae, activations, feature)
    order = values.argsort(descending=True)[:n_top]
    order = order[values[order] > 0]
    by_id = {str(item["id"]): item for item in items}
    labels = row_classes(activations, items)
    tops, views, spectrograms = [], {}, []
    for row in order.tolist():
        item_id = activations.item_ids[int(activations.item[row])]
        top = TopActivation(float(values[row]), item_id, int(activations.position[row]), int(activations.clip[row]),
                            int(activations.token_in_clip[row]), labels[row])
        if item_id not in views and item_id in by_id:
            item = by_id[item_id]
            batch = model.to_batch(item["audio_path"], render_prompt(item, template))
            views[item_id] = (batch, clip_views(model, batch))
        if item_id in views:
            batch, clips = views[item_id]
            if top.clip >= 0:
                clip = clips[top.clip]
                n = clip.span[1] - clip.span[0] if not sae.cfg.hook_name.startswith("audio.") else None
                step = clip.seconds / (n or _clip_rows(activations, int(activations.item[row]), top.clip))
                top.start_s, top.end_s = top.token_in_clip * step, (top.token_in_clip + 1) * step
                top.snippet, top.snippet_start_s = _snippet(clip, top.start_s, top.end_s, context_s)
                if len(spectrograms) < N_SPECTROGRAMS:
                    same = (activations.item == activations.item[row]) & (activations.clip == top.clip)
                    trace = values[same][activations.token_in_clip[same].argsort()].numpy()
                    spectrograms.append((top, clip, trace))
            else:
                top.context = _context(model, batch, activations, values, row)
        tops.append(top)
    promoted, suppressed = decoder_logits(model, sae, feature)
    return FeatureDashboard(sae.cfg.hook_name, sae.cfg.positions, feature, tops, values.numpy(), promoted,
                            suppressed, spectrograms, len(activations.item_ids))


def _clip_rows(activations: ActivationSet, item: int, clip: int) -> int:
    return int(((activations.item == item) & (activations.clip == clip)).sum())


def feature_values(sae: SparseAutoencoder, activations: ActivationSet, feature: int, chunk: int = 8192) -> torch.Tensor:
    """The feature's activation on every row of `activations` (CPU, float32)."""
    parts = [sae.encode(activations.acts[s : s + chunk].to(sae.device))[:, feature].float().cpu()
             for s in range(0, len(activations), chunk)]
    return torch.cat(parts)


def decoder_logits(model: "HookedAudioLM", sae: SparseAutoencoder, feature: int,
                   n: int = N_LOGITS) -> tuple[list[tuple[str, float, int]], list[tuple[str, float, int]]]:
    """The tokens the feature's decoder direction promotes and suppresses most, through the unembedding:
    (text, logit centred on its vocabulary mean, token id), from the extreme inwards (`plots.tokens`)."""
    if sae.cfg.hook_name.startswith("audio."):
        return [], []
    direction = sae.W_dec[feature].to(model.W_U.device, model.W_U.dtype)
    logits = centred((direction @ model.W_U).cpu())
    decode = lambda ids: [(model.tokenizer.decode([i]), float(logits[i]), i) for i in ids]
    highest, lowest = top_and_bottom(logits, n)
    return decode(highest), decode(lowest)


def _context(model, batch, activations: ActivationSet, values: torch.Tensor, row: int) -> list[tuple[str, float]]:
    """Prompt tokens around a text row with the feature's activation at each (0 where not a row); a clip is one
    `[Audio k]` entry."""
    item = int(activations.item[row])
    here = activations.item == item
    at = dict(zip(activations.position[here].tolist(), values[here].tolist()))
    position = int(activations.position[row])
    before, after = TEXT_CONTEXT
    ids = batch.input_ids[0].tolist()
    spans = {start: (k, end) for k, (start, end) in enumerate(batch.audio_spans[0])}
    out, pos = [], 0
    while pos < len(ids):
        if pos in spans:
            k, end = spans[pos]
            entry, pos = (f"[Audio {k + 1}]", 0.0), end
        else:
            entry, pos = (model.tokenizer.decode([ids[pos]]), at.get(pos, 0.0)), pos + 1
        out.append((pos, entry))
    index = next(i for i, (p, _) in enumerate(out) if p == position + 1)
    return [entry for _, entry in out[max(0, index - before) : index + after + 1]]
