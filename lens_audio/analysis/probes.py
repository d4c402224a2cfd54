"""Linear probes: is a label linearly readable from activations, on items the probe never saw?

`probe_accuracy` fits a multinomial logistic regression from features (e.g. the final prompt position's residual
stream at one layer, as `final_position.final_state_hooks` keeps it) to a class per item and reports its held-out
accuracy:

- **grouped folds** (`grouped_folds`): items that share a group (a clip, a clip set, a speaker) fall in the same
  fold, so a probe cannot score by recognising a group it was trained on;
- **options**: each item may restrict its prediction to its own answer options (`[item, class]` bool), as a
  multiple-choice item allows only its choices; all True is a plain probe;
- **nested penalty choice**: with several `l2`, each training fold picks its own penalty by an inner grouped
  cross-validation on its own items; the held-out fold plays no part in the choice;
- features are standardised on each training fold; the fit is full-batch L-BFGS in float64 (`fit_probe`).

Per layer, for a 7B model::

    hooks, collected = final_state_hooks(model, batch)      # one forward keeps every layer's final position
    with model.hooks(fwd_hooks=hooks):
        model(batch, return_type=None)
    points, _ = collected()                                 # [batch, n_layers + 1, d_model]
    by_layer = [probe_accuracy(points[:, p].float().cpu(), labels, groups=clip_ids) for p in range(points.shape[1])]

`answer_probe` does this for an answer's class among each item's options (the probe of the experiment's
`audio_arrival` stage and the clip-chain organism's acceptance check).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lens_audio.checks import check_float, check_int

L2_GRID = (0.1, 1.0, 10.0)  # the default penalties, chosen by nested cross-validation


def probe_accuracy(
    features: Float[Tensor, "item d"] | np.ndarray,
    labels: Int[Tensor, " item"] | Sequence[int] | np.ndarray,
    options: Bool[np.ndarray, "item n_class"] | None = None,
    groups: Sequence[Any] | None = None,
    folds: int = 5,
    l2: float | Sequence[float] = L2_GRID,
    seed: int = 0,
    max_iter: int = 200,
    inner_folds: int = 3,
) -> float:
    """Cross-validated accuracy (percent) of a multinomial logistic regression from `features` to `labels`, each
    item's prediction restricted to its `options` (`[item, class]` bool; None: every class, a plain probe).

    Folds hold whole `groups` (e.g. clip sets; None: every item its own group), dealt at random (`seed`); features
    are standardised on each training fold; the loss is the mean cross-entropy plus `l2` times the squared weights,
    minimised by L-BFGS (`fit_probe`). With several `l2`, each training fold picks its own by an inner grouped
    cross-validation (`inner_folds`) on its own items only (nested: the held-out fold plays no part in the choice).
    Every held-out item is predicted once; the accuracy is over all of them.
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if options is None:
        options = np.ones((len(y), int(y.max()) + 1 if len(y) else 1), dtype=bool)
    allowed = torch.as_tensor(np.asarray(options, dtype=bool))
    if x.ndim != 2 or y.shape != (x.shape[0],) or allowed.ndim != 2 or allowed.shape[0] != x.shape[0]:
        raise ValueError(f"features [item, d], labels [item] and options [item, class] must agree; got "
                         f"{list(x.shape)}, {list(y.shape)}, {list(allowed.shape)}.")
    if not bool(allowed[torch.arange(len(y)), y].all()):
        raise ValueError("every item's label must be one of its options.")
    grid = [check_float("l2", v, 0) for v in ([l2] if isinstance(l2, (int, float)) else l2)]
    if not grid:
        raise ValueError("l2 must be a penalty or a non-empty list of them.")
    names = [str(g) for g in (range(len(y)) if groups is None else groups)]
    if len(names) != len(y):
        raise ValueError(f"groups must name one group per item: {len(names)} names for {len(y)} items.")
    codes = np.unique(np.asarray(names), return_inverse=True)[1]
    check_int("folds", folds, 2, int(codes.max()) + 1)
    check_int("inner_folds", inner_folds, 2)
    fold = grouped_folds(codes, folds, seed)
    right = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        penalty, train_codes = grid[0], codes[train.numpy()]
        if len(grid) > 1 and len(set(train_codes)) >= 2:
            inner = grouped_folds(train_codes, min(inner_folds, len(set(train_codes))), seed + 1)
            scores = [sum(_held_out_right(x[train], y[train], allowed[train], inner != j, inner == j, v, max_iter)
                          for j in range(int(inner.max()) + 1)) for v in grid]
            penalty = grid[int(np.argmax(scores))]
        right += _held_out_right(x, y, allowed, train, test, penalty, max_iter)
    return 100.0 * right / len(y)


