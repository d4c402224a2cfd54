"""Adaptive steering in one pass: the direction and the steered audio rows from a single batched forward.

The direction's layers all come before the steering site (by default the last block's output), so one forward
of the audio rows and their silence twins, stopped nowhere, can form the direction when its deepest layer has
run, drop the silence rows, and push the audio rows from there on. `steered_prefill` is that pass (kept open
as a context so that generation decodes on, steered, under the same hooks); `steered_logits` scores with it,
`steered_generate` (in `direction`) generates with it. Where the silence twins share a prefix, or the prefix
is in the silence cache, the silence activations come first from `shared_silence_finals` and the pass holds
the audio rows only.

Either source (`sources`): the residual at `layers` (the paper), or with `heads` the heads' own outputs
(`attn.hook_result`). With a `gate` (`sources.SignalGate`) the same forward also reads the gate heads'
final-position audio attention mass on the audio rows (from their rotated queries and keys, as
`listening_signal` does) and scales each row's direction by it before the push.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.analysis.listening import final_row_attention
from lens_audio.analysis.steering.push import check_strength, checked_push, row_strengths, steered, steering_hooks
from lens_audio.analysis.steering.silence_prefix import shared_silence_finals
from lens_audio.analysis.steering.sources import (
    SignalGate,
    direction_heads,
    direction_layers,
    head_output_names,
    head_output_sum,
    residual_difference,
)
from lens_audio.inputs.batch import AudioBatch
from lens_audio.model.hook_point import block_hook_name, site_hook_names

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM
    from lens_audio.model.kv_cache import KVCache


@dataclass
class SteeredPrefill:
    """The audio rows' residual after the last block, steered (None when the steering hook fires before the
    direction's deepest layer, so the direction was not ready in time), and each row's direction (gated, if a
    gate was given: the vector that was pushed, times beta)."""

    resid: Float[Tensor, "batch pos d_model"] | None
    direction: Float[Tensor, "batch d_model"]


@dataclass
class SteeredLogits:
    """Steered next-token logits at each row's final prompt position, and the adaptive direction that steered them."""

    logits: Float[Tensor, "batch d_vocab"]
    direction: Float[Tensor, "batch d_model"]


def direction_reads(
    model: "HookedAudioLM",
    layers: Sequence[int] | None,
    site: str = "hook_resid_post",
    heads: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[str], int, Callable[[dict[str, Tensor], dict[str, Tensor]], Tensor]]:
    """What the direction reads (hook names, at each row's final position), the blocks to run before all have
    fired, and how the audio and silence reads combine: the residual at `layers` and `site`, or with `heads` their
    outputs (then `layers` is ignored)."""
    if heads is not None:
        heads = direction_heads(model.cfg, heads, "head-output steering")
        depth = max(layer for layer, _ in heads) + 1
        return head_output_names(heads), depth, lambda a, s: head_output_sum(a, heads) - head_output_sum(s, heads)
    if not layers:
        raise ValueError("adaptive steering needs at least one layer (e.g. layers_of(specialist_heads)).")
    layers = direction_layers(layers)
    names = site_hook_names(model, layers, site)

    def combine(audio: dict[str, Tensor], silence: dict[str, Tensor]) -> Tensor:
        return residual_difference(*(torch.stack([reads[n] for n in names], dim=1) for reads in (audio, silence)))

    return names, max(layers) + 1, combine


def gate_hooks(
    model: "HookedAudioLM", batch: "AudioBatch", gate: SignalGate, done: Callable[[], bool], ready: Callable[[], None]
) -> tuple[list[tuple[str, Callable]], Float[Tensor, "batch layer head"], set[int]]:
    """Hooks reading the gate heads' final-position audio mass on the batch's rows (the first `batch_size` rows of
    any forward they see: the audio rows), as `listening_signal` computes it, until `done()`; `ready()` is called
    after each layer. Returns the hooks, the `[batch, layer, head]` mass (NaN where not read) and the layers read."""
    model.cfg.check_heads(gate.heads, "the signal gate")
    b, device = batch.batch_size, model.device
    final, key_valid = batch.final_position.to(device), batch.attention_mask.to(device).bool()
    audio = batch.audio_mask.to(device)
    mass = torch.full((b, model.cfg.n_layers, model.cfg.n_heads), float("nan"), device=device)
    queries: dict[int, Tensor] = {}
    read: set[int] = set()

    def keep_q(q: Float[Tensor, "batch pos head d_head"], hook) -> None:
        if not done():
            queries[hook.layer()] = q[:b]

    def use_k(k: Float[Tensor, "batch pos kv_head d_head"], hook) -> None:
        if done():
            return
        layer = hook.layer()
        pattern = final_row_attention(queries.pop(layer), k[:b], final.to(k.device), key_valid.to(k.device))
        mass[:, layer] = (pattern * audio.to(k.device)[:, None, :]).sum(-1).to(device)
        read.add(layer)
        ready()

    hooks = [(block_hook_name(layer, "attn.hook_rot_q"), keep_q) for layer in gate.layers]
    return hooks + [(block_hook_name(layer, "attn.hook_rot_k"), use_k) for layer in gate.layers], mass, read


