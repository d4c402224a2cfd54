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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.steering.push import check_strength, steering_hooks
from lens_audio.analysis.steering.silence_prefix import shared_silence_residuals
from lens_audio.analysis.steering.sources import (
    SignalGate,
    direction_heads,
    direction_layers,
    head_output_names,
    head_output_sum,
    residual_difference,
)
from lens_audio.analysis.steering.steered_pass import steered_logits, steered_prefill
from lens_audio.files import write_atomically
from lens_audio.inputs.batch import AudioBatch
from lens_audio.model.hook_point import site_hook_names

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def layers_of(heads: Sequence[tuple[int, int]]) -> list[int]:
    """The distinct layers holding `heads`, in order: the heads choose the layers."""
    return sorted({layer for layer, _ in heads})


@torch.no_grad()
def final_residuals(
    model: "HookedAudioLM", batch: "AudioBatch", layers: Sequence[int], site: str = "hook_resid_post"
) -> Float[Tensor, "batch layer d_model"]:
    """The residual stream at each example's final prompt position, at `blocks.{L}.{site}` for each layer."""
    names = site_hook_names(model, layers, site)
    _, cache = model.run_with_cache(batch, names_filter=names, stop_at_layer=max(layers) + 1, return_cache_object=False)
    rows = torch.arange(batch.batch_size, device=model.device)
    final = batch.final_position.to(model.device)
    # Layers may sit on different devices (accelerate's device_map): index each where it is, gather on model.device.
    return torch.stack(
        [cache[n][rows.to(cache[n].device), final.to(cache[n].device)].to(model.device) for n in names], dim=1
    )


def adaptive_direction(
    model: "HookedAudioLM", batch: "AudioBatch", layers: Sequence[int], site: str = "hook_resid_post"
) -> Float[Tensor, "batch d_model"]:
    """Per example: mean over `layers` of (residual with audio - residual with silence of the same length).

    Both passes stop after the deepest layer in `layers`. Where rows share their silence prefix (the same
    text up to the end of the last clip, clips of the same lengths) the silence pass runs that prefix once
    (`silence_prefix.shared_silence_residuals`); otherwise the batch and its silence twin run as one batched
    forward.
    """
    if not layers:
        raise ValueError("adaptive_direction needs at least one layer (e.g. layers_of(specialist_heads)).")
    layers = direction_layers(layers)  # each layer once: [2, 2, 3] is [2, 3] (a repeat warns)
    batch.require_audio("adaptive_direction")
    silence = shared_silence_residuals(model, batch, layers, site)
    if silence is not None:
        return residual_difference(final_residuals(model, batch, layers, site), silence)
    both = final_residuals(model, AudioBatch.concat([batch, batch.silence_twin()]), layers, site)  # one batched pass
    return residual_difference(both[: batch.batch_size], both[batch.batch_size :])


@torch.no_grad()
def head_output_direction(
    model: "HookedAudioLM", batch: "AudioBatch", heads: Sequence[tuple[int, int]]
) -> Float[Tensor, "batch d_model"]:
    """Per example: sum over `heads` of their output (`attn.hook_result`) at the final position, audio minus silence.

    Each head counts once (a repeat warns); a head the model does not have is refused naming it and the range."""
    heads = direction_heads(model.cfg, heads, "head_output_direction")
    names = head_output_names(heads)
    rows = torch.arange(batch.batch_size, device=model.device)
    final = batch.final_position.to(model.device)

    def summed(b: "AudioBatch") -> Tensor:
        _, cache = model.run_with_cache(
            b, names_filter=names, stop_at_layer=max(l for l, _ in heads) + 1, return_cache_object=False
        )
        return head_output_sum({name: cache[name][rows, final] for name in names}, heads)

    return summed(batch) - summed(batch.silence_twin())


