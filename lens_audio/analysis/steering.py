"""Audio-minus-silence steering (the paper's adaptive method) and its fixed-direction variant.

The direction for an input is the residual stream at its final prompt
position with the real audio minus the same with its silence twin,
averaged over the chosen layers (the layers of the audio-specialist heads).
Steering adds `beta * direction` at one hook point (default: the last
block's `hook_resid_post`, the model's final representation) at the last
position of every forward, which is the final prompt position when scoring
a left-padded batch and the newest token on every generation step.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def layers_of(heads: Sequence[tuple[int, int]]) -> list[int]:
    """The distinct layers holding `heads`, in order: the heads choose the layers."""
    return sorted({layer for layer, _ in heads})


@torch.no_grad()
def final_residuals(
    model: "HookedAudioLM", batch: "AudioBatch", layers: Sequence[int], site: str = "hook_resid_post"
) -> Float[Tensor, "batch layer d_model"]:
    """The residual stream at each example's final prompt position, at `blocks.{L}.{site}` for each layer."""
    names = [f"blocks.{layer}.{site}" for layer in layers]
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        raise ValueError(f"no hook point {unknown[0]!r}: layers must be in 0-{model.cfg.n_layers - 1} and site a block hook such as 'hook_resid_post'.")
    _, cache = model.run_with_cache(batch, names_filter=names, stop_at_layer=max(layers) + 1, return_cache_object=False)
    rows = torch.arange(batch.batch_size, device=model.device)
    final = batch.final_position.to(model.device)
    return torch.stack([cache[name][rows, final] for name in names], dim=1)


def adaptive_direction(
    model: "HookedAudioLM", batch: "AudioBatch", layers: Sequence[int], site: str = "hook_resid_post"
) -> Float[Tensor, "batch d_model"]:
    """Per example: mean over `layers` of (residual with audio - residual with silence of the same length)."""
    if not layers:
        raise ValueError("adaptive_direction needs at least one layer (e.g. layers_of(specialist_heads)).")
    audio = final_residuals(model, batch, layers, site)
    silence = final_residuals(model, batch.silence_twin(), layers, site)
    return (audio - silence).mean(dim=1)


def steering_hooks(
    model: "HookedAudioLM",
    direction: Float[Tensor, "batch d_model"] | Float[Tensor, "d_model"],
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
    hook_name = hook_name or f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    if hook_name not in model.hook_dict:
        raise ValueError(f"no hook point {hook_name!r}; see model.hook_names() or the README's hook table.")
    if direction.shape[-1] != model.cfg.d_model:
        raise ValueError(
            f"steering vector has width {direction.shape[-1]} but the model's residual stream is {model.cfg.d_model} wide: "
            "compute the direction on this model (or load a fixed direction saved from a model of the same shape)."
        )
    push = (beta * direction).to(device=model.device, dtype=model.dtype)

    def add(resid: Tensor, hook) -> Tensor:
        if push.ndim == 2 and push.shape[0] != resid.shape[0]:
            raise ValueError(f"steering direction is for {push.shape[0]} examples but the batch has {resid.shape[0]}.")
        resid = resid.clone()
        resid[:, start:] += push[:, None] if push.ndim == 2 else push
        return resid

    return [(hook_name, add)]


@contextlib.contextmanager
def steer(model: "HookedAudioLM", direction: Tensor, beta: float, hook_name: str | None = None) -> Iterator["HookedAudioLM"]:
    """`with steer(model, direction, beta): model(batch)` or `model.generate(batch)` run steered."""
    with model.hooks(fwd_hooks=steering_hooks(model, direction, beta, hook_name)):
        yield model


@dataclass
class FixedDirection:
    """A steering direction averaged over a calibration set, applied without a silence pass."""

    vector: Float[Tensor, "d_model"]
    model_name: str
    layers: list[int]
    beta: float
    site: str = "hook_resid_post"

    @classmethod
    def from_batches(cls, model: "HookedAudioLM", batches: Sequence["AudioBatch"], layers: Sequence[int], beta: float, site: str = "hook_resid_post") -> "FixedDirection":
        directions = torch.cat([adaptive_direction(model, b, layers, site) for b in batches])
        return cls(directions.mean(0).cpu(), model.cfg.model_name, list(layers), float(beta), site)

    def hooks(self, model: "HookedAudioLM", hook_name: str | None = None, start: int = -1) -> list[tuple[str, Callable]]:
        return steering_hooks(model, self.vector, self.beta, hook_name, start)

    def steering(self, hook_name: str | None = None):
        """A steering function for the evaluation runner (the same push for every input; no silence pass)."""
        return lambda model, batch, start=-1: self.hooks(model, hook_name, start)

    def save(self, path: str | Path) -> None:
        metadata = {"model_name": self.model_name, "layers": json.dumps(self.layers), "beta": str(self.beta), "site": self.site, "d_model": str(self.vector.shape[0])}
        save_file({"direction": self.vector.contiguous()}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, model: "HookedAudioLM | None" = None) -> "FixedDirection":
        """Load; with `model`, refuse a direction saved from a model of another width."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        vector = load_file(str(path))["direction"]
        loaded = cls(vector, metadata["model_name"], json.loads(metadata["layers"]), float(metadata["beta"]), metadata["site"])
        if model is not None and vector.shape[0] != model.cfg.d_model:
            raise ValueError(
                f"{path} holds a direction of width {vector.shape[0]} from {loaded.model_name!r}, but this model's "
                f"residual stream is {model.cfg.d_model} wide; recompute the direction on this model."
            )
        return loaded


def adaptive_steering(layers: Sequence[int], beta: float, hook_name: str | None = None, site: str = "hook_resid_post"):
    """A steering function for the evaluation runner: per batch, compute the adaptive direction and push it."""

    def make_hooks(model: "HookedAudioLM", batch: "AudioBatch", start: int = -1) -> list[tuple[str, Callable]]:
        return steering_hooks(model, adaptive_direction(model, batch, layers, site), beta, hook_name, start)

    return make_hooks
