"""Truthful token charts, one helper for the SAE dashboard, the explorer and the logit lens: every token labelled
uniquely (its text as `repr`, plus its id where two texts collide, e.g. byte tokens that all decode to '�'), logits
centred (the mean over the vocabulary subtracted, so "lowest" bars are below 0), bars sorted largest first.

A chart axis keyed by label merges equal labels into one bar; `unique_labels` is what keeps 10 tokens 10 bars.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import plotly.graph_objects as go
from jaxtyping import Float
from torch import Tensor


def unique_labels(texts: Sequence[str], ids: Sequence[int | None] | None = None, quote: bool = True) -> list[str]:
    """Each token's text (as `repr` when `quote`), with " #id" added where two texts would read the same (or
    " (2)", " (3)" ... when no id is known); the order of `texts` is kept."""
    shown = [repr(t) if quote else str(t) for t in texts]
    ids = list(ids) if ids is not None else [None] * len(shown)
    seen = Counter(shown)
    out, counts = [], Counter()
    for text, token in zip(shown, ids):
        if seen[text] == 1:
            out.append(text)
            continue
        counts[text] += 1
        out.append(f"{text} #{token}" if token is not None else f"{text} ({counts[text]})")
    return out


def top_and_bottom(logits: Float[Tensor, " vocab"], n: int) -> tuple[list[int], list[int]]:
    """The ids of the `n` highest and `n` lowest entries, each sorted from the extreme inwards."""
    return logits.topk(n).indices.tolist(), (-logits).topk(n).indices.tolist()


def centred(logits: Float[Tensor, " vocab"]) -> Float[Tensor, " vocab"]:
    """Logits minus their mean over the vocabulary (a softmax ignores the shift): the highest are >= 0 and the lowest
    <= 0, so a "suppressed" panel never shows positive bars."""
    return logits.float() - logits.float().mean()


def token_bars(pairs: Sequence[tuple], colour: str, largest_first: bool = True) -> go.Bar:
    """Horizontal bars of (text, value) or (text, value, id) pairs, one bar per token (labels made unique), sorted
    by value: the largest at the top (`largest_first`) or the most negative at the top."""
    ordered = sorted(pairs, key=lambda p: p[1], reverse=largest_first)
    labels = unique_labels([p[0] for p in ordered], [p[2] if len(p) > 2 else None for p in ordered])
    hover = [f"{label}: {p[1]:.3f}" for label, p in zip(labels, ordered)]
    return go.Bar(x=[p[1] for p in ordered][::-1], y=labels[::-1], orientation="h", marker_color=colour,
                  showlegend=False, hovertext=hover[::-1], hoverinfo="text")
