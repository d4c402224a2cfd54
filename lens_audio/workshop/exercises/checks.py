"""Small helpers shared by the session checkers: comparisons that say how two tensors differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor


def as_tensor(value: Any, name: str) -> Tensor:
    """The learner's result as a float or bool tensor, or an AssertionError naming what came back instead."""
    if value is None or value is Ellipsis:
        raise AssertionError(f"{name} returned {value!r}: replace the `...  # TODO` with your implementation.")
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise AssertionError(f"{name} should return a torch.Tensor, got {type(value).__name__}.")
    return value.detach().cpu()


def same(a: Tensor, b: Tensor, atol: float = 1e-4) -> bool:
    """Same shape and values within `atol` (NaN equal to NaN)."""
    a, b = torch.as_tensor(a).detach().cpu(), torch.as_tensor(b).detach().cpu()
    if a.shape != b.shape:
        return False
    if a.dtype == torch.bool or b.dtype == torch.bool:
        return bool((a.bool() == b.bool()).all())
    return bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4, equal_nan=True))


def check_shape(got: Tensor, expected: tuple[int, ...], name: str, axes: str) -> None:
    assert tuple(got.shape) == tuple(expected), (
        f"{name} returned shape {tuple(got.shape)}; expected {tuple(expected)} = [{axes}]."
    )


def max_diff(a: Tensor, b: Tensor) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().nan_to_num(0).max())


def distinct_sizes(sizes: dict[str, int]) -> bool:
    """Whether every input axis has its own size (`sizes` names them all, the ones the answer reduces away included):
    only then does a slip onto the wrong axis change the shape, so that `wrong_axes` can name it."""
    return len({int(size) for size in sizes.values()}) == len(sizes)


def wrong_axes(got: tuple[int, ...], expected: tuple[int, ...], axes: str, sizes: dict[str, int]) -> str:
    """Name the axes behind a wrong shape: each dimension of `got` that differs from `expected`, by the input axis
    whose size it has (`sizes` must be `distinct_sizes`), e.g. "you kept the layer axis (4) where [batch] (3)
    belongs: you reduced over batch instead"."""
    names = axes.split()
    owner = {int(size): axis for axis, size in sizes.items()}
    notes = []
    if len(got) == len(expected):
        for index, (g, e) in enumerate(zip(got, expected)):
            if g != e and g in owner:
                notes.append(f"dimension {index} has {g}, the number of {owner[g]}s, where {names[index]} ({e}) "
                             f"belongs: you reduced over {names[index]} instead of {owner[g]}")
    else:
        kept = [owner.get(int(g), "?") for g in got]
        extra = [axis for axis in kept if axis not in names]
        if extra:
            notes.append(f"your result keeps the axes [{' '.join(kept)}]: reduce over {', '.join(extra)}")
        missing = [axis for axis in names if axis not in kept]
        if missing:
            notes.append(f"your result lost the {', '.join(missing)} axis")
    return ("; ".join(notes) + ".") if notes else ""


def call_learner(function: Callable, name: str, args: tuple, expected: tuple[int, ...], axes: str,
                 slip: str = "", sizes: dict[str, int] | None = None) -> Tensor:
    """Run the learner's `function(*args)` and check the shape of its result before any value.

    An exception inside the learner's code (a shape mismatch from a wrong index, say) becomes an AssertionError
    that names the function, the error, the shape expected and `slip` (the usual cause), instead of a raw torch
    traceback. With `sizes` (every input axis by name, each a distinct size) a wrong shape names the axis that
    was kept or reduced by mistake.
    """
    try:
        result = function(*args)
    except Exception as error:  # the learner's own code failed: say what was expected, then the error
        raise AssertionError(
            f"{name} raised {type(error).__name__}: {error}. It should return shape {tuple(expected)} = [{axes}]. "
            f"{slip}"
        ) from error
    got = as_tensor(result, name)
    if tuple(got.shape) != tuple(expected):
        named = wrong_axes(tuple(got.shape), tuple(expected), axes, sizes) if sizes and distinct_sizes(sizes) else ""
        raise AssertionError(
            f"{name} returned shape {tuple(got.shape)}; expected {tuple(expected)} = [{axes}]. {named or slip}".rstrip()
        )
    return got


def worst_example(got: Tensor, expected: Tensor) -> tuple[int, ...]:
    """Index of the element where `got` and `expected` differ most (NaN counts as no difference)."""
    diff = (got.double() - expected.double()).abs().nan_to_num(0)
    return tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(diff.shape)))
