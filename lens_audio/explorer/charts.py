"""The explorer's charts and text panels, built once from `ExplorerData`; the notebook widget and the page update them.

Trace order is fixed so both views can restyle by index: the timeline holds each clip's spectrogram
(traces `0..C-1`) then each clip's attention trace (`C..2C-1`); the head map holds the listening-signal
heatmap (trace 0) and the marker of the chosen head (trace 1); the options chart holds the bars with
the audio (trace 0) and with the silence twin (trace 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lens_audio.files import escape_html
from lens_audio.plots.tokens import unique_labels

if TYPE_CHECKING:
    from lens_audio.explorer.data import ExplorerData

STYLE = dict(template="plotly_white", font=dict(size=13), margin=dict(l=60, r=20, t=50, b=45))
TARGET_COLOUR = "rgba(255, 160, 0, 0.15)"


DEFAULT_HEAD_RULE = (
    "the head whose final-token attention puts the most mass on the clip the question asks about "
    "(on all the audio when the item names no clip)"
)


def default_head(data: "ExplorerData") -> tuple[int, int]:
    """The head the explorer opens on: see `DEFAULT_HEAD_RULE`."""
    clips = [data.clips[data.target_clip]] if data.target_clip is not None else data.clips
    rows = data.rows.float()
    mass = sum(rows[:, :, clip.span[0] : clip.span[1]].sum(-1) for clip in clips).numpy()
    layer, head = np.unravel_index(int(np.nanargmax(mass)), mass.shape)
    return int(layer), int(head)


def default_head_note(data: "ExplorerData", layer: int, head: int) -> str:
    """One line saying which head the page opened on and why (or that the caller chose it)."""
    if (layer, head) != default_head(data):
        return f"Opened on L{layer}H{head}, as requested."
    return f"Opened on L{layer}H{head}: {DEFAULT_HEAD_RULE}."


def clip_offsets(data: "ExplorerData") -> list[float]:
    """Start of each clip on the shared timeline: clips end to end, a small gap between them."""
    gap = 0.03 * sum(clip.seconds for clip in data.clips)
    starts = np.cumsum([0.0] + [clip.seconds + gap for clip in data.clips[:-1]])
    return [float(s) for s in starts]


HEAD_TITLE = "L{layer}H{head}: {mass} of the final token's attention on the audio ({clips})"  # page.js fills it too
OPTIONS_TITLE = "Options, beta = {beta}, direction from layers {layers}"


def head_title(data: "ExplorerData", layer: int, head: int) -> str:
    """The timeline's title: the head and its attention mass on all the audio and on each clip."""
    per_clip = [float(w.sum()) for w in data.clip_attention(layer, head)]
    clips = ", ".join(f"Audio {k + 1} {m:.3f}" for k, m in enumerate(per_clip))
    return HEAD_TITLE.format(layer=layer, head=head, mass=f"{sum(per_clip):.3f}", clips=clips)


def clip_caption(data: "ExplorerData", k: int) -> str:
    """"Audio k (0.90 s)", "(asked about)" for the clip the question names; the player may round short clips to 0:00."""
    asked = " (asked about)" if k == data.target_clip else ""
    return f"Audio {k + 1}{asked}, {data.clips[k].seconds:.2f} s"


def clip_ticks(data: "ExplorerData") -> tuple[list[float], list[str]]:
    """Ticks in each clip's own seconds (0 at each clip's start) on the end-to-end timeline."""
    longest = max(clip.seconds for clip in data.clips)
    step = next(s for s in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 30) if longest / s <= 5)
    values, texts = [], []
    for clip, start in zip(data.clips, clip_offsets(data)):
        for t in np.arange(0, clip.seconds + 1e-9, step):
            values.append(float(start + t))
            texts.append(f"{t:g}")
    return values, texts


