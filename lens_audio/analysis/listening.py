"""The listening signal: how much each head at the final prompt position attends to the audio tokens.

For every (layer, head), the attention weights of the final prompt token (the
position that predicts the first answer token) summed over the example's
audio-token positions. Only that one query row is computed, from the rotated
queries and keys captured by hooks, while the model itself runs its fast
attention path: memory grows with layers x heads x sequence, never with
sequence squared, and no attention pattern is cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lens_audio.model.attention import attention_scores
from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


@dataclass
class ListeningSignal:
    """Audio attention mass per example, layer and head; optionally the full final-row distribution of some heads.

    Attributes:
        audio_mass: `[example, layer, head]`, each in [0, 1].
        heads: the (layer, head) pairs whose whole final-row attention is in `rows`.
        rows: `[example, len(heads), pos]` attention of the final token over all positions (None if no heads asked).
        audio_mask: `[example, pos]` True at audio tokens, to cut `rows` to the audio time axis.
    """

    audio_mass: Float[Tensor, "example layer head"]
    heads: list[tuple[int, int]]
    rows: Float[Tensor, "example n_heads pos"] | None
    audio_mask: Bool[Tensor, "example pos"]

    @property
    def n_layers(self) -> int:
        return self.audio_mass.shape[1]

    @property
    def n_heads(self) -> int:
        return self.audio_mass.shape[2]


def final_row_attention(
    q: Float[Tensor, "batch pos head d_head"],
    k: Float[Tensor, "batch pos kv_head d_head"],
    final: Int[Tensor, " batch"],
    key_valid: Bool[Tensor, "batch pos"],
) -> Float[Tensor, "batch head pos"]:
    """Softmax attention of each example's final query over its keys (causal, padding masked)."""
    rows = torch.arange(q.shape[0], device=q.device)
    q_final = q[rows, final][:, None]  # [batch, 1 query, head, d_head]
    positions = torch.arange(k.shape[1], device=q.device)
    allowed = key_valid & (positions[None, :] <= final[:, None])
    scores = attention_scores(q_final, k, allowed[:, None, None, :], q.shape[-1] ** -0.5)[:, :, 0]
    return scores.softmax(dim=-1, dtype=torch.float32)


@torch.no_grad()
def listening_signal(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    heads: Sequence[tuple[int, int]] = (),
    layers: Sequence[int] | None = None,
) -> ListeningSignal:
    """Compute the listening signal of every head (or of `layers` only) for `batch` in one forward pass.

    Args:
        heads: (layer, head) pairs whose full final-row attention to keep, e.g. for a heatmap over the clip.
        layers: restrict to these layers (others get NaN); the forward stops after the last one needed.
    """
    cfg = model.cfg
    batch.require_audio("listening_signal")
    cfg.check_heads(heads, "listening_signal")
    bad = [layer for layer in (layers or []) if not (isinstance(layer, int) and 0 <= layer < cfg.n_layers)]
    if bad or (layers is not None and not layers):
        raise ValueError(f"listening_signal: layers {list(layers)} must be a non-empty list in 0-{cfg.n_layers - 1}.")
    wanted = sorted(set(range(cfg.n_layers) if layers is None else layers) | {layer for layer, _ in heads})
    final = batch.final_position.to(model.device)
    key_valid = batch.attention_mask.to(model.device).bool()
    audio = batch.audio_mask.to(model.device)
    mass = torch.full((batch.batch_size, cfg.n_layers, cfg.n_heads), float("nan"))
    kept: dict[tuple[int, int], Tensor] = {}
    captured: dict[int, Tensor] = {}

    def keep_q(q, hook):
        captured[hook.layer()] = q

    def use_k(k, hook):
        layer = hook.layer()
        pattern = final_row_attention(captured.pop(layer), k, final.to(k.device), key_valid.to(k.device))
        mass[:, layer] = (pattern * audio.to(k.device)[:, None, :]).sum(-1).cpu()
        for lh in heads:
            if lh[0] == layer:
                kept[lh] = pattern[:, lh[1]].cpu()

    hooks = [(block_hook_name(l, "attn.hook_rot_q"), keep_q) for l in wanted] + [
        (block_hook_name(l, "attn.hook_rot_k"), use_k) for l in wanted
    ]
    model.run_with_hooks(batch, fwd_hooks=hooks, stop_at_layer=wanted[-1] + 1)
    rows = torch.stack([kept[h] for h in heads], dim=1) if heads else None
    return ListeningSignal(audio_mass=mass, heads=list(heads), rows=rows, audio_mask=audio.cpu())

