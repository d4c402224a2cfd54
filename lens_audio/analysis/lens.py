"""Logit lens at the final prompt position: what each layer's residual stream would answer.

The residual stream entering each layer (and the final one) goes through the final RMSNorm and
the unembedding, and the answer options' probability and rank are read per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


@dataclass
class LogitLens:
    """`prob` and `rank` are `[layer, example, option]`; layer labels are `0_pre ... final_post` as in TransformerLens."""

    prob: Float[Tensor, "layer example option"]
    rank: Int[Tensor, "layer example option"]
    labels: list[str]


@torch.no_grad()
def logit_lens(model: "HookedAudioLM", batch: "AudioBatch", option_ids: Sequence[Sequence[int]]) -> LogitLens:
    """Probability and rank (0 = top) of each example's option tokens, per layer, at the final prompt position."""
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)] + [f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(batch, names_filter=names, return_cache_object=False)
    rows = torch.arange(batch.batch_size, device=model.device)
    final = batch.final_position.to(model.device)
    stack = torch.stack([cache[n][rows, final] for n in names])  # [layer, example, d_model]
    logits = model.unembed(model.ln_final(stack)).float()
    options = torch.as_tensor(option_ids, device=logits.device)[None].expand(len(names), -1, -1)
    prob = logits.softmax(-1).gather(-1, options)
    option_logits = logits.gather(-1, options)
    rank = (logits[:, :, None, :] > option_logits[..., None]).sum(-1)
    labels = [f"{l}_pre" for l in range(model.cfg.n_layers)] + ["final_post"]
    return LogitLens(prob=prob.cpu(), rank=rank.cpu(), labels=labels)
