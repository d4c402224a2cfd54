"""Plotly figures for the analyses, in one style (writing them: `lens_audio.plots.export`).

Each function takes an analysis result and returns a `plotly.graph_objects.Figure`; nothing here
computes model quantities.

Figures that show heads take `marked`, labelled head lists (e.g. {"specialists": [...], "largest
ablation effect": [...]}) drawn as outlined cells, so every selection rule is visible on every map.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lens_audio.plots.paper import WRAP_COLUMNS

if TYPE_CHECKING:
    from lens_audio.analysis.lens import LogitLens
    from lens_audio.analysis.listening import ListeningSignal
    from lens_audio.analysis.validity import NoiseSweep, ValidityControls
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.paper.rivals import RivalComparison

DIVERGING = "RdBu_r"
SEQUENTIAL = "Viridis"
AUDIO_TOKEN_SECONDS = 0.04  # one audio token per 40 ms (25 per second)
FRAME_SECONDS = 0.01  # one mel frame per 10 ms
LAYOUT = dict(
    template="plotly_white",
    font=dict(size=14),
    title=dict(x=0.5, xanchor="center"),
    margin=dict(l=70, r=30, t=70, b=60),
)


def _styled(fig: go.Figure, title: str, width: int = 760, height: int = 520) -> go.Figure:
    fig.update_layout(title_text=title, width=width, height=height, **LAYOUT)
    return fig


HeadLists = Mapping[str, Sequence[tuple[int, int]]]  # label -> heads, e.g. {"specialists": [(1, 0), (5, 4)]}
MARK_SYMBOLS = ("square-open", "circle-open", "diamond-open", "cross-thin-open")
MARK_COLOURS = ("black", "#ff7f0e", "#2ca02c", "#9467bd")


# ---- head maps (correlation, audio mass, ablation, head patching)
def head_heatmap(values, title: str, colorbar: str, diverging: bool = True, hover: str = "value",
                 blank_reason: str = "undefined (no variance across examples)",
                 marked: HeadLists | None = None) -> go.Figure:
    """A layer x head map (e.g. correlation r, ablation effect, patching); diverging colours centred on 0.

    NaN cells stay blank; their hover text and a note under the map give `blank_reason`. `marked` outlines
    each labelled list of heads (one symbol per list, named in the legend).
    """
    z = np.asarray(values, dtype=float)
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    text = np.where(np.isnan(z), blank_reason, np.vectorize(lambda v: f"{hover} {v:.3f}")(np.nan_to_num(z)))
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"H{h}" for h in range(z.shape[1])], y=[f"L{l}" for l in range(z.shape[0])],
        colorscale=DIVERGING if diverging else SEQUENTIAL, zmid=0 if diverging else None,
        zmin=-limit if diverging else None, zmax=limit if diverging else None, text=text,
        colorbar=dict(title=colorbar), hovertemplate="layer %{y}, head %{x}<br>%{text}<extra></extra>",
    ))
    fig.update_xaxes(title_text="head")
    fig.update_yaxes(title_text="layer", autorange="reversed")
    mark_heads(fig, marked)
    blanks = int(np.isnan(z).sum())
    fig = _styled(fig, title)
    if marked:
        fig.update_layout(legend=dict(orientation="h", y=-0.16, x=0), margin=dict(b=110))
    if blanks:  # grey behind the map, so a blank cell is not read as a value of 0 (white)
        fig.update_xaxes(showgrid=False)
        fig.update_yaxes(showgrid=False)
        fig.add_annotation(
            text=f"{blanks} grey cell{'s' if blanks > 1 else ''}: {blank_reason}",
            xref="paper",
            yref="paper",
            x=0,
            y=-0.3 if marked else -0.24,
            showarrow=False,
            xanchor="left",
            font=dict(size=12, color="#555"),
        )
        fig.update_layout(plot_bgcolor="#bdbdbd", margin=dict(b=130 if marked else 100))
    return fig


def mark_heads(fig: go.Figure, marked: HeadLists | None) -> go.Figure:
    """Outline each labelled list of heads on a `head_heatmap` (categorical axes "H{head}", "L{layer}")."""
    for n, (label, heads) in enumerate((marked or {}).items()):
        heads = [tuple(map(int, h)) for h in heads]
        if not heads:
            continue
        names = ", ".join(f"L{l}H{h}" for l, h in heads)
        fig.add_trace(go.Scatter(
            x=[f"H{h}" for _, h in heads], y=[f"L{l}" for l, _ in heads], mode="markers", name=f"{label}: {names}",
            marker=dict(symbol=MARK_SYMBOLS[n % len(MARK_SYMBOLS)], size=26 - 5 * n, color=MARK_COLOURS[n % 4],
                        line=dict(width=3)),
            hovertemplate=f"{label}: " + "%{y}%{x}<extra></extra>",
        ))
    return label_groups(fig)


def label_groups(fig: go.Figure) -> go.Figure:
    """The one legend rule: every marked group is named in the legend, even when it is the only one (plotly hides
    a legend of one trace by default). Called by every chart that marks groups."""
    return fig.update_layout(showlegend=True)


def grouped_points(groups: Sequence[str], series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
                   title: str, x_title: str, y_title: str) -> go.Figure:
    """Categorical comparison: one dot per (group, series) with CI whiskers, series side by side so every one shows.

    `series[name] = (values, lows, highs)`, one entry per group.
    """
    fig = go.Figure()
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    width = 0.6 / max(1, len(series))
    for n, (name, (values, lows, highs)) in enumerate(series.items()):
        x = [g + (n - (len(series) - 1) / 2) * width for g in range(len(groups))]
        values, lows, highs = np.asarray(values, float), np.asarray(lows, float), np.asarray(highs, float)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=values,
                mode="markers",
                name=name,
                marker=dict(size=11, color=colours[n % len(colours)]),
                error_y=dict(
                    type="data", symmetric=False, array=highs - values, arrayminus=values - lows, thickness=1.5, width=4
                ),
                customdata=np.stack([lows, highs], 1),
                text=list(groups),
                hovertemplate=f"{name}, %{{text}}<br>%{{y:.1f}} "
                "[%{customdata[0]:.1f}, %{customdata[1]:.1f}]<extra></extra>",
            )
        )
    fig.update_xaxes(title_text=x_title, tickmode="array", tickvals=list(range(len(groups))), ticktext=list(groups))
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return _styled(fig, title)


# ---- control distribution (specialists against random-head draws)
def control_distribution_plot(
    accuracies: Sequence[float],
    specialists: float,
    percentile: float,
    title: str,
    n_items: int,
    label: str = "accuracy (%)",
    matched: Sequence[float] | None = None,
    not_drawn: Sequence[str] = (),
    others: Mapping[str, tuple[Sequence[float], float]] | None = None,
) -> go.Figure:
    """Bars of the random-head draws' accuracy (one bar per attainable value, 100 / n_items apart, at that value:
    the series overlap, translucent, never shifted beside each other), their 5-95% band and the specialists' line,
    each named in the legend with the share of its draws that tie the specialists; `matched` adds the layer-matched
    draws, `others` further controls by name ("depth-matched", "beta-matched": `(accuracies, specialists'
    percentile)`).

    `not_drawn`: one line per control that cannot differ from the specialists by construction (e.g. layer-matched
    draws when the direction depends only on the layers); printed under the chart instead of drawn.
    """
    fig = go.Figure()
    step = 100 / n_items
    series = [(accuracies, "random heads", "#7f7f7f")]
    if matched is not None:
        series.append((matched, "layer-matched heads", "#1f77b4"))
    colours = {"depth-matched": "#2ca02c", "beta-matched": "#9467bd"}
    for name, (draws, rank) in (others or {}).items():
        series.append((draws, f"{name} heads, specialists at percentile {rank:.0f}", colours.get(name, "#8c564b")))
    top = 1
    for draws, name, colour in series:
        values = np.asarray(draws, float)
        x, counts = np.unique(values.round(6), return_counts=True)  # each attainable accuracy at its own value
        top = max(top, int(counts.max()))
        tied = 100 * float(np.isclose(values, specialists).mean())
        fig.add_trace(go.Bar(x=x, y=counts, width=0.9 * step, opacity=0.55, marker_color=colour,
                             name=f"{name} ({len(draws)} draws, {tied:.0f}% of draws tie)",
                             hovertemplate="%{x:.1f}%: %{y} draws<extra></extra>"))
    low, high = np.quantile(np.asarray(accuracies, float), [0.05, 0.95])
    fig.add_trace(go.Scatter(x=[low, low, high, high, low], y=[0, top * 1.08, top * 1.08, 0, 0], fill="toself",
                             mode="lines", line=dict(width=0), fillcolor="rgba(127,127,127,0.15)", hoverinfo="skip",
                             name=f"random heads: middle 90% of draws ({low:.1f}-{high:.1f}%)"))
    fig.add_trace(go.Scatter(x=[specialists, specialists], y=[0, top * 1.08], mode="lines",
                             line=dict(color="#d62728", width=3), hoverinfo="skip",
                             name=f"specialists {specialists:.1f}% (percentile {percentile:.0f} of random draws)"))
    # laid out in pixels, so the legend (one line per series) and the notes under it never overlap
    plot, legend_top, line = 330, 70, 24
    notes = [textwrap.fill(text, 100).replace("\n", "<br>") for text in not_drawn]
    under = legend_top + line * (len(series) + 2) + 10  # where the notes start, px under the plot
    bottom = under + 18 * sum(n.count("<br>") + 1 for n in notes) + 20
    fig.update_layout(barmode="overlay", legend=dict(orientation="v", y=-legend_top / plot, x=0, yanchor="top"))
    fig.update_xaxes(title_text=label)
    fig.update_yaxes(title_text="draws", rangemode="tozero")
    fig = _styled(fig, title, height=100 + plot + bottom)
    if notes:
        fig.add_annotation(text="<br>".join(notes), xref="paper", yref="paper", x=0, y=-under / plot, yanchor="top",
                           showarrow=False, xanchor="left", align="left", font=dict(size=12, color="#555"))
    fig.update_layout(margin=dict(t=100, b=bottom))  # t: the title and the line under it (`figures.stamped`)
    return fig


# ---- attention over audio time
def audio_attention(
    signal: "ListeningSignal", batch: "AudioBatch", example: int = 0, title: str | None = None,
    highlight: int | None = None, groups: HeadLists | None = None,
) -> go.Figure:
    """Each clip's log-mel spectrogram above chosen heads' attention from the final token over audio time.

    The attention axis is fixed at 0-1 (the share of the final token's attention on each audio token), and each
    head's legend entry prints its total audio mass (and its mass on the highlighted clip), so a head that barely
    looks at the audio cannot look like a listener. `groups` names the heads by the rule that chose them
    (default: every head of `signal`, as "heads"); each group has its own line style.
    Several clips in one prompt are drawn one after another on one time axis ("Audio 1", "Audio 2", ...);
    `highlight` (0-based) outlines the clip the question asks about.
    """
    if signal.rows is None or not signal.heads:
        raise ValueError(
            "compute the listening signal with heads=[(layer, head), ...] to plot attention over audio time."
        )
    groups = dict(groups) if groups else {"heads": list(signal.heads)}
    index = {tuple(h): i for i, h in enumerate(signal.heads)}
    missing = [h for heads in groups.values() for h in heads if tuple(h) not in index]
    if missing:
        raise ValueError(f"heads {missing} are not in the listening signal; compute it with heads= including them.")
    spans = batch.audio_spans[example]
    first_clip = sum(len(s) for s in batch.audio_spans[:example])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.5, 0.5], vertical_spacing=0.06)
    offset, gap, times, starts = 0.0, 0.1, [], []
    for j, (start, end) in enumerate(spans):
        frames = int(batch.feature_attention_mask[first_clip + j].sum())
        mel = batch.input_features[first_clip + j, :, :frames].float().cpu().numpy()
        hover = "%{x:.2f} s, mel bin %{y}<br>log-mel %{z:.2f}<extra></extra>"
        fig.add_trace(go.Heatmap(z=mel, x=offset + np.arange(frames) * FRAME_SECONDS, colorscale=SEQUENTIAL,
                                 showscale=False, hovertemplate=hover), row=1, col=1)
        span_seconds = frames * FRAME_SECONDS
        fig.add_annotation(x=offset + span_seconds / 2, y=1.0, yref="paper", showarrow=False, yanchor="bottom",
                           text=f"Audio {j + 1}" + (" (asked about)" if highlight == j else ""))
        if highlight == j:
            fig.add_vrect(x0=offset, x1=offset + span_seconds, fillcolor="rgba(0,0,0,0)",
                          line=dict(color="orange", width=3), row="all", col=1)
        times += list(offset + (np.arange(end - start) + 0.5) * AUDIO_TOKEN_SECONDS) + [None]
        starts.append(offset)
        offset += span_seconds + gap
    dashes = ("solid", "dash", "dot", "dashdot")
    for g, (group, heads) in enumerate(groups.items()):
        for layer, head in heads:
            row = signal.rows[example, index[(layer, head)]].float().cpu().numpy()
            weights = [w for start, end in spans for w in [*row[start:end], None]]
            total = float(sum(row[start:end].sum() for start, end in spans))
            asked = "" if highlight is None else f", on Audio {highlight + 1} {row[slice(*spans[highlight])].sum():.4f}"
            fig.add_trace(
                go.Scatter(x=times, y=weights, mode="lines",
                           name=f"{group} L{layer}H{head}: audio mass {total:.4f}{asked}",
                           line=dict(dash=dashes[g % len(dashes)], width=2),
                           hovertemplate=f"L{layer}H{head}<br>%{{x:.2f}} s: %{{y:.4f}}<extra></extra>"),
                row=2, col=1,
            )
    fig.update_yaxes(title_text="mel bin", row=1, col=1)
    fig.update_yaxes(title_text="share of attention", range=[0, 1], row=2, col=1)
    several = len(spans) > 1
    fig.update_xaxes(title_text="time (s), clips one after another" if several else "time in clip (s)", row=2, col=1)
    fig.update_layout(legend=dict(orientation="v", y=-0.14, x=0, yanchor="top"))
    fig = _styled(fig, title or "Final-token attention over the clip", width=860,
                  height=640 + 24 * sum(len(h) for h in groups.values()))
    fig.update_layout(margin=dict(b=80 + 26 * sum(len(h) for h in groups.values())))
    return label_groups(fig)


# ---- residual patching by position
RESTORED_TITLE = "share of the audio's effect restored"


def patching_map(table, labels: Sequence[str], title: str, bound: float = 1.0) -> go.Figure:
    """Layer x position patching results, in prompt order; columns labelled by token, audio columns ("Audio k",
    or "audio" for all of them) in bold.

    Values are the normalised logit difference (0 = the silence run, 1 = the audio run). The colour scale is fixed
    at +-`bound`; cells beyond it (a patch that overshoots the audio run) saturate and are counted under the map,
    and their hover text gives the value. Its natural width grows with the prompt (20 px a token); its PDF and SVG
    exports wrap the positions into rows at a page's width (`plots.paper.for_paper`).
    """
    z = np.asarray(table, dtype=float)
    audio = [label == "audio" or str(label).startswith("Audio ") for label in labels]
    text = [f"[{label}]" if is_audio else repr(label)[1:-1] for label, is_audio in zip(labels, audio)]
    ticks = [f"<b>{t}</b>" if is_audio else t for t, is_audio in zip(text, audio)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(len(text))),
            y=[f"L{l}" for l in range(z.shape[0])],
            colorscale=DIVERGING,
            zmin=-bound,
            zmax=bound,
            # the title runs along the bar, right of its tick labels: on top it touched the top tick's label,
            # which is centred on the bar's end
            colorbar=dict(title=dict(text=RESTORED_TITLE, side="right"), tickvals=[-bound, 0, bound],
                          ticktext=[f"≤ {-bound:g}", "0 (silence run)", f"≥ {bound:g} (audio run)"]),
            customdata=[text] * z.shape[0],
            hovertemplate="%{y}, %{customdata}<br>restored %{z:.3f}<extra></extra>",
            meta={"paper_layout": WRAP_COLUMNS},  # PDF/SVG: wrapped into rows at a page's width (plots.paper)
        )
    )
    fig.update_xaxes(
        title_text="position in the prompt", tickmode="array", tickvals=list(range(len(text))), ticktext=ticks,
        tickangle=-60,
    )
    fig.update_yaxes(title_text="layer (residual stream entering it)", autorange="reversed")
    fig = _styled(fig, title, width=max(760, 20 * len(text) + 200), height=560)
    beyond = int((np.abs(z) > bound).sum())
    if beyond:
        fig.add_annotation(text=f"{beyond} cell{'s' if beyond > 1 else ''} beyond ±{bound:g} (overshoot) drawn at "
                           f"the end of the scale; largest {np.nanmax(np.abs(z)):.2f}", xref="paper", yref="paper",
                           x=0, y=-0.45, showarrow=False, xanchor="left", font=dict(size=12, color="#555"))
        fig.update_layout(margin=dict(b=160))
    return fig


# ---- curves with confidence bands (beta sweep, cumulative ablation)
def curve_with_band(
    x, mean, low=None, high=None, title: str = "", x_title: str = "", y_title: str = "", name: str = "",
    fig: go.Figure | None = None, baseline: float | None = None, baseline_name: str = "baseline",
) -> go.Figure:
    """A line with a shaded confidence band (beta sweeps, cumulative ablations); call again with `fig` to overlay.

    The band is drawn, as its own legend entry ("<name> 95% CI") toggled with its line, only when one is given:
    `low`/`high` left out, or equal to the curve everywhere, draw the line alone. `baseline` draws a labelled
    horizontal line (e.g. the unsteered accuracy), so an accuracy axis always shows what the curve is compared with.
    """
    fig = fig or go.Figure()
    colour = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"][sum(t.mode == "lines+markers" for t in fig.data) % 4]
    x, mean = list(x), [float(v) for v in mean]
    if low is not None and high is not None and not (np.allclose(low, mean) and np.allclose(high, mean)):
        low, high = list(low), list(high)
        fig.add_trace(go.Scatter(x=x + x[::-1], y=high + low[::-1], fill="toself", fillcolor=colour, opacity=0.2,
                                 mode="lines", line=dict(width=0), hoverinfo="skip", name=f"{name} 95% CI",
                                 legendgroup=name))
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name=name, line=dict(color=colour),
                             legendgroup=name))
    if baseline is not None:
        fig.add_trace(go.Scatter(x=[min(x), max(x)], y=[baseline, baseline], mode="lines",
                                 name=f"{baseline_name} {baseline:.1f}", line=dict(color="#555", dash="dot")))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return label_groups(_styled(fig, title))


def mark_chosen(fig: go.Figure, x: float, text: str) -> go.Figure:
    """A dashed vertical line at the chosen value (e.g. the beta chosen on dev), labelled."""
    fig.add_vline(x=x, line=dict(color="#333", width=2, dash="dash"), annotation_text=text,
                  annotation_position="top left")
    return fig


# ---- logit lens
def residual_stream_labels(labels: Sequence[str]) -> list[str]:
    """TransformerLens's `0_pre ... final_post` in words: "embeddings", "after layer 0", ..."""
    words = []
    for label in labels:
        if label == "final_post":
            words.append(f"after layer {len(labels) - 2}")
        elif label.endswith("_pre"):
            layer = int(label[: -len("_pre")])
            words.append("embeddings" if layer == 0 else f"after layer {layer - 1}")
        else:
            words.append(label)
    return words


def logit_lens_plot(
    lens: "LogitLens", option_names: Sequence[str], example: int = 0, title: str | None = None
) -> go.Figure:
    """Probability of each answer option across layers at the final prompt position."""
    from lens_audio.plots.tokens import unique_labels

    fig = go.Figure()
    x = residual_stream_labels(lens.labels)
    for i, name in enumerate(unique_labels(option_names, quote=False)):  # equal names stay two lines
        fig.add_trace(go.Scatter(x=x, y=lens.prob[:, example, i].numpy(), mode="lines+markers", name=name,
                                 customdata=lens.rank[:, example, i].numpy(),
                                 hovertemplate=f"{name}<br>%{{x}}: p=%{{y:.3f}}, rank %{{customdata}}<extra></extra>"))
    fig.update_xaxes(title_text="residual stream read through the final norm and unembedding")
    fig.update_yaxes(title_text="probability (full vocabulary)", range=[0, 1])
    return _styled(fig, title or "Logit lens at the final prompt position")


# ---- writing figures
def listening_check_plot(controls: "ValidityControls", n_causal: int = 4) -> go.Figure:
    """"Is it listening?": per specialist and top causal head, r with correctness from the real audio's mass, from the
    silence twin's mass and within strata (left), and the causal effect of its final-position output (right)."""
    stratum = "task x sub-category" if "task x sub-category" in controls.r_within else next(iter(controls.r_within), "")
    heads = list(dict.fromkeys(list(controls.specialists) + controls.top_causal(n_causal)))
    specialists = set(map(tuple, controls.specialists))
    labels = [f"L{l}H{h}" + (" (specialist)" if (l, h) in specialists else "") for l, h in heads]
    rows = [controls.head_row(h, stratum) for h in heads]
    value = lambda row, key: float("nan") if row[key] is None else row[key]  # noqa: E731
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("r with correctness", "margin drop, output from the silence run"))
    series = (("r_audio", "with the audio", "#1f77b4"), ("r_silence", "silence twin's mass", "#7f7f7f"),
              ("r_within", f"within {stratum}", "#2ca02c"))
    for key, name, colour in series:
        fig.add_trace(go.Bar(y=labels, x=[value(r, key) for r in rows], name=name, orientation="h",
                             marker_color=colour), row=1, col=1)
    fig.add_trace(go.Bar(y=labels, x=[value(r, "causal") for r in rows], name="causal effect (logits)",
                         orientation="h", marker_color="#d62728"), row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.15))
    title = f"Is it listening? {controls.split} {controls.items} items (n = {controls.n})"
    return _styled(fig, title, width=980, height=140 + 60 * len(heads))


