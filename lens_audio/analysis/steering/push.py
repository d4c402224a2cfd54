"""Pushing the residual stream: `beta * direction` added at a hook point, refused before it overflows.

`steering_hooks` are the forward hooks every steering path uses (`steer`, fixed and adaptive directions, the
one-pass `steered_pass`); `checked_push` and `steered` are the two overflow checks (the product, then the
steered residual), each naming the largest beta that fits.

`beta` is one number for every row, or one per batch row: a 1-D tensor (list, array) of shape `[batch]`
(`check_strength`); row `i` is pushed by `beta[i] * direction[i]`, and a batch of another size is refused.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def steering_hooks(
    model: "HookedAudioLM",
    direction: Float[Tensor, "batch d_model"] | Float[Tensor, " d_model"],
    beta: float,
    hook_name: str | None = None,
    start: int = -1,
) -> list[tuple[str, Callable]]:
    """Forward hooks adding `beta * direction` at `hook_name` (default: the final representation).

    The push goes to positions `start:` of every forward: the last position by
    default (the final prompt token of a left-padded batch, then each new token
    during generation); choice scoring passes the final prompt position so the
    appended answer tokens are steered too.
    """
    hook_name = hook_name or block_hook_name(model.cfg.n_layers - 1, "hook_resid_post")
    if hook_name not in model.hook_dict:
        raise ValueError(
            f"no hook point {hook_name!r}; see model.hook_names() or the hook table (docs/hooks.md, lens-audio hooks)."
        )
    if direction.shape[-1] != model.cfg.d_model:
        raise ValueError(
            f"steering vector has width {direction.shape[-1]} but the model's residual stream is {model.cfg.d_model} "
            "wide: "
            "compute the direction on this model (or load a fixed direction saved from a model of the same shape)."
        )
    beta = check_strength(beta)
    checked_push(beta, direction, model.dtype)
    direction = direction.to(model.device)

    def add(resid: Tensor, hook) -> Tensor:
        if direction.ndim == 2 and direction.shape[0] != resid.shape[0]:
            raise ValueError(
                f"steering direction is for {direction.shape[0]} examples but the batch has {resid.shape[0]}."
            )
        on_device = direction.to(resid.device)
        resid = resid.clone()
        resid[:, start:] = steered(resid[:, start:], row_strengths(beta, resid.shape[0], resid.device),
                                   on_device[:, None] if direction.ndim == 2 else on_device)
        return resid

    return [(hook_name, add)]


def check_beta(beta: Any) -> float:
    """One finite number (a plain number or a one-element tensor), as a float; anything else refused, saying what
    is accepted."""
    if isinstance(beta, (torch.Tensor, np.ndarray)) and beta.ndim == 0:
        beta = float(beta)
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise ValueError(f"steering beta must be one finite number (e.g. 1.0), not {_show(beta)}.")
    if not math.isfinite(beta):
        raise ValueError(f"steering beta is {beta}; give a finite number (e.g. 1.0).")
    return float(beta)


def check_strength(beta: Any) -> float | Tensor:
    """`beta` for `steering_hooks`: one finite number (a float), or one per batch row (a float32 tensor `[batch]`,
    from a 1-D tensor, list or array); other shapes and non-finite values are refused naming what is accepted."""
    if isinstance(beta, (torch.Tensor, np.ndarray, list, tuple)):
        try:
            values = beta.detach().float().cpu() if isinstance(beta, Tensor) else torch.tensor(beta).float()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"steering beta must be one number, or one number per batch row, not {beta!r}.") from exc
        if values.ndim == 0:
            return check_beta(float(values))
        if values.ndim != 1 or values.numel() == 0:
            raise ValueError(
                f"steering beta must be one number, or one per batch row (a 1-D tensor of shape [batch]), not a "
                f"tensor of shape {list(values.shape)}."
            )
        bad = [i for i, ok in enumerate(torch.isfinite(values).tolist()) if not ok]
        if bad:
            raise ValueError(f"steering beta (one per row) is not finite at row(s) {bad[:5]}; give finite numbers.")
        return values
    return check_beta(beta)


def row_strengths(beta: float | Tensor, n_rows: int, device: torch.device) -> float | Tensor:
    """`beta` as it multiplies `[batch, pos, d_model]`: a float, or the per-row strengths as `[batch, 1, 1]`."""
    if not isinstance(beta, Tensor):
        return beta
    if beta.shape[0] != n_rows:
        raise ValueError(
            f"steering beta holds {beta.shape[0]} strengths, one per batch row, but the batch has {n_rows} rows; give "
            "one beta per row of this batch, or one number for every row."
        )
    return beta.to(device)[:, None, None]


def _show(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"a {type(value).__name__} of shape {list(shape)}" if shape is not None else repr(value)


def overflow_limit(dtype: torch.dtype) -> float:
    """The largest residual magnitude steering may produce: finite in `dtype`, and squared finite in float32.

    The norms sum the squared residual in float32 (`RMSNorm`); if that sum overflows, the normalised residual
    silently becomes zero (every logit equal). sqrt(float32 max) / 256 ~ 7.2e16 keeps the sum finite for residual
    streams up to 65536 wide.
    """
    return min(torch.finfo(dtype).max, math.sqrt(torch.finfo(torch.float32).max) / 256)


def checked_push(
    beta: float, direction: Float[Tensor, "*batch d_model"], dtype: torch.dtype
) -> Float[Tensor, "*batch d_model"]:
    """`beta * direction` in `dtype`, refused if beta or the direction is not finite or the product overflows.

    With one beta per row (`check_strength`) the product is `[batch, d_model]` (a `[d_model]` direction is
    shared by the rows)."""
    beta = check_strength(beta)
    if not bool(torch.isfinite(direction).all()):
        raise ValueError(
            "the steering direction holds NaN or infinite values; recompute it (a NaN in the model's activations "
            "or a saved direction that was corrupted)."
        )
    peak, limit = float(direction.abs().max()) if direction.numel() else 0.0, overflow_limit(dtype)
    magnitude = float(beta.abs().max()) if isinstance(beta, Tensor) else abs(beta)
    if magnitude * peak > limit:
        raise ValueError(
            f"steering beta {magnitude:g} times the direction (largest entry {peak:.3g}) exceeds {limit:.3g}, beyond "
            f"which {dtype} or the model's norms overflow; the largest beta this direction can take is "
            f"{_down(limit / peak)} (useful strengths are far smaller: the direction is on the residual stream's own "
            "scale)."
        )
    if isinstance(beta, Tensor):
        if direction.ndim == 2:  # one direction per row: as many rows as strengths
            row_strengths(beta, direction.shape[0], direction.device)
        return (beta.to(direction.device, direction.dtype)[:, None] * direction).to(dtype)
    return (beta * direction).to(dtype)


def _down(value: float) -> str:
    """`value` to three significant figures, rounded towards zero (so the beta it names does fit)."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:g}"
    step = 10.0 ** (math.floor(math.log10(value)) - 2)
    return f"{math.floor(value / step) * step:.3g}"


def steered(resid: Tensor, beta: float | Tensor, direction: Tensor) -> Tensor:
    """`resid + beta * direction` (the push cast to `resid`'s dtype, as steering adds it), refused where the sum
    leaves `overflow_limit`, naming the largest beta these inputs can take. `beta` may be a tensor broadcasting
    against `direction` (one strength per row)."""
    out = resid + (beta * direction).to(resid.dtype)
    limit = overflow_limit(resid.dtype)
    if bool((out.abs() <= limit).all()):  # one reduction per steered forward; False for NaN too
        return out
    room = max(limit - float(resid.float().abs().max()), 0.0)
    peak = float(direction.float().abs().max())
    magnitude = float(torch.as_tensor(beta).abs().max())
    raise ValueError(
        f"steering by beta {magnitude:g} pushes the residual stream past {limit:.3g} (or to NaN), where {resid.dtype} "
        f"or the model's norms overflow; the largest beta these inputs can take is about {_down(room / peak)}."
    )