def timeline(data: "ExplorerData", layer: int, head: int) -> go.Figure:
    """Every clip's log-mel spectrogram above the chosen head's attention to its audio tokens, on one seconds axis."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.55, 0.45], vertical_spacing=0.06)
    offsets = clip_offsets(data)
    for k, (clip, start) in enumerate(zip(data.clips, offsets)):
        times = start + (np.arange(clip.mel.shape[1]) + 0.5) * clip.frame_seconds
        fig.add_trace(
            go.Heatmap(
                z=clip.mel,
                x=times,
                colorscale="Viridis",
                showscale=False,
                name=f"Audio {k + 1}",
                hovertemplate=f"Audio {k + 1}: " + "%{x:.2f} s on the timeline, mel bin %{y}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    for k, (clip, start, weights) in enumerate(zip(data.clips, offsets, data.clip_attention(layer, head))):
        fig.add_trace(
            go.Scatter(
                x=start + clip.token_times,
                y=weights,
                mode="lines",
                name=f"Audio {k + 1}",
                showlegend=False,
                customdata=clip.token_times,
                line=dict(width=2, color="#d62728"),
                hovertemplate=f"Audio {k + 1}, " + "%{customdata:.2f} s: %{y:.4f}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    for k, (clip, start) in enumerate(zip(data.clips, offsets)):
        asked = k == data.target_clip
        if asked:
            fig.add_vrect(x0=start, x1=start + clip.seconds, fillcolor=TARGET_COLOUR, line_width=0, row="all", col=1)
        fig.add_annotation(x=start + clip.seconds / 2, y=1.0, xref="x", yref="paper", yanchor="bottom", showarrow=False,
                           text=f"<b>Audio {k + 1}</b>" + (" (asked about)" if asked else ""))
    fig.update_yaxes(title_text="mel bin", row=1, col=1)
    fig.update_yaxes(title_text="share of attention", range=[0, 1], row=2, col=1)  # absolute: 0-1 for every head
    ticks, texts = clip_ticks(data)
    fig.update_xaxes(tickmode="array", tickvals=ticks, ticktext=texts, row=1, col=1)
    fig.update_xaxes(title_text="time in each clip (s)", tickmode="array", tickvals=ticks, ticktext=texts, row=2, col=1)
    title = dict(text=head_title(data, layer, head), y=0.98, x=0.5, xanchor="center", font=dict(size=14))
    fig.update_layout(title=title, height=430, **STYLE)
    fig.update_layout(margin=dict(t=70))
    return fig


def head_map(data: "ExplorerData", layer: int, head: int) -> go.Figure:
    """The listening signal of every head (layer x head); click a cell to choose that head."""
    mass = data.audio_mass.float().numpy()
    names = [[f"L{l}H{h}" for h in range(data.n_heads)] for l in range(data.n_layers)]
    fig = go.Figure(go.Heatmap(z=mass, x=list(range(data.n_heads)), y=list(range(data.n_layers)), colorscale="Viridis",
                               zmin=0, zmax=1, colorbar=dict(title="audio<br>mass", thickness=12), customdata=names,
                               hovertemplate="%{customdata}: audio mass %{z:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[head], y=[layer], mode="markers", hoverinfo="skip", showlegend=False,
                             marker=dict(symbol="square-open", size=18, color="red", line=dict(width=3))))
    fig.update_xaxes(
        title_text="head", tickvals=list(range(data.n_heads)), ticktext=[f"H{h}" for h in range(data.n_heads)]
    )
    fig.update_yaxes(title_text="layer", autorange="reversed", tickvals=list(range(data.n_layers)),
                     ticktext=[f"L{l}" for l in range(data.n_layers)])
    fig.update_layout(
        title=dict(text="Listening signal (click a head)", x=0.5, xanchor="center"), width=400, height=360, **STYLE
    )
    return fig


def option_labels(data: "ExplorerData") -> list[str]:
    item = data.item or {}
    labels = []
    for name in data.options:
        marks = (" ✓" if name == item.get("answer") else "") + (
            " (hinted)" if name == item.get("hinted_choice") else ""
        )
        labels.append(name + marks)
    return unique_labels(labels, quote=False)  # a bar per option, even when two read the same


def options_title(beta: float, layers: Sequence[int]) -> str:
    return OPTIONS_TITLE.format(beta=f"{beta:g}", layers=", ".join(map(str, layers)))


def options_chart(data: "ExplorerData", beta: float, layers: Sequence[int]) -> go.Figure:
    """The options' probabilities (softmax over the options) under steering, with the audio and with its silence
    twin."""
    audio, silence = data.option_probabilities(beta, layers)
    labels = option_labels(data)
    fig = go.Figure([
        go.Bar(x=labels, y=audio.numpy(), name="with the audio", marker_color="#1f77b4",
               hovertemplate="%{x}: %{y:.3f}<extra>with the audio</extra>"),
        go.Bar(x=labels, y=silence.numpy(), name="silence twin, same push", marker_color="#bbbbbb",
               hovertemplate="%{x}: %{y:.3f}<extra>silence twin</extra>"),
    ])
    fig.update_yaxes(title_text="probability among options", range=[0, 1])
    fig.update_layout(title=dict(text=options_title(beta, layers), x=0.5, xanchor="center", font=dict(size=13)),
                      barmode="group", width=480, height=360, legend=dict(orientation="h", y=-0.2), **STYLE)
    return fig


def item_html(data: "ExplorerData") -> str:
    """The item's question, hint condition and right answer (or a note for a bare prompt)."""
    item = data.item
    clips = f"{len(data.clips)} clip{'s' if len(data.clips) > 1 else ''}"
    if not item:
        tracked = escape_html(", ".join(data.options))
        return f"<div class='la-item'><b>Prompt</b> with {clips}; options tracked: {tracked}</div>"
    rows = [
        ("item", item.get("id")),
        ("question", item.get("question")),
        ("choices", ", ".join(item.get("choices", []))),
        ("hint", _hint(item)),
        ("right answer", item.get("answer")),
        ("asked about", f"Audio {item['target_clip']} of {len(data.clips)}" if "target_clip" in item else clips),
    ]
    cells = "".join(
        f"<tr><th>{escape_html(k)}</th><td>{escape_html(str(v))}</td></tr>" for k, v in rows if v is not None
    )
    return f"<table class='la-item'>{cells}</table>"


def _hint(item: dict) -> str | None:
    hint = item.get("hint") or item.get("sub-category")
    if hint is None:
        return None
    return f"{hint} (names {item['hinted_choice']})" if item.get("hinted_choice") else str(hint)


def tokens_html(pairs: Sequence[tuple[str, float]]) -> str:
    """The prompt's tokens shaded by the attention they receive (darkest = the most attended entry)."""
    top = max((value for _, value in pairs), default=0.0) or 1.0
    spans = []
    for text, value in pairs:
        alpha = min(1.0, value / top)
        shown = escape_html(text).replace("\n", "↵<br>")
        spans.append(f"<span title='{value:.4f}' style='background: rgba(214, 39, 40, {alpha:.3f}); "
                     f"padding: 1px 0; border-radius: 2px'>{shown}</span>")
    return (
        "<div class='la-tokens' style='font-family: monospace; white-space: pre-wrap; line-height: 1.7'>"
        + "".join(spans)
        + "</div>"
    )
