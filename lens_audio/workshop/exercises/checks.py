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


def call_learner(function: Callable, name: str, args: tuple, expected: tuple[int, ...], axes: str,
                 slip: str = "") -> Tensor:
    """Run the learner's `function(*args)` and check the shape of its result before any value.

    An exception inside the learner's code (a shape mismatch from a wrong index, say) becomes an AssertionError
    that names the function, the error, the shape expected and `slip` (the usual cause), instead of a raw torch
    traceback.
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
        raise AssertionError(
            f"{name} returned shape {tuple(got.shape)}; expected {tuple(expected)} = [{axes}]. {slip}".rstrip()
        )
    return got


def worst_example(got: Tensor, expected: Tensor) -> tuple[int, ...]:
    """Index of the element where `got` and `expected` differ most (NaN counts as no difference)."""
    diff = (got.double() - expected.double()).abs().nan_to_num(0)
    return tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(diff.shape)))
