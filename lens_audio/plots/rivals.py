"""The rival interventions side by side: accuracy gained on the focus (conflicting) items against accuracy lost on
the other items, each against the baseline with its paired bootstrap CI (`paper.rivals.RivalComparison`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go

from lens_audio.plots.charts import _styled

if TYPE_CHECKING:
    from lens_audio.paper.rivals import RivalComparison


def rivals_plot(comparison: "RivalComparison") -> go.Figure:
    """One point per method: x its paired difference from the baseline on the focus items, y on the other items
    (percentage points, 95% CI bars); above and to the right of the origin is better."""
    fig = go.Figure()
    for m in comparison.methods:
        focus = m.paired.get(f"{m.method} vs baseline ({comparison.focus})")
        other = m.paired.get(f"{m.method} vs baseline (other)")
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