@contextlib.contextmanager
def steered_prefill(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    layers: Sequence[int] | None,
    beta: float,
    *,
    hook_name: str | None = None,
    site: str = "hook_resid_post",
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
    past_kv_cache: "KVCache | None" = None,
    start: int = -1,
    heads: Sequence[tuple[int, int]] | None = None,
    gate: SignalGate | None = None,
) -> Iterator[SteeredPrefill]:
    """Run the batch (and its silence twin) once, steering positions `start:` at `hook_name` by `beta` times
    each row's adaptive direction; the hooks stay on inside the context (decoding steps are pushed at their
    newest position). The direction reads the residual at `layers` (`site`), or with `heads` their summed outputs
    (`head_output_direction`; pass `layers=layers_of(heads)` or None); with `gate`, each row's direction is scaled by
    the gate from the same forward. The caller validates `beta` and `hook_name` (`steering_hooks` does)."""
    names, depth, combine = direction_reads(model, layers, site, heads)
    strength = check_strength(beta)  # one number, or one per row of `batch`
    if isinstance(strength, Tensor):
        row_strengths(strength, batch.batch_size, model.device)  # refuse a count that is not the batch's first
    hook_name = hook_name or block_hook_name(model.cfg.n_layers - 1, "hook_resid_post")
    silence = None if fwd_hooks else shared_silence_finals(model, batch, names, depth)
    both = batch if silence is not None else AudioBatch.concat([batch, batch.silence_twin()])
    b, final = batch.batch_size, both.final_position.to(model.device)
    captured: dict[str, Tensor] = {}
    state: dict[str, Tensor | bool] = {"early": False}  # "direction" once every read has fired

    def done() -> bool:  # then decoding steps read nothing
        return "direction" in state

    def ready() -> None:
        if done() or len(captured) < len(set(names)) or (gate is not None and len(gate_read) < len(gate.layers)):
            return
        audio = {n: rows[:b] for n, rows in captured.items()}
        direction = combine(audio, silence if silence is not None else {n: r[b:] for n, r in captured.items()})
        state["direction"] = direction if gate is None else gate.apply(direction, gate_mass)

    def capture(activation: Tensor, hook) -> None:
        if done():
            return
        rows = torch.arange(activation.shape[0], device=activation.device)
        captured[hook.name] = activation[rows, final.to(activation.device)].to(model.device)
        ready()

    def push(resid: Tensor, hook) -> Tensor:
        if not done():
            state["early"] = True
            return resid
        direction = state["direction"]
        twice = resid.shape[0] != b  # the silence rows run on past the direction's layers (a late read)
        strengths = torch.cat([strength, strength]) if twice and isinstance(strength, Tensor) else strength
        checked_push(strength, direction, resid.dtype)  # beta * direction overflows nowhere
        rows = (torch.cat([direction, direction]) if twice else direction).to(resid.device)
        resid = resid.clone()
        resid[:, start:] = steered(  # nor does the steered residual
            resid[:, start:], row_strengths(strengths, resid.shape[0], resid.device), rows[:, None])
        return resid

    gating, gate_mass, gate_read = gate_hooks(model, batch, gate, done, ready) if gate is not None else ([], None, ())
    hooks = [(n, capture) for n in sorted(set(names))] + gating + [(hook_name, push)] + list(fwd_hooks)
    with model.hooks(fwd_hooks=hooks):
        prefill = model.start_decoder(
            both.input_ids,
            both.attention_mask,
            both.input_features,
            both.feature_attention_mask,
            past_kv_cache=past_kv_cache,
        )
        model.run_blocks(prefill, 0, depth)
        prefill = prefill.select_rows(slice(0, b))
        resid = model.run_blocks(prefill, depth)
        yield SteeredPrefill(None if state["early"] else resid, state["direction"])


@torch.no_grad()
def steered_logits(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    layers: Sequence[int] | None,
    beta: float,
    *,
    hook_name: str | None = None,
    site: str = "hook_resid_post",
    fwd_hooks: Sequence[tuple[str, Callable]] = (),
    heads: Sequence[tuple[int, int]] | None = None,
    gate: SignalGate | None = None,
) -> SteeredLogits:
    """The final-position logits of `with steer(model, adaptive_direction(model, batch, layers, site), beta,
    hook_name): model(batch)`, and the direction, from one batched forward of the batch and its silence twin.

    Scoring a left-padded batch: the push goes to each row's final prompt position. `fwd_hooks` stay on for
    the whole pass (silence rows too). `heads` and `gate` as in `steered_prefill` (the direction of
    `direction.gated_direction`). Falls back to a separate direction pass if `hook_name` fires before the
    deepest layer read.
    """
    from lens_audio.model.generation import check_left_padded, last_logits

    batch.require_audio("steered_logits")
    check_left_padded(batch.attention_mask)
    steering_hooks(model, torch.zeros(model.cfg.d_model), beta, hook_name)  # validates hook_name and beta
    with steered_prefill(
        model, batch, layers, beta, hook_name=hook_name, site=site, fwd_hooks=fwd_hooks, heads=heads, gate=gate
    ) as prefill:
        if prefill.resid is not None:
            return SteeredLogits(last_logits(model, prefill.resid), prefill.direction)
    hooks = list(fwd_hooks) + steering_hooks(model, prefill.direction, beta, hook_name)
    with model.hooks(fwd_hooks=hooks):
        return SteeredLogits(last_logits(model, model(batch, stop_at_layer=model.cfg.n_layers)), prefill.direction)
