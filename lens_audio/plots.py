"""Plotly figures for the analyses, in one style, and a helper that writes them as HTML and PNG.

Each function takes an analysis result and returns a `plotly.graph_objects.Figure`; nothing here
computes model quantities. `save_figure` writes `<name>.html` and `<name>.png` (kaleido drives a
local Chromium; on Debian `apt-get install chromium`) into `figures/` or a folder you choose.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from lens_audio.analysis.lens import LogitLens
    from lens_audio.analysis.listening import ListeningSignal
    from lens_audio.analysis.validity import NoiseSweep, ValidityControls
    from lens_audio.inputs.batch import AudioBatch

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


def head_heatmap(values, title: str, colorbar: str, diverging: bool = True, hover: str = "value",
                 blank_reason: str = "undefined (no variance across examples)") -> go.Figure:
    """A layer x head map (e.g. correlation r, ablation effect, patching); diverging colours centred on 0.

    NaN cells stay blank; their hover text and a note under the map give `blank_reason`.
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
    blanks = int(np.isnan(z).sum())
    fig = _styled(fig, title)
    if blanks:  # grey behind the map, so a blank cell is not read as a value of 0 (white)
        fig.update_xaxes(showgrid=False)
        fig.update_yaxes(showgrid=False)
        fig.add_annotation(
            text=f"{blanks} grey cell{'s' if blanks > 1 else ''}: {blank_reason}",
            xref="paper",
            yref="paper",
            x=0,
            y=-0.24,
            showarrow=False,
            xanchor="left",
            font=dict(size=12, color="#555"),
        )
        fig.update_layout(plot_bgcolor="#bdbdbd", margin=dict(b=100))
    return fig


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


def control_distribution_plot(
    accuracies: Sequence[float],
    specialists: float,
    percentile: float,
    title: str,
    n_items: int,
    label: str = "accuracy (%)",
    matched: Sequence[float] | None = None,
) -> go.Figure:
    """Histogram of the random-head draws' accuracy (one bar per attainable value, 100 / n_items apart) with the
    specialists' line."""
    fig = go.Figure()
    step = 100 / n_items
    values = list(accuracies) + list(matched if matched is not None else []) + [specialists]
    bins = dict(start=min(values) - step / 2, end=max(values) + step / 2, size=step)
    series = [(accuracies, "random heads", "#7f7f7f", 0.75)]
    if matched is not None:
        series.append((matched, "layer-matched", "#1f77b4", 0.5))
    for draws, label, colour, opacity in series:
        fig.add_trace(go.Histogram(x=list(draws), xbins=bins, name=f"{label} ({len(draws)} draws)", marker_color=colour,
                                   opacity=opacity, hovertemplate="%{x:.1f}%: %{y} draws<extra></extra>"))
    low, high = np.quantile(accuracies, [0.05, 0.95])
    fig.add_vrect(
        x0=low,
        x1=high,
        fillcolor="#7f7f7f",
        opacity=0.12,
        line_width=0,
        annotation_text="5-95%",
        annotation_position="top left",
    )
    fig.add_vline(
        x=specialists,
        line=dict(color="#d62728", width=3),
        annotation_text=f"specialists {specialists:.1f}% (percentile {percentile:.0f})",
        annotation_position="top right",
    )
    fig.update_layout(barmode="overlay", legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text=label)
    fig.update_yaxes(title_text="draws")
    return _styled(fig, title)


def audio_attention(
    signal: "ListeningSignal", batch: "AudioBatch", example: int = 0, title: str | None = None,
    highlight: int | None = None,
) -> go.Figure:
    """Each clip's log-mel spectrogram above the chosen heads' attention from the final token over audio time.

    Several clips in one prompt are drawn one after another on one time axis ("Audio 1", "Audio 2", ...);
    `highlight` (0-based) shades the clip the question asks about.
    """
    if signal.rows is None or not signal.heads:
        raise ValueError(
            "compute the listening signal with heads=[(layer, head), ...] to plot attention over audio time."
        )
    first_clip = sum(len(spans) for spans in batch.audio_spans[:example])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.55, 0.45], vertical_spacing=0.06)
    offset, gap = 0.0, 0.1
    times, weights = [], [[] for _ in signal.heads]
    for j, (start, end) in enumerate(batch.audio_spans[example]):
        frames = int(batch.feature_attention_mask[first_clip + j].sum())
        mel = batch.input_features[first_clip + j, :, :frames].float().cpu().numpy()
        hover = "%{x:.2f} s, mel bin %{y}<br>log-mel %{z:.2f}<extra></extra>"
        fig.add_trace(go.Heatmap(z=mel, x=offset + np.arange(frames) * FRAME_SECONDS, colorscale=SEQUENTIAL,
                                 showscale=False, hovertemplate=hover), row=1, col=1)
        span_seconds = frames * FRAME_SECONDS
        if len(batch.audio_spans[example]) > 1:
            fig.add_annotation(x=offset + span_seconds / 2, y=1.0, yref="paper", text=f"Audio {j + 1}", showarrow=False,
                               yanchor="bottom")
        if highlight == j:
            fig.add_vrect(x0=offset, x1=offset + span_seconds, fillcolor="rgba(0,0,0,0)",
                          line=dict(color="orange", width=3), row="all", col=1)
        times += list(offset + (np.arange(end - start) + 0.5) * AUDIO_TOKEN_SECONDS) + [None]
        for i in range(len(signal.heads)):
            weights[i] += list(signal.rows[example, i, start:end].float().numpy()) + [None]
        offset += span_seconds + gap
    for i, (layer, head) in enumerate(signal.heads):
        fig.add_trace(
            go.Scatter(x=times, y=weights[i], mode="lines", name=f"L{layer}H{head}",
                       hovertemplate=f"L{layer}H{head}<br>%{{x:.2f}} s: %{{y:.4f}}<extra></extra>"),
            row=2, col=1,
        )
    fig.update_yaxes(title_text="mel bin", row=1, col=1)
    fig.update_yaxes(title_text="attention", row=2, col=1)
    several = len(batch.audio_spans[example]) > 1
    fig.update_xaxes(title_text="time (s), clips one after another" if several else "time in clip (s)", row=2, col=1)
    fig.update_layout(legend=dict(orientation="h", y=-0.18))
    return _styled(fig, title or "Final-token attention over the clip", height=600)


