"""What a steering direction reads at the final prompt position, and the one formula that makes it from the reads.

Two sources: the **residual** stream at the direction's layers (the paper: audio minus silence, averaged over the
layers) and the **head outputs** (`attn.hook_result` of the chosen heads: audio minus silence, summed over the
heads). And one optional **signal gate**: each row's direction scaled by how little the gate's heads (the
specialists) attend to the audio at the final position. The two-pass functions of `direction`
(`adaptive_direction`, `head_output_direction`, `gated_direction`) and the one pass of `steered_pass` read the same
activations in different forwards and combine them here, so every path forms the same direction.

Each layer and each head counts once (`direction_layers`, `direction_heads`): the residual direction is the
plain mean over the distinct layers, so layers `[2, 2, 3]` (the layers of three heads, two sharing layer 2) give
the direction of `[2, 3]`, and a head named twice adds its output once. A repeat is not an error but warns, since
it usually means a layer list was built from heads (`layers_of(heads)` takes each layer once). To weight a layer
or a head, scale the direction (or sum directions) yourself.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.model.config import AudioLMConfig

RESULT_SITE = "attn.hook_result"  # the per-head output, [batch, pos, head, d_model]


def direction_layers(layers: Iterable[int]) -> list[int]:
    """The layers a residual direction averages over, each once, in the order given; a repeat warns."""
    layers = [int(layer) for layer in layers]
    unique = list(dict.fromkeys(layers))
    if len(unique) != len(layers):
        repeated = sorted({layer for layer in layers if layers.count(layer) > 1})
        warnings.warn(
            f"steering layers {layers} name layer(s) {repeated} more than once; each layer counts once in the "
            f"direction (the mean over {unique}), not by how often it is named (layers_of(heads) gives each once).",
            stacklevel=3,
        )
    return unique


def direction_heads(cfg: "AudioLMConfig", heads: Iterable[tuple[int, int]], caller: str) -> list[tuple[int, int]]:
    """The heads whose outputs a direction sums, each once, in the order given: a head this model does not have is
    refused naming it and the valid range; a repeated head warns and counts once."""
    try:
        heads = [(int(layer), int(head)) for layer, head in heads]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{caller}: heads must be (layer, head) pairs of whole numbers, not {heads!r}.") from exc
    if not heads:
        raise ValueError(f"{caller} needs at least one (layer, head).")
    cfg.check_heads(heads, caller)
    unique = list(dict.fromkeys(heads))
    if len(unique) != len(heads):
        repeated = sorted({h for h in heads if heads.count(h) > 1})
        warnings.warn(
            f"{caller}: head(s) {repeated} are named more than once; each head's output counts once in the "
            "direction (the sum over distinct heads).",
            stacklevel=3,
        )
    return unique


def residual_difference(
    audio: Float[Tensor, "batch layer d_model"], silence: Float[Tensor, "batch layer d_model"]
) -> Float[Tensor, "batch d_model"]:
    """The residual source's direction: audio minus silence at each layer, averaged over the layers."""
    return (audio - silence).mean(dim=1)


def head_output_names(heads: Sequence[tuple[int, int]]) -> list[str]:
    """The hook points the head-output source reads: `blocks.{L}.attn.hook_result` of each layer holding a head."""
    return sorted({block_hook_name(layer, RESULT_SITE) for layer, _ in heads})


def head_output_sum(
    finals: Mapping[str, Float[Tensor, "batch head d_model"]], heads: Sequence[tuple[int, int]]
) -> Float[Tensor, "batch d_model"]:
    """The heads' outputs at the final position, summed over `heads` (in their order), from each layer's
    final-position `attn.hook_result` (`head_output_names`). The head-output direction is this sum with the audio
    minus the same with its silence twin."""
    return sum(finals[block_hook_name(layer, RESULT_SITE)][:, head] for layer, head in heads)


def gated_beta(beta: float, mass: Float[Tensor, " batch"], m0: float) -> Float[Tensor, " batch"]:
    """Signal-gated strength: beta * clip((m0 - mass) / m0, 0, 1), full push when the specialists ignore the audio.

    `mass` is the specialists' mean final-token audio mass per example; `m0` the same mean over
    calibration items the model answered correctly (the level of a model that listens).
    """
    if not m0 > 0:
        raise ValueError(f"the gate's reference mass m0 must be positive, got {m0}.")
    return beta * ((m0 - mass) / m0).clip(0, 1)


@dataclass(frozen=True)
class SignalGate:
    """Scale each row's direction by `gated_beta(1, mass, reference_mass)`, where mass is the mean over `heads` (the
    specialists) of their final-position audio attention mass (`listening_signal(model, batch).audio_mass`)."""

    heads: tuple[tuple[int, int], ...]
    reference_mass: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(layer), int(head)) for layer, head in self.heads))
        if not self.heads:
            raise ValueError("the signal gate needs at least one head (the specialists) whose audio mass it reads.")
        if not self.reference_mass > 0:
            raise ValueError(f"the gate's reference mass m0 must be positive, got {self.reference_mass}.")

    @property
    def layers(self) -> list[int]:
        """The layers whose attention the gate reads."""
        return sorted({layer for layer, _ in self.heads})

    def mass(self, audio_mass: Float[Tensor, "batch layer head"]) -> Float[Tensor, " batch"]:
        """Each row's mean audio mass over the gate's heads."""
        return torch.stack([audio_mass[:, layer, head] for layer, head in self.heads]).mean(0)

    def apply(
        self, direction: Float[Tensor, "batch d_model"], audio_mass: Float[Tensor, "batch layer head"]
    ) -> Float[Tensor, "batch d_model"]:
        """`direction`, each row scaled by its gate (0 where the heads listen at the reference level or more)."""
        mass = self.mass(audio_mass).to(direction)
        return direction * gated_beta(1.0, mass, self.reference_mass)[:, None]
