"""Adaptive steering in one pass: the direction and the steered audio rows from a single batched forward.

The direction's layers all come before the steering site (by default the last block's output), so one forward
of the audio rows and their silence twins, stopped nowhere, can form the direction when its deepest layer has
run, drop the silence rows, and push the audio rows from there on. `steered_prefill` is that pass (kept open
as a context so that generation decodes on, steered, under the same hooks); `steered_logits` scores with it,
`steered_generate` (in `steering`) generates with it. Where the silence twins share a prefix, or the prefix
is in the silence cache, the silence residuals come first from `shared_silence_residuals` and the pass holds
the audio rows only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.analysis.steering.push import checked_push, steered, steering_hooks
from lens_audio.analysis.steering.silence_prefix import shared_silence_residuals
from lens_audio.inputs.batch import AudioBatch
from lens_audio.model.hook_point import block_hook_name, site_hook_names

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM
    from lens_audio.model.kv_cache import KVCache


@dataclass
class SteeredPrefill:
    """The audio rows' residual after the last block, steered (None when the steering hook fires before the
    direction's deepest layer, so the direction was not ready in time), and each row's direction."""

    resid: Float[Tensor, "batch pos d_model"] | None
    direction: Float[Tensor, "batch d_model"]


@dataclass
class SteeredLogits:
    """Steered next-token logits at each row's final prompt position, and the adaptive direction that steered them."""

    logits: Float[Tensor, "batch d_vocab"]
    direction: Float[Tensor, "batch d_model"]


@contextlib.contextmanager
def steered_prefill(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    layers: Sequence[int],
    beta: float,
    *,
    hook_name: str | None = None,
    site: str = "hook_resid_post",
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
    past_kv_cache: "KVCache | None" = None,
    start: int = -1,
) -> Iterator[SteeredPrefill]:
    """Run the batch (and its silence twin) once, steering positions `start:` at `hook_name` by `beta` times
    each row's adaptive direction; the hooks stay on inside the context (decoding steps are pushed at their
    newest position). The caller validates `beta` and `hook_name` (`steering_hooks` does)."""
    if not layers:
        raise ValueError("adaptive steering needs at least one layer (e.g. layers_of(specialist_heads)).")
    names = site_hook_names(model, layers, site)
    hook_name = hook_name or block_hook_name(model.cfg.n_layers - 1, "hook_resid_post")
    silence = None if fwd_hooks else shared_silence_residuals(model, batch, layers, site)
    both = batch if silence is not None else AudioBatch.concat([batch, batch.silence_twin()])
    b, final = batch.batch_size, both.final_position.to(model.device)
    captured: dict[str, Tensor] = {}
    state: dict[str, Tensor | bool] = {"early": False}  # "direction" once the deepest site has fired

    def capture(resid: Tensor, hook) -> None:
        if "direction" in state:  # decoding steps
            return
        captured[hook.name] = resid[torch.arange(resid.shape[0], device=resid.device), final.to(resid.device)]
        if len(captured) == len(set(names)):
            stacked = torch.stack([captured[n].to(model.device) for n in names], dim=1)
            state["direction"] = (stacked[:b] - (stacked[b:] if silence is None else silence)).mean(dim=1)

    def push(resid: Tensor, hook) -> Tensor:
        if "direction" not in state:
            state["early"] = True
            return resid
        direction = state["direction"]
        checked_push(beta, direction, resid.dtype)  # beta * direction overflows nowhere
        rows = (direction if resid.shape[0] == b else torch.cat([direction, direction])).to(resid.device)
        resid = resid.clone()
        resid[:, start:] = steered(resid[:, start:], beta, rows[:, None])  # nor does the steered residual
        return resid

    hooks = [(n, capture) for n in sorted(set(names))] + [(hook_name, push)] + list(fwd_hooks)
    with model.hooks(fwd_hooks=hooks):
        prefill = model.start_decoder(
            both.input_ids,
            both.attention_mask,
            both.input_features,
            both.feature_attention_mask,
            past_kv_cache=past_kv_cache,
        )
        model.run_blocks(prefill, 0, max(layers) + 1)
        prefill = prefill.select_rows(slice(0, b))
        resid = model.run_blocks(prefill, max(layers) + 1)
        yield SteeredPrefill(None if state["early"] else resid, state["direction"])


@torch.no_grad()
def steered_logits(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    layers: Sequence[int],
    beta: float,
    *,
    hook_name: str | None = None,
    site: str = "hook_resid_post",
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
) -> SteeredLogits:
    """The final-position logits of `with steer(model, adaptive_direction(model, batch, layers, site), beta,
    hook_name): model(batch)`, and the direction, from one batched forward of the batch and its silence twin.

    Scoring a left-padded batch: the push goes to each row's final prompt position. `fwd_hooks` stay on for
    the whole pass (silence rows too). Falls back to a separate direction pass if `hook_name` fires before the
    deepest layer in `layers`.
    """
    from lens_audio.model.generation import check_left_padded, last_logits

    batch.require_audio("steered_logits")
    check_left_padded(batch.attention_mask)
    steering_hooks(model, torch.zeros(model.cfg.d_model), beta, hook_name)  # validates hook_name and beta
    with steered_prefill(
        model, batch, layers, beta, hook_name=hook_name, site=site, fwd_hooks=fwd_hooks
    ) as prefill:
        if prefill.resid is not None:
            return SteeredLogits(last_logits(model, prefill.resid), prefill.direction)
    hooks = list(fwd_hooks) + steering_hooks(model, prefill.direction, beta, hook_name)
    with model.hooks(fwd_hooks=hooks):
        return SteeredLogits(model(batch)[:, -1], prefill.direction)
