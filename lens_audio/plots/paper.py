"""Paper-sized layouts for PDF and SVG exports of figures that are wider than a page at their natural size.

A figure opts in by marking its wide heatmap trace with `meta={"paper_layout": WRAP_COLUMNS}` (the patching map,
one column per prompt token: 1,840 px for an 82-token prompt, 3,680 px for 174 tokens). `for_paper` then redraws it
at `PAPER_WIDTH` with its columns wrapped into rows (facets of consecutive positions, in prompt order, one shared
colour scale), keeping its title (with the model, split and n under it), its colour bar and its notes. HTML and PNG
keep the natural size (the report shows them in scroll boxes). `export._write_static` applies it.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

WRAP_COLUMNS = "wrap_columns"
PAPER_WIDTH = 720  # px; plotly's static export draws 96 px to the inch: 7.5 in, a two-column paper's text width
COLUMN_PX = 14  # px per heatmap column in the paper layout (tick labels at 9 px fit beside each other rotated)
SIDE_PX = 250  # left margin (layer labels, axis title) plus the colour bar and its labels on the right


def is_wide(fig: go.Figure, width: int = PAPER_WIDTH) -> bool:
    """Whether `fig` opted in to the paper layout and is wider than `width`."""
    marked = any(isinstance(t.meta, dict) and t.meta.get("paper_layout") == WRAP_COLUMNS for t in fig.data)
    return marked and (fig.layout.width or 0) > width


def for_paper(fig: go.Figure, width: int = PAPER_WIDTH) -> go.Figure:
    """`fig` as it should be printed: its wrapped layout when it opted in and is wider than `width`, else itself."""
    if not is_wide(fig, width):
        return fig
    return wrap_columns(fig, width)


def wrap_columns(fig: go.Figure, width: int = PAPER_WIDTH) -> go.Figure:
    """The heatmap of `fig` (its first trace; x = column index, ticks from `layout.xaxis.ticktext`) redrawn at
    `width` px with its columns in rows of consecutive positions."""
    trace = fig.data[0]
    z = np.asarray(trace.z, dtype=float)
    n_rows_z, n_columns = z.shape
    per_row = max(8, (width - SIDE_PX) // COLUMN_PX)
    n_facets = math.ceil(n_columns / per_row)
    ticks = list(fig.layout.xaxis.ticktext or range(n_columns))
    custom = None if trace.customdata is None else np.asarray(trace.customdata, dtype=object)
    row_height = 12 * n_rows_z + 95  # the cells, then the rotated token labels under them
    top, bottom = 110, 40 + 20 * len(fig.layout.annotations)
    height = top + bottom + 95 + n_facets * row_height
    out = make_subplots(rows=n_facets, cols=1, vertical_spacing=min(0.3, 85 / (height - top - bottom)))
    bottom += 95  # the last row's token labels and the axis title sit in the margin
    for facet in range(n_facets):
        columns = list(range(facet * per_row, min(n_columns, (facet + 1) * per_row)))
        out.add_trace(go.Heatmap(
            z=z[:, columns], x=columns, y=trace.y, colorscale=trace.colorscale, zmin=trace.zmin, zmax=trace.zmax,
            zmid=trace.zmid, colorbar=trace.colorbar, showscale=facet == 0, hovertemplate=trace.hovertemplate,
            customdata=None if custom is None else custom[:, columns],
        ), row=facet + 1, col=1)
        out.update_xaxes(tickmode="array", tickvals=columns, ticktext=[ticks[c] for c in columns], tickangle=-60,
                         tickfont=dict(size=9), range=[columns[0] - 0.5, columns[0] + per_row - 0.5],
                         row=facet + 1, col=1)
        out.update_yaxes(autorange="reversed", tickfont=dict(size=9), row=facet + 1, col=1)
    out.update_xaxes(title_text=fig.layout.xaxis.title.text, title_font=dict(size=11), row=n_facets, col=1)
    out.update_yaxes(title_text=fig.layout.yaxis.title.text, title_font=dict(size=11), row=(n_facets + 1) // 2,
                     col=1)
    out.update_layout(title=fig.layout.title, width=width, height=height, template=fig.layout.template,
                      font=dict(size=11), margin=dict(l=70, r=150, t=top, b=bottom), meta=fig.layout.meta)
    out.update_traces(colorbar=dict(len=1.0, y=0.5, yanchor="middle"), selector=dict(showscale=True))
    for note in fig.layout.annotations:  # notes under the map (overshoot): kept, under the last row
        out.add_annotation(text=note.text, xref="paper", yref="paper", x=0, xanchor="left", y=0, yanchor="top",
                           yshift=-(bottom - 25), showarrow=False, font=note.font)
    return out
