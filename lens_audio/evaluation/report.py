"""Accuracy tables as MMAU's official script reports them, with bootstrap confidence intervals.

The total is pooled over all items (not the mean of the domains); breakdowns
are per `task` (domain), `difficulty` and `sub-category`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

BREAKDOWNS = ("task", "difficulty", "sub-category")


def accuracy_with_ci(
    correct: Sequence[bool], n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Accuracy in percent with a percentile bootstrap interval over items."""
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        return {"accuracy": None, "n": 0, "ci": [None, None]}
    means = values[np.random.default_rng(seed).integers(0, values.size, size=(n_bootstrap, values.size))].mean(1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {
        "accuracy": round(100 * values.mean(), 2),
        "n": int(values.size),
        "ci": [round(100 * low, 2), round(100 * high, 2)],
    }


def grouped_accuracy(
    records: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any], flag: str = "correct"
) -> dict[Any, dict[str, Any]]:
    groups: dict[Any, list[bool]] = defaultdict(list)
    for record in records:
        groups[key(record)].append(bool(record[flag]))
    return {group: accuracy_with_ci(values) for group, values in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def mmau_report(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Total (pooled) accuracy plus the official breakdowns, for the fields the records have."""
    report: dict[str, Any] = {"total": accuracy_with_ci([r["correct"] for r in records])}
    for field in BREAKDOWNS:
        if any(field in r for r in records):
            report[field] = grouped_accuracy(records, lambda r, f=field: r.get(f, "unknown"))
    return report
