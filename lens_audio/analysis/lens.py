"""Logit lens: what each layer's residual stream would answer, at the final prompt position or over the audio.

The residual stream entering each layer (and the final one) goes through the final RMSNorm and
the unembedding, and the answer options' probability and rank are read per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


@dataclass
class LogitLens:
    """`prob` and `rank` are `[layer, example, option]`; layer labels are `0_pre ... final_post` as in
    TransformerLens."""

    prob: Float[Tensor, "layer example option"]
    rank: Int[Tensor, "layer example option"]
    labels: list[str]


# float32 logits held at once while reading options through the unembedding: rows are unembedded in chunks of
# this many bytes, so a 150k-token vocabulary over every audio position of a 30 s clip never lands whole in memory
UNEMBED_CHUNK_BYTES = 256 * 2**20


def _layer_names(model: "HookedAudioLM") -> tuple[list[str], list[str]]:
    """The residual stream entering each layer and leaving the last, with TransformerLens's labels."""
    names = [block_hook_name(l, "hook_resid_pre") for l in range(model.cfg.n_layers)] + [
        block_hook_name(model.cfg.n_layers - 1, "hook_resid_post")
    ]
    return names, [f"{l}_pre" for l in range(model.cfg.n_layers)] + ["final_post"]


def _residuals_at(
    model: "HookedAudioLM", batch: "AudioBatch", rows: Int[Tensor, " n"], positions: Int[Tensor, " n"]
) -> tuple[Float[Tensor, "layer n d_model"], list[str]]:
    """Each layer's residual stream at (row, position) pairs only: hooks keep those vectors, never whole layers."""
    names, labels = _layer_names(model)
    kept: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        kept[hook.name] = act[rows.to(act.device), positions.to(act.device)]

    model.run_with_hooks(batch, fwd_hooks=[(name, keep) for name in names], return_type=None)
    return torch.stack([kept[n].to(model.device) for n in names]), labels


def read_options(
    model: "HookedAudioLM", resid: Float[Tensor, "row d_model"], option_ids: Int[Tensor, "row option"],
    chunk_bytes: int = UNEMBED_CHUNK_BYTES,
) -> tuple[Float[Tensor, "row option"], Int[Tensor, "row option"]]:
    """Probability and rank (0 = top) of each row's options when `resid` goes through the final norm and the
    unembedding, unembedding `chunk_bytes` of float32 logits at a time (the peak does not grow with the rows)."""
    rows_per_chunk = max(1, chunk_bytes // (4 * model.cfg.d_vocab * (1 + option_ids.shape[-1])))
    probs, ranks = [], []
    for start in range(0, resid.shape[0], rows_per_chunk):
        logits = model.unembed(model.ln_final(resid[start:start + rows_per_chunk])).float()
        options = option_ids[start:start + rows_per_chunk].to(logits.device)
        chosen = logits.gather(-1, options)
        probs.append((chosen - logits.logsumexp(-1, keepdim=True)).exp())
        ranks.append(torch.stack([(logits > chosen[:, k, None]).sum(-1) for k in range(options.shape[-1])], -1))
    return torch.cat(probs), torch.cat(ranks)


@torch.no_grad()
def logit_lens_over_audio(
    model: "HookedAudioLM", batch: "AudioBatch", option_ids: Sequence[int], example: int = 0
) -> Float[Tensor, "layer audio_pos option"]:
    """Probability of each option, read through the final norm and unembedding, at every audio position of one
    example (only those positions are kept from the forward, and unembedded in chunks: `read_options`)."""
    positions = batch.audio_mask[example].nonzero()[:, 0]
    rows = torch.full_like(positions, example)
    stack, labels = _residuals_at(model, batch, rows, positions)  # [layer, audio_pos, d_model]
    options = torch.as_tensor(list(option_ids), device=stack.device)[None].expand(stack.shape[0] * len(rows), -1)
    prob, _ = read_options(model, stack.flatten(0, 1), options)
    return prob.reshape(len(labels), len(rows), -1).cpu()


@torch.no_grad()
def logit_lens(model: "HookedAudioLM", batch: "AudioBatch", option_ids: Sequence[Sequence[int]]) -> LogitLens:
    """Probability and rank (0 = top) of each example's option tokens, per layer, at the final prompt position
    (only that position is kept from the forward, and unembedded in chunks: `read_options`)."""
    rows = torch.arange(batch.batch_size, device=batch.input_ids.device)
    stack, labels = _residuals_at(model, batch, rows, batch.final_position)  # [layer, example, d_model]
    options = torch.as_tensor(option_ids, device=stack.device)
    flat = options[None].expand(len(labels), -1, -1).flatten(0, 1)
    prob, rank = read_options(model, stack.flatten(0, 1), flat)
    shape = (len(labels), batch.batch_size, options.shape[-1])
    return LogitLens(prob=prob.reshape(shape).cpu(), rank=rank.reshape(shape).cpu(), labels=labels)