def answer_probe(
    points: Float[Tensor, "item point d"],
    choices: Sequence[Sequence[str]],
    answers: Sequence[str],
    groups: Sequence[Any] | None = None,
    folds: int = 5,
    l2: float | Sequence[float] = L2_GRID,
    seed: int = 0,
    max_classes: int = 64,
    min_items: int = 20,
) -> tuple[list[float] | None, float, str | None]:
    """The probe of where an answer's class is readable, at every point of `points` (e.g. the final position's
    residual points, `final_position.final_state_hooks`): `(accuracy by point, chance, note)`.

    The classes are the distinct option texts; each item's prediction is restricted to its own `choices`, the label
    its answer; folds hold whole `groups` (clips). Chance (percent) is the mean of 1 / options. Not fitted (None and
    a note saying why) with fewer than `min_items` items or two groups, or more than `max_classes` classes
    (free-text options: a class seen in few items cannot be learned)."""
    classes = sorted({c for options in choices for c in options})
    chance = float(100 * np.mean([1 / len(options) for options in choices])) if len(choices) else math.nan
    names = [str(g) for g in (range(len(answers)) if groups is None else groups)]
    n_folds = min(folds, len(set(names)))
    if len(answers) < min_items:
        return None, chance, f"probe not fitted: {len(answers)} items (at least {min_items})"
    if n_folds < 2:
        return None, chance, f"probe not fitted: {len(set(names))} group(s), cross-validation needs two"
    if len(classes) > max_classes:
        return None, chance, f"probe not fitted: {len(classes)} distinct options (at most {max_classes} classes)"
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[a] for a in answers])
    allowed = np.zeros((len(answers), len(classes)), dtype=bool)
    for row, options in enumerate(choices):
        allowed[row, [index[c] for c in options]] = True
    features = torch.as_tensor(points).detach().float().cpu()
    return [probe_accuracy(features[:, p], labels, allowed, names, n_folds, l2, seed)
            for p in range(features.shape[1])], chance, None


def grouped_folds(groups: Sequence[Any] | np.ndarray, folds: int, seed: int = 0) -> Int[Tensor, " item"]:
    """Each item's fold (0 to `folds` - 1): whole groups dealt at random (`seed`) to `folds` folds of (nearly)
    equal group counts, so no group is split between training and held-out items."""
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    return torch.as_tensor((np.random.default_rng(seed).permutation(codes.max() + 1) % folds)[codes])


def fit_probe(
    x: Float[Tensor, "item d"],
    y: Int[Tensor, " item"],
    allowed: Bool[Tensor, "item n_class"],
    l2: float,
    max_iter: int = 200,
) -> tuple[Float[Tensor, "d n_class"], Float[Tensor, " n_class"]]:
    """Weights and bias minimising the cross-entropy over each item's `allowed` classes plus `l2 * |weights|^2`
    (full-batch L-BFGS with a strong-Wolfe line search, from zeros). Standardise `x` first: the penalty is on the
    weights of the features as given."""
    weights = torch.zeros(x.shape[1], allowed.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(allowed.shape[1], dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optimizer.zero_grad()
        logits = (x @ weights + bias).masked_fill(~allowed, -1e9)
        value = torch.nn.functional.cross_entropy(logits, y) + l2 * weights.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    return weights.detach(), bias.detach()


def _held_out_right(x: Tensor, y: Tensor, allowed: Tensor, train: Tensor, test: Tensor, l2: float,
                    max_iter: int) -> int:
    """How many `test` items a probe fitted on the `train` items (standardised on them) gets right."""
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    weights, bias = fit_probe((x[train] - mean) / std, y[train], allowed[train], l2, max_iter)
    with torch.no_grad():
        logits = (((x[test] - mean) / std) @ weights + bias).masked_fill(~allowed[test], -math.inf)
        return int((logits.argmax(-1) == y[test]).sum())
