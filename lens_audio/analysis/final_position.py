"""The final prompt position: keep its residual stream at every layer, patch it layer by layer, read choices from it.

The final prompt position predicts the first answer token, so for single-token answers everything the model answers
with passes through its residual stream there. Three pieces for any model (the workshop organisms or a 7B):

- `final_state_hooks`: hooks that keep that position's residual stream at every block input and the last block's
  output (and, optionally, each head's output) during any forward, memory independent of the sequence length;
  `final_states_and_listening` runs one forward that keeps them beside every head's listening signal;
- `final_resid_patch_logits`: for every layer L at once, the final logits of a corrupted run (e.g. the silence
  twin) whose final-position `blocks.L.hook_resid_post` is set to the clean run's, restarting from block L + 1;
- `best_options`: each item's best option by its first token's logit (multiple-choice scoring at that position).

The layout of the kept points (`[batch, n_layers + 1, d_model]`): p = L is block L's input (`resid_pre`),
p = L + 1 its output (`resid_post`), so p = 0 is the embeddings and p = n_layers the final residual before
`ln_final`. `lens_audio.paper.fast_steering.FastSteering` stores states in this layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.analysis.listening import listening_signal
from lens_audio.model.hook_point import block_hook_name

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def final_state_hooks(
    model: HookedAudioLM, batch: AudioBatch, heads: bool = False
) -> tuple[list[tuple[str, Callable]], Callable[[], tuple[Tensor, Tensor | None]]]:
    """Hooks that keep the final prompt position's residual points (the layout above) and, with `heads`, each
    head's output (`attn.hook_result`); run any forward of `batch` under them, then call the second value for
    `(points [batch, n_layers + 1, d_model], heads [batch, layer, head, d_model] or None)`, on the model's device.
    Only the final position is kept, so memory does not grow with the sequence."""
    n = model.cfg.n_layers
    final = batch.final_position
    kept: dict[str, Tensor] = {}

    def keep(act: Tensor, hook) -> None:
        rows = torch.arange(act.shape[0], device=act.device)
        kept[hook.name] = act[rows, final.to(act.device)].detach().to(model.device)

    names = [block_hook_name(layer, "hook_resid_pre") for layer in range(n)] + [
        block_hook_name(n - 1, "hook_resid_post")
    ]
    head_names = [block_hook_name(layer, "attn.hook_result") for layer in range(n)] if heads else []

    def collected() -> tuple[Tensor, Tensor | None]:
        points = torch.stack([kept[name] for name in names], dim=1)
        return points, torch.stack([kept[name] for name in head_names], dim=1) if heads else None

    return [(name, keep) for name in names + head_names], collected


@torch.no_grad()
def final_states_and_listening(
    model: HookedAudioLM, batch: AudioBatch
) -> tuple[Float[Tensor, "batch point d_model"], Float[Tensor, "batch layer head"]]:
    """One forward of `batch` that keeps the final position's residual points (`final_state_hooks`) and every
    head's listening signal (`listening_signal(...).audio_mass`, on the CPU, float32)."""
    hooks, collected = final_state_hooks(model, batch)
    with model.hooks(fwd_hooks=hooks):  # under listening_signal's own hooks: one forward for both
        mass = listening_signal(model, batch).audio_mass.float()
    return collected()[0], mass


@torch.no_grad()
def final_resid_patch_logits(
    model: HookedAudioLM, corrupted: AudioBatch, clean_final: Float[Tensor, "batch layer d_model"]
) -> Float[Tensor, "layer batch d_vocab"]:
    """Final-position logits of `corrupted` with, for each layer L, the final prompt position's
    `blocks.L.hook_resid_post` replaced by `clean_final[:, L]` (every other position kept).

    One forward of `corrupted` keeping each layer's `resid_post`, then for each L a restart from block L + 1
    (`decoder_state` / `run_blocks`, as `analysis.patching.patch_residual_by_position` does for `resid_pre`;
    `resid_post` of L is `resid_pre` of L + 1) with only the final position changed. For the last layer no block
    runs: the logits are those of the clean final state itself. `clean_final` is the clean run's points
    `[:, 1:]` in `final_state_hooks`'s layout.
    """
    n = model.cfg.n_layers
    if clean_final.shape[:2] != (corrupted.batch_size, n):
        raise ValueError(f"clean_final must be [batch={corrupted.batch_size}, layer={n}, d_model], not "
                         f"{list(clean_final.shape)}.")
    names = [block_hook_name(layer, "hook_resid_post") for layer in range(n)]
    _, cache = model.run_with_cache(corrupted, names_filter=names, return_cache_object=False)
    mask = corrupted.attention_mask.to(model.device)
    out = []
    for layer, name in enumerate(names):
        resid = cache[name].clone()
        rows = torch.arange(resid.shape[0], device=resid.device)
        final = corrupted.final_position.to(resid.device)
        resid[rows, final] = clean_final[:, layer].to(resid)
        resid = model.run_blocks(model.decoder_state(resid, mask.to(resid.device)), layer + 1)
        rows, final = rows.to(resid.device), final.to(resid.device)
        out.append(model.unembed(model.ln_final(resid[rows, final])).float().to(model.device))
    return torch.stack(out)


def best_options(
    logits: Float[Tensor, "*lead batch d_vocab"], option_ids: Sequence[Sequence[int]]
) -> Int[np.ndarray, "*lead batch"]:
    """Each row's best option: the index into its `option_ids` (each option's first token) of the highest logit.
    Leading dimensions are kept, e.g. `[layer, batch]` from `final_resid_patch_logits`."""
    if logits.shape[-2] != len(option_ids):
        raise ValueError(f"option_ids must list the options of each of the {logits.shape[-2]} rows, not "
                         f"{len(option_ids)}.")
    picked = [logits[..., row, list(ids)].argmax(-1) for row, ids in enumerate(option_ids)]
    return torch.stack(picked, -1).cpu().numpy().astype(int)


@torch.no_grad()
def final_resid_logits(
    model: HookedAudioLM, final_resid: Float[Tensor, "batch d_model"]
) -> Float[Tensor, "batch d_vocab"]:
    """The logits a final residual (before `ln_final`, the points' last entry) gives."""
    return model.unembed(model.ln_final(final_resid))