def gated_direction(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    layers: Sequence[int] | None,
    site: str = "hook_resid_post",
    heads: Sequence[tuple[int, int]] | None = None,
    gate: SignalGate | None = None,
) -> Float[Tensor, "batch d_model"]:
    """The direction of either source, gated or not, by separate passes: `adaptive_direction` at `layers` (or with
    `heads`, `head_output_direction`), scaled by `gate` from `listening_signal(model, batch)`. The one pass
    (`steered_pass`, `steered_generate`) forms the same direction inside the steered forward."""
    direction = (
        adaptive_direction(model, batch, layers, site) if heads is None else head_output_direction(model, batch, heads)
    )
    return direction if gate is None else gate.apply(direction, listening_signal(model, batch).audio_mass)


@contextlib.contextmanager
def steer(
    model: "HookedAudioLM", direction: Tensor, beta: float, hook_name: str | None = None
) -> Iterator["HookedAudioLM"]:
    """`with steer(model, direction, beta): model(batch)` or `model.generate(batch)` run steered."""
    with model.hooks(fwd_hooks=steering_hooks(model, direction, beta, hook_name)):
        yield model


@dataclass
class FixedDirection:
    """A steering direction averaged over a calibration set, applied without a silence pass."""

    vector: Float[Tensor, " d_model"]
    model_name: str
    layers: list[int]
    beta: float
    site: str = "hook_resid_post"

    @classmethod
    def from_batches(
        cls,
        model: "HookedAudioLM",
        batches: Sequence["AudioBatch"],
        layers: Sequence[int],
        beta: float,
        site: str = "hook_resid_post",
    ) -> "FixedDirection":
        layers = direction_layers(layers)
        directions = torch.cat([adaptive_direction(model, b, layers, site) for b in batches])
        return cls(directions.mean(0).cpu(), model.cfg.model_name, layers, float(beta), site)

    def hooks(
        self, model: "HookedAudioLM", hook_name: str | None = None, start: int = -1
    ) -> list[tuple[str, Callable]]:
        return steering_hooks(model, self.vector, self.beta, hook_name, start)

    def steering(self, hook_name: str | None = None):
        """A steering function for the evaluation runner (the same push for every input; no silence pass)."""
        return lambda model, batch, start=-1: self.hooks(model, hook_name, start)

    def save(self, path: str | Path) -> None:
        metadata = {
            "model_name": self.model_name,
            "layers": json.dumps(self.layers),
            "beta": str(self.beta),
            "site": self.site,
            "d_model": str(self.vector.shape[0]),
        }
        write_atomically(path, save({"direction": self.vector.contiguous()}, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path, model: "HookedAudioLM | None" = None) -> "FixedDirection":
        """Load; with `model`, refuse a direction saved from a model of another width."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata()
            vector = load_file(str(path))["direction"]
            loaded = cls(vector, metadata["model_name"], json.loads(metadata["layers"]), float(metadata["beta"]),
                         metadata["site"])
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
            raise ValueError(f"{path} is not a steering direction saved by FixedDirection.save ({exc}).") from exc
        if model is not None and vector.shape[0] != model.cfg.d_model:
            raise ValueError(
                f"{path} holds a direction of width {vector.shape[0]} from {loaded.model_name!r}, but this model's "
                f"residual stream is {model.cfg.d_model} wide; recompute the direction on this model."
            )
        return loaded


@dataclass
class AdaptiveSteering:
    """A steering function for the evaluation runner: per batch, compute the adaptive direction and push it.

    Called as `steering(model, batch, start)` it returns the hooks (multi-token choice scoring); its `logits`
    (single-token choice scoring) and `generate` run the direction's pass and the steered pass as one.
    """

    layers: Sequence[int]
    beta: float
    hook_name: str | None = None
    site: str = "hook_resid_post"

    def __post_init__(self) -> None:
        check_strength(self.beta)  # one number, or one per batch row
        self.layers = direction_layers(self.layers)  # each once (a repeat warns here, once)

    def __call__(self, model: "HookedAudioLM", batch: "AudioBatch", start: int = -1) -> list[tuple[str, Callable]]:
        return steering_hooks(
            model, adaptive_direction(model, batch, self.layers, self.site), self.beta, self.hook_name, start
        )

    def logits(self, model: "HookedAudioLM", batch: "AudioBatch") -> Float[Tensor, "batch d_vocab"]:
        """Steered final-position logits in one pass (`steered_pass.steered_logits`): single-token choice scoring."""

        return steered_logits(model, batch, self.layers, self.beta, hook_name=self.hook_name, site=self.site).logits

    def generate(self, model: "HookedAudioLM", batch: "AudioBatch", **generate_kwargs) -> Int[Tensor, "batch total"]:
        return steered_generate(
            model, batch, self.layers, self.beta, hook_name=self.hook_name, site=self.site, **generate_kwargs
        )


def adaptive_steering(
    layers: Sequence[int], beta: float, hook_name: str | None = None, site: str = "hook_resid_post"
) -> AdaptiveSteering:
    """A steering function for the evaluation runner: per batch, compute the adaptive direction and push it."""
    return AdaptiveSteering(list(layers), beta, hook_name, site)


@torch.no_grad()
def steered_generate(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    layers: Sequence[int],
    beta: float,
    *,
    hook_name: str | None = None,
    site: str = "hook_resid_post",
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
    heads: Sequence[tuple[int, int]] | None = None,
    gate: SignalGate | None = None,
    **generate_kwargs,
) -> Int[Tensor, "batch total"]:
    """`model.generate(batch)` steered by each example's adaptive direction, for little more than plain generation.

    The same tokens as `model.generate(batch, fwd_hooks=steering_hooks(model, adaptive_direction(model, batch,
    layers, site), beta, hook_name))`, computed in one prefill: the batch and its silence twin run as one
    batched forward up to the deepest layer in `layers`, where the direction is formed; the silence rows are
    dropped and the audio rows go on through the remaining layers, steered, keeping their KV cache for
    decoding. So only the silence rows up to that layer are extra, and less where rows share their silence
    prefix: then (no `fwd_hooks`, no hooks active) the silence residuals come first from
    `shared_silence_residuals` and the prefill holds the audio rows only. `generate_kwargs` are `generate`'s
    (`max_new_tokens`, `do_sample`, `eos_token_id`, ...); `fwd_hooks` stay on for all of it (silence rows too).
    If the steering hook fires before the deepest direction layer (e.g. `hook_name` in an early block),
    the direction cannot be ready in time and this falls back to a separate direction pass. The pass itself is
    `steered_pass.steered_prefill`, shared with `steered_logits`. With `heads` the direction is their outputs'
    (`head_output_direction`; `layers` may then be None), with `gate` it is gated: `gated_direction`'s.
    """
    from lens_audio.model.generation import Sampling, check_left_padded, decode, last_logits
    from lens_audio.model.kv_cache import KVCache

    if not layers and not heads:
        raise ValueError("steered_generate needs at least one layer (e.g. layers_of(specialist_heads)).")
    batch.require_audio("steered_generate")
    check_left_padded(batch.attention_mask)
    sampling = Sampling(**generate_kwargs)
    steering_hooks(model, torch.zeros(model.cfg.d_model), beta, hook_name)  # validates hook_name and beta
    cache = KVCache(model.cfg.n_layers)
    tokens, mask = batch.input_ids.to(model.device), batch.attention_mask.to(model.device)
    with steered_prefill(
        model, batch, layers, beta, hook_name=hook_name, site=site, fwd_hooks=fwd_hooks, past_kv_cache=cache,
        heads=heads, gate=gate,
    ) as prefill:
        if prefill.resid is not None:  # decoding steps stay steered by the prefill's hooks
            return decode(model, tokens, mask, last_logits(model, prefill.resid), cache, sampling)
    steer_hooks = steering_hooks(model, prefill.direction, beta, hook_name)
    return model.generate(batch, fwd_hooks=list(fwd_hooks) + steer_hooks, **generate_kwargs)
