"""Audio-specialist heads: which heads' audio attention predicts that the model answers correctly.

Pearson r between each head's audio attention mass and correctness (0/1)
over a calibration set, with a two-sided p-value (t distribution, n - 2
degrees of freedom) and a percentile bootstrap confidence interval over
examples. `top_k` picks the specialists; `random_heads` draws the paper's
control with a seed. The result saves to and loads from JSON.

r is undefined (NaN) for a head whose audio mass does not vary over the examples, and for every head when
correctness does not vary (every item right, or every item wrong). Such heads are never ranked: `top_heads` leaves
them out and says how many (a `UserNote`), and refuses (`UndefinedStatisticError`, one line saying why and what to
do) when no head, or fewer than k, has a defined score.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from scipy import stats
from torch import Tensor

from lens_audio.analysis.statistics import fisher_ci, nan_list, pearson_columns, random_head_draws
from lens_audio.checks import UserNote, check_confidence, check_int, check_seed
from lens_audio.files import write_atomically


@dataclass
class HeadCorrelation:
    """Per-head correlation of audio attention with correctness; arrays are `[layer, head]`."""

    r: np.ndarray
    p_value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_examples: int
    confidence: float
    model_name: str = ""
    n_correct: int | None = None  # examples answered correctly (None: not recorded, older files)

    @property
    def shape(self) -> tuple[int, int]:
        return self.r.shape

    def top_k(self, k: int) -> list[tuple[int, int]]:
        """The `k` heads with the highest r; heads with undefined r are never chosen (see `top_heads`)."""
        return top_heads(self.r, k, "r", undefined_reason(self.n_correct, self.n_examples))

    def random_heads(
        self, k: int, seed: int = 0, exclude: list[tuple[int, int]] | None = None
    ) -> list[tuple[int, int]]:
        """`k` heads drawn uniformly without replacement (excluding `exclude`): the first of `random_head_draws`."""
        return random_head_draws(*self.shape, k, 1, seed, exclude or [])[0]

    def fisher_ci(self) -> tuple[np.ndarray, np.ndarray]:
        """Fisher-z interval of each head's r (beside the bootstrap one, which runs narrow for small n)."""
        return fisher_ci(self.r, self.n_examples, self.confidence)

    def to_json(self) -> dict:
        data = {key: nan_list(getattr(self, key)) for key in ("r", "p_value", "ci_low", "ci_high")}
        return {**data, "n_examples": self.n_examples, "confidence": self.confidence, "model_name": self.model_name,
                "n_correct": self.n_correct}

    @classmethod
    def from_json(cls, data: dict) -> "HeadCorrelation":
        arrays = {key: np.array(data[key], dtype=float) for key in ("r", "p_value", "ci_low", "ci_high")}
        return cls(
            **arrays,
            n_examples=data["n_examples"],
            confidence=data["confidence"],
            model_name=data.get("model_name", ""),
            n_correct=data.get("n_correct"),
        )

    def save(self, path: str | Path) -> None:
        write_atomically(path, json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> "HeadCorrelation":
        return cls.from_json(json.loads(Path(path).read_text()))


def correlate_heads(
    audio_mass: Float[Tensor, "example layer head"] | np.ndarray,
    correct: Bool[Tensor, " example"] | np.ndarray,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    model_name: str = "",
    clusters: Sequence[Any] | None = None,
) -> HeadCorrelation:
    """Correlate every head's audio attention mass with correctness across examples.

    The bootstrap interval resamples examples, or whole `clusters` (one name per example, e.g. its clip) when given.
    """
    check_int("n_bootstrap", n_bootstrap, 1)
    check_confidence(confidence)
    check_seed("seed", seed)
    mass = np.asarray(audio_mass.cpu() if isinstance(audio_mass, torch.Tensor) else audio_mass, dtype=float)
    y = np.asarray(correct.cpu() if isinstance(correct, torch.Tensor) else correct, dtype=float)
    if mass.ndim != 3 or mass.shape[0] != y.shape[0]:
        raise ValueError(
            f"audio_mass must be [example, layer, head] with one row per correctness label; got {mass.shape} and "
            f"{y.shape}."
        )
    n, layers, heads = mass.shape
    if n < 3:
        raise ValueError(f"need at least 3 examples to correlate, got {n}.")
    flat = mass.reshape(n, -1)
    r = pearson_columns(flat, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = r * np.sqrt((n - 2) / np.clip(1 - r**2, 1e-12, None))
    p = 2 * stats.t.sf(np.abs(t), df=n - 2)
    rng = np.random.default_rng(seed)
    if clusters is None:
        resamples = list(rng.integers(0, n, size=(n_bootstrap, n)))
    else:
        if len(clusters) != n:
            raise ValueError(f"clusters must name one group per example: {len(clusters)} names for {n} examples.")
        _, group = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
        members = [np.nonzero(group == g)[0] for g in range(group.max() + 1)]
        resamples = [
            np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
            for _ in range(n_bootstrap)
        ]
    boot = np.stack([pearson_columns(flat[idx], y[idx]) for idx in resamples])
    alpha = (1 - confidence) / 2
    with warnings.catch_warnings():  # constant heads have no r in any resample: their interval is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(boot, alpha, axis=0), np.nanquantile(boot, 1 - alpha, axis=0)
    shape = (layers, heads)
    return HeadCorrelation(
        r.reshape(shape), p.reshape(shape), low.reshape(shape), high.reshape(shape), n, confidence, model_name,
        int((y > 0).sum()),
    )


class UndefinedStatisticError(ValueError):
    """No head (or fewer than asked for) has a defined score: nothing can be ranked."""


def undefined_reason(n_correct: int | None, n_examples: int) -> str:
    """Why r with correctness is undefined for every head, given how many of `n_examples` were answered correctly."""
    if n_correct == n_examples:
        return (f"every calibration item is correct ({n_examples} of {n_examples}): no errors to correlate with; use a "
                "calibration split the model gets partly wrong (more or harder items)")
    if n_correct == 0:
        return (f"no calibration item is correct (0 of {n_examples}): nothing to correlate with; check the prompt "
                "template and mode (--template, --mode), or use items the model gets partly right")
    return ("no head's audio attention mass varies over the calibration items (every head attends to the audio "
            "equally on every item); check that the items carry audio and use more varied items")


def top_heads(scores: np.ndarray, k: int, what: str = "score", reason: str | None = None) -> list[tuple[int, int]]:
    """The `k` `[layer, head]` indices of highest `scores`, among the heads whose score is defined (not NaN).

    Heads with an undefined score are left out with a `UserNote` saying how many; if none is defined, or fewer
    than `k`, an `UndefinedStatisticError` says so (with `reason`, why none is defined) and what to do.
    """
    scores = np.asarray(scores, dtype=float)
    check_int("k", k, 1, int(scores.size))
    defined = ~np.isnan(scores)
    n_defined, total = int(defined.sum()), int(scores.size)
    if n_defined == 0:
        raise UndefinedStatisticError(
            f"no head can be ranked: {what} is undefined for all {total} heads, because "
            f"{reason or f'the {what} of every head is undefined (no variance to measure)'}.")
    if n_defined < k:
        raise UndefinedStatisticError(
            f"only {n_defined} of {total} heads have a defined {what} (the others' audio mass does not vary over the "
            f"items), fewer than the {k} asked for; ask for at most {n_defined} heads (--k-heads) or use more varied "
            "items.")
    if n_defined < total:
        left_out = [tuple(int(i) for i in index) for index in np.argwhere(~defined)]
        shown = ", ".join(f"L{a}H{b}" for a, b in left_out[:5]) + (", ..." if len(left_out) > 5 else "")
        warnings.warn(UserNote(
            f"{what} is undefined for {total - n_defined} of {total} heads ({shown}): their audio mass does not vary "
            "over the items, so they are left out of the ranking."), stacklevel=2)
    order = np.argsort(np.where(defined, scores, -np.inf), axis=None)[::-1]
    return [tuple(int(i) for i in np.unravel_index(flat, scores.shape)) for flat in order[:k]]


def pad_options(option_ids: Sequence[Sequence[int]], answer_index: Sequence[int]) -> list[list[int]]:
    """Ragged option-token lists (MMAU has 2-8 choices per item) as one rectangle for `ablation.option_margins`:
    each row padded with one of its own wrong options, so its answer margin (answer minus the best other option) and
    whether it is right are unchanged."""
    rows = [list(map(int, ids)) for ids in option_ids]
    if len(rows) != len(answer_index):
        raise ValueError(f"one answer index per item: {len(answer_index)} for {len(rows)} option lists.")
    for row, (ids, answer) in enumerate(zip(rows, answer_index)):
        if len(ids) < 2 or not 0 <= int(answer) < len(ids):
            raise ValueError(f"item {row}: an answer margin needs at least two options and an answer among them; got "
                             f"{len(ids)} options and answer index {answer}.")
    width = max(map(len, rows))
    return [ids + [ids[1 if int(a) == 0 else 0]] * (width - len(ids)) for ids, a in zip(rows, answer_index)]
