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


def _stack(model: "HookedAudioLM", batch: "AudioBatch") -> tuple[Tensor, list[str]]:
    """The residual stream entering each layer and leaving the last: `[layer, batch, pos, d_model]`, with TL labels."""
    names = [block_hook_name(l, "hook_resid_pre") for l in range(model.cfg.n_layers)] + [
        block_hook_name(model.cfg.n_layers - 1, "hook_resid_post")
    ]
    _, cache = model.run_with_cache(batch, names_filter=names, return_cache_object=False)
    labels = [f"{l}_pre" for l in range(model.cfg.n_layers)] + ["final_post"]
    return torch.stack([cache[n] for n in names]), labels


@torch.no_grad()
def logit_lens_over_audio(
    model: "HookedAudioLM", batch: "AudioBatch", option_ids: Sequence[int], example: int = 0
) -> Float[Tensor, "layer audio_pos option"]:
    """Probability of each option, read through the final norm and unembedding, at every audio position of one
    example."""
    stack, _ = _stack(model, batch)
    audio = batch.audio_mask[example].to(stack.device)
    logits = model.unembed(model.ln_final(stack[:, example][:, audio])).float()
    return logits.softmax(-1)[..., list(option_ids)].cpu()


@torch.no_grad()
def logit_lens(model: "HookedAudioLM", batch: "AudioBatch", option_ids: Sequence[Sequence[int]]) -> LogitLens:
    """Probability and rank (0 = top) of each example's option tokens, per layer, at the final prompt position."""
    full, labels = _stack(model, batch)
    rows = torch.arange(batch.batch_size, device=model.device)
    stack = full[:, rows, batch.final_position.to(model.device)]  # [layer, example, d_model]
    logits = model.unembed(model.ln_final(stack)).float()
    options = torch.as_tensor(option_ids, device=logits.device)[None].expand(len(labels), -1, -1)
    prob = logits.softmax(-1).gather(-1, options)
    option_logits = logits.gather(-1, options)
    rank = (logits[:, :, None, :] > option_logits[..., None]).sum(-1)
    return LogitLens(prob=prob.cpu(), rank=rank.cpu(), labels=labels)
