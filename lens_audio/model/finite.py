"""Refusing non-finite logits: a NaN or infinite logit stops the work with the checkpoint (and the tensor) named.

A checkpoint with one NaN norm weight gives NaN logits for every input; argmax over NaN picks token 0 and a
log-likelihood comparison picks the first choice, so without this check the answers would be scored and saved.
The check costs one `isfinite(...).all()` per set of logits; only when it fails are the model's parameters
scanned for the first one holding non-finite values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


class NonFiniteError(ValueError):
    """Logits holding NaN or +-inf; `rows` are the batch rows affected."""

    def __init__(self, message: str, rows: list[int]) -> None:
        super().__init__(message)
        self.rows = rows


def check_finite_logits(model: "HookedAudioLM", logits: Float[Tensor, "batch ..."], where: str) -> None:
    """Raise `NonFiniteError` if `logits` hold NaN or infinity, naming the checkpoint and the first bad parameter.

    `-inf` is allowed where a row keeps a finite logit (a hook may mask tokens out); a row of only `-inf`
    predicts nothing and is refused.
    """
    if bool(torch.isfinite(logits).all()):
        return
    flat = logits.reshape(logits.shape[0], -1, logits.shape[-1])
    bad = (flat.isnan() | flat.isposinf()).flatten(1).any(1) | flat.isneginf().all(-1).any(1)
    rows = [int(r) for r in bad.nonzero().flatten().tolist()]
    if not rows:
        return
    parameter = first_non_finite_parameter(model)
    cause = (
        f"its parameter {parameter!r} holds NaN or infinite values: the checkpoint is damaged; re-download or "
        "retrain it"
        if parameter is not None
        else "its parameters are all finite, so an activation overflowed: use dtype=float32, or check the hooks "
        "and the steering strength in use"
    )
    raise NonFiniteError(
        f"{where}: the logits of batch row(s) {rows[:8]} hold NaN or infinite values (model "
        f"{model.cfg.model_name!r}); {cause}. Nothing was scored for these inputs.",
        rows,
    )


def first_non_finite_parameter(model: torch.nn.Module) -> str | None:
    """The name of the first parameter (in `named_parameters` order) holding NaN or infinity, or None."""
    for name, parameter in model.named_parameters():
        if parameter.device.type != "meta" and parameter.is_floating_point() and not bool(
            torch.isfinite(parameter).all()
        ):
            return name
    return None