def noise_sweep_plot(sweep: "NoiseSweep") -> go.Figure:
    """Accuracy per condition (left) and the specialists' mean mass and its r (right) against the SNR of added noise."""
    points = sweep.points
    x = ["clean" if p.snr_db is None else f"{p.snr_db:g} dB" for p in points]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("accuracy %", "specialists' mass and its r"))
    for condition in points[0].accuracy:
        fig.add_trace(go.Scatter(x=x, y=[p.accuracy.get(condition) for p in points], mode="lines+markers",
                                 name=f"accuracy: {condition}"), row=1, col=1)
    for key, name in (("mass_right", "mass, answered right"), ("mass_wrong", "mass, answered wrong")):
        fig.add_trace(go.Scatter(x=x, y=[getattr(p, key) for p in points], mode="lines+markers", name=name),
                      row=1, col=2)
    fig.add_trace(go.Scatter(
        x=x, y=[p.r.r for p in points], mode="lines+markers", name=f"r with correctness ({sweep.items})",
        error_y=dict(type="data", symmetric=False, array=[p.r.ci[1] - p.r.r for p in points],
                     arrayminus=[p.r.r - p.r.ci[0] for p in points]),
    ), row=1, col=2)
    fig.update_xaxes(title_text="added white noise (SNR)")
    return _styled(fig, f"Noise sweep, {sweep.split} split", width=1000, height=480)