def patching_map(table, labels: Sequence[str], title: str) -> go.Figure:
    """Layer x position patching results, columns labelled by token (audio positions may be one 'audio' column)."""
    z = np.asarray(table, dtype=float)
    text = [repr(label)[1:-1] if label != "audio" else "[audio]" for label in labels]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(len(text))),
            y=[f"L{l}" for l in range(z.shape[0])],
            colorscale=DIVERGING,
            zmid=0,
            colorbar=dict(title="restored"),
            customdata=[text] * z.shape[0],
            hovertemplate="%{y}, %{customdata}<br>restored %{z:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(
        title_text="position", tickmode="array", tickvals=list(range(len(text))), ticktext=text, tickangle=-60
    )
    fig.update_yaxes(title_text="layer", autorange="reversed")
    return _styled(fig, title, width=max(760, 18 * len(text)))


def curve_with_band(
    x, mean, low, high, title: str, x_title: str, y_title: str, name: str = "", fig: go.Figure | None = None
) -> go.Figure:
    """A line with a shaded confidence band (beta sweeps, cumulative ablations); call again with `fig` to overlay."""
    fig = fig or go.Figure()
    colour = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"][len(fig.data) // 2 % 4]
    x, low, high = list(x), list(low), list(high)
    fig.add_trace(go.Scatter(x=x + x[::-1], y=high + low[::-1], fill="toself", fillcolor=colour, opacity=0.2,
                             line=dict(width=0), hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=x, y=list(mean), mode="lines+markers", name=name, line=dict(color=colour)))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return _styled(fig, title)


def logit_lens_plot(
    lens: "LogitLens", option_names: Sequence[str], example: int = 0, title: str | None = None
) -> go.Figure:
    """Probability of each answer option across layers at the final prompt position."""
    fig = go.Figure()
    for i, name in enumerate(option_names):
        fig.add_trace(go.Scatter(x=lens.labels, y=lens.prob[:, example, i].numpy(), mode="lines+markers", name=name,
                                 customdata=lens.rank[:, example, i].numpy(),
                                 hovertemplate=f"{name}<br>%{{x}}: p=%{{y:.3f}}, rank %{{customdata}}<extra></extra>"))
    fig.update_xaxes(title_text="residual stream (entering layer)")
    fig.update_yaxes(title_text="probability", range=[0, 1])
    return _styled(fig, title or "Logit lens at the final prompt position")


STATIC_FORMATS = ("png", "svg")
STATIC_EXPORT_HINT = (
    "static export (PNG/SVG) needs kaleido>=1 and a Chromium-based browser: on Debian/Ubuntu `apt-get install "
    "chromium`, "
    "elsewhere `plotly_get_chrome` or set BROWSER_PATH"
)


class StaticExportUnavailable(RuntimeError):
    """PNG/SVG export cannot run on this machine (kaleido or a Chromium browser is missing)."""


def save_figure(
    fig: go.Figure, name: str, folder: str | Path = "figures", formats: Sequence[str] = ("html", "png")
) -> list[Path]:
    """Write `fig` as `<folder>/<name>.<format>` for each format (html, png, svg); each file appears complete or not
    at all.

    Raises `StaticExportUnavailable` (after writing the other formats) when PNG/SVG export cannot run here.
    """
    unknown = [fmt for fmt in formats if fmt not in ("html", *STATIC_FORMATS)]
    if unknown:
        raise ValueError(f"unknown figure format {unknown[0]!r}; use html, png or svg.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, missing = [], None
    for fmt in formats:
        target = folder / f"{name}.{fmt}"
        handle, temporary = tempfile.mkstemp(prefix=f".{name}-", suffix=f".{fmt}", dir=folder)
        os.close(handle)
        try:
            if fmt == "html":
                fig.write_html(temporary, include_plotlyjs="cdn")
            else:
                _write_static(fig, temporary, fmt)
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
            written.append(target)
        except StaticExportUnavailable as exc:
            missing = exc
        finally:
            Path(temporary).unlink(missing_ok=True)
    if missing is not None:
        raise missing
    return written


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
    try:
        fig.write_image(path, format=fmt, scale=2 if fmt == "png" else 1)
    except (ImportError, ValueError, RuntimeError) as exc:
        text = str(exc).lower()
        if "kaleido" in text or "chrome" in text or "browser" in text:
            raise StaticExportUnavailable(f"{fmt.upper()} not written: {STATIC_EXPORT_HINT}.") from exc
        raise


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
