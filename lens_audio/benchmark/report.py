"""Accuracy tables as MMAU's official script reports them, with bootstrap confidence intervals.

The total is pooled over all items (not the mean of the domains); breakdowns
are per `task` (domain), `difficulty` and `sub-category`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lens_audio.analysis.statistics import cluster_bootstrap_ci

BREAKDOWNS = ("task", "difficulty", "sub-category")
DIFFICULTY_ORDER = {"easy": 0, "medium": 1, "hard": 2}  # MMAU's difficulties, easiest first (tables list them so)


def breakdown_order(value: object) -> tuple[int, str]:
    """Sort key of a breakdown's values: MMAU's difficulties easiest first, any other value by name after them."""
    return DIFFICULTY_ORDER.get(str(value), len(DIFFICULTY_ORDER)), str(value)


def accuracy_with_ci(
    correct: Sequence[bool],
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    clusters: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Accuracy in percent with a percentile bootstrap interval over items, or over `clusters` (e.g. clips).

    `ci_unit` says what was resampled: "clip" where `clusters` group some items together, else "item".
    """
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return {"accuracy": None, "n": 0, "ci": [None, None], "ci_unit": "item"}
    if clusters is not None and len(set(map(str, clusters))) < values.size:
        low, high = cluster_bootstrap_ci(values, clusters, n_bootstrap, confidence, seed)
        return {
            "accuracy": round(100 * values.mean(), 2),
            "n": int(values.size),
            "ci": [round(low, 2), round(high, 2)],
            "ci_unit": "clip",
        }
    means = values[np.random.default_rng(seed).integers(0, values.size, size=(n_bootstrap, values.size))].mean(1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {
        "accuracy": round(100 * values.mean(), 2),
        "n": int(values.size),
        "ci": [round(100 * low, 2), round(100 * high, 2)],
        "ci_unit": "item",
    }


def grouped_accuracy(
    records: Sequence[dict[str, Any]],
    key: Callable[[dict[str, Any]], Any],
    flag: str = "correct",
    clusters: Sequence[Any] | None = None,
) -> dict[Any, dict[str, Any]]:
    """Accuracy per group of `key(record)`; with `clusters` (one per record), intervals resample clusters."""
    groups: dict[Any, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[key(record)].append(index)
    flags = [bool(r[flag]) for r in records]
    return {
        group: accuracy_with_ci(
            [flags[i] for i in rows], clusters=None if clusters is None else [clusters[i] for i in rows]
        )
        for group, rows in sorted(groups.items(), key=lambda kv: str(kv[0]))
    }


def mmau_report(records: Sequence[dict[str, Any]], clusters: Sequence[Any] | None = None) -> dict[str, Any]:
    """Total (pooled) accuracy plus the official breakdowns, for the fields the records have.

    With `clusters` (one per record, e.g. its clip), intervals resample clusters where they repeat.
    """
    report: dict[str, Any] = {"total": accuracy_with_ci([r["correct"] for r in records], clusters=clusters)}
    for field in BREAKDOWNS:
        if any(field in r for r in records):
            report[field] = grouped_accuracy(records, lambda r, f=field: r.get(f, "unknown"), clusters=clusters)
    return report