def rivals_plot(comparison: "RivalComparison") -> go.Figure:
    """One point per method: x its paired difference from the baseline on the focus items, y on the other items
    (percentage points, 95% CI bars); above and to the right of the origin is better."""
    fig = go.Figure()
    for m in comparison.methods:
        focus = m.versus("baseline", comparison.focus)
        other = m.versus("baseline", "other")
        if focus is None:
            continue
        y = other.difference if other is not None else 0.0
        fig.add_trace(go.Scatter(
            x=[focus.difference], y=[y], mode="markers", name=f"{m.method} ({m.setting}, {m.forwards} fwd/item)",
            marker=dict(size=12),
            error_x=dict(type="data", symmetric=False, array=[focus.ci[1] - focus.difference],
                         arrayminus=[focus.difference - focus.ci[0]]),
            error_y=None if other is None else dict(type="data", symmetric=False, array=[other.ci[1] - y],
                                                    arrayminus=[y - other.ci[0]]),
            hovertemplate=(f"{m.method}<br>{comparison.focus}: %{{x:+.1f}} points (McNemar p = {focus.p_value:.3g})"
                           + "<br>other items: %{y:+.1f} points<extra></extra>"),
        ))
    fig.add_hline(y=0, line=dict(color="grey", width=1))
    fig.add_vline(x=0, line=dict(color="grey", width=1))
    _styled(fig, f"Rival interventions on test: gained on {comparison.focus} items vs lost elsewhere", width=1100,
            height=560)
    fig.update_layout(legend=dict(orientation="v", x=1.02, y=1))
    fig.update_xaxes(title_text=f"accuracy change on {comparison.focus} items vs baseline (points, 95% CI)")
    fig.update_yaxes(title_text="accuracy change on the other items vs baseline (points, 95% CI)")
    return fig
