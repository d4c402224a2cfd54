"""Head-ablation scans: the effect on the answer of removing each attention head, batched.

Kinds of ablation (replacing a head's `hook_z` at every position):
- `zero`: zeros;
- `mean`: the head's mean output over the positions and examples of a reference batch;
- `silence`: its output on the silence twin of the same input (resampling the head from a run that
  heard nothing).

Batched: the inputs are replicated `heads_per_pass` times along the batch and each replica has a
different head ablated, so a scan of all heads takes `n_heads_total / heads_per_pass` decoder passes;
memory grows with `heads_per_pass` (1 = one head per forward). The numbers do not depend on it. The
audio encoder and the layers below each pass's first ablated layer run once per batch: ablating a head
in layer L cannot change the residual stream entering layer L, so every replica starts from the baseline
run's input to block L (`block_input_hook_name`) and runs only layers L and up, and only the final position is
unembedded. Hooks active during a scan fire once per pass as in a whole forward, but only from block L on.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.model.hook_point import block_hook_name, block_input_hook_name

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

AblationKind = Literal["zero", "mean", "silence"]


@dataclass
class AblationScan:
    """Per (layer, head): mean change of the answer margin and the accuracy with that head ablated.

    The answer margin is the answer option's logit minus the best other option's (see `option_margins`).
    """

    margin_change: Float[Tensor, "layer head"]
    accuracy: Float[Tensor, "layer head"]
    baseline_margin: float
    baseline_accuracy: float
    kind: str

    @property
    def logit_diff_change(self) -> Float[Tensor, "layer head"]:
        """Deprecated name of `margin_change` (it holds an answer margin, not a two-token logit difference)."""
        warnings.warn("AblationScan.logit_diff_change is now margin_change.", DeprecationWarning, stacklevel=2)
        return self.margin_change


def option_margins(
    final_logits: Float[Tensor, "batch d_vocab"], choice_ids: Tensor, answer: Tensor
) -> tuple[Tensor, Tensor]:
    """Answer logit minus the best other choice's, and whether the answer wins, per example."""
    rows = torch.arange(final_logits.shape[0])
    scores = final_logits[rows[:, None], choice_ids]
    answer_score = scores[rows, answer]
    others = (
        scores.masked_fill(torch.nn.functional.one_hot(answer, scores.shape[1]).bool(), float("-inf")).max(-1).values
    )
    return answer_score - others, answer_score > others


@torch.no_grad()
def _replacements(
    model: "HookedAudioLM", batch: "AudioBatch", kind: AblationKind, reference: "AudioBatch | None"
) -> dict[int, Tensor] | None:
    if kind == "zero":
        return None
    names = [block_hook_name(l, "attn.hook_z") for l in range(model.cfg.n_layers)]
    if kind == "silence":
        _, cache = model.run_with_cache(batch.silence_twin(), names_filter=names, return_cache_object=False)
        return {l: cache[n] for l, n in enumerate(names)}
    if kind == "mean":
        ref = reference or batch
        _, cache = model.run_with_cache(ref, names_filter=names, return_cache_object=False)
        valid = ref.attention_mask.bool().to(model.device)
        return {l: cache[n][valid].mean(0) for l, n in enumerate(names)}  # [head, d_head]
    raise ValueError(f"ablation kind must be 'zero', 'mean' or 'silence', not {kind!r}.")


@torch.no_grad()
def ablate_heads(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    choice_ids: Sequence[Sequence[int]],
    answer_index: Sequence[int],
    kind: AblationKind = "zero",
    heads: Sequence[Sequence[tuple[int, int]]] | None = None,
    heads_per_pass: int = 8,
    reference: "AudioBatch | None" = None,
    final_only: bool = False,
) -> tuple[Tensor, Tensor, float, float]:
    """Ablate each group in `heads` (default: every single head) and measure the answer margin and accuracy.

    Returns `(margin_change [group], accuracy [group], baseline_margin, baseline_accuracy)`, margins averaged
    over examples. `choice_ids[i]` are example i's option tokens, `answer_index[i]` the right one. With
    `final_only`, a head's output is replaced at each example's final prompt position only (its output
    elsewhere, and so what later layers read from other positions, is kept).
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    groups = (
        [list(g) for g in heads] if heads is not None else [[(l, h)] for l in range(n_layers) for h in range(n_heads)]
    )
    model.cfg.check_heads([lh for group in groups for lh in group], "ablate_heads")
    choice = torch.as_tensor(choice_ids)
    answer = torch.as_tensor(answer_index)
    chunks = [groups[start : start + heads_per_pass] for start in range(0, len(groups), heads_per_pass)]
    firsts = [min(l for group in chunk for l, _ in group) for chunk in chunks]  # each pass starts at its first layer
    starts = {layer: block_input_hook_name(layer) for layer in firsts}
    logits, cache = model.run_with_cache(batch, names_filter=list(starts.values()), return_cache_object=False)
    rows = torch.arange(batch.batch_size, device=logits.device)
    final_logits = logits[rows, batch.final_position.to(logits.device)].cpu()
    base_margin, base_correct = option_margins(final_logits, choice, answer)
    del logits
    replacement = _replacements(model, batch, kind, reference)
    b = batch.batch_size
    mask = batch.attention_mask.to(model.device)
    final_rows = batch.final_position.to(model.device)
    example_rows = torch.arange(b, device=model.device)
    margins, accuracies = [], []
    for chunk, first in zip(chunks, firsts):
        k = len(chunk)

        def ablate(z, hook, chunk=chunk):
            layer = hook.layer()
            z = z.clone()
            for r, group in enumerate(chunk):
                for l, h in group:
                    if l != layer:
                        continue
                    rows = slice(r * b, (r + 1) * b)
                    if final_only:
                        at = (example_rows + r * b, final_rows)
                        if replacement is None:
                            z[at[0], at[1], h] = 0.0
                        elif kind == "mean":
                            z[at[0], at[1], h] = replacement[l][h].to(z)
                        else:
                            z[at[0], at[1], h] = replacement[l][example_rows, final_rows, h].to(z)
                    elif replacement is None:
                        z[rows, :, h] = 0.0
                    elif kind == "mean":
                        z[rows, :, h] = replacement[l][h]
                    else:
                        z[rows, :, h] = replacement[l][:, :, h]
            return z

        layers = sorted({l for group in chunk for l, _ in group})
        state = model.decoder_state(cache[starts[first]].repeat(k, 1, 1), mask.repeat(k, 1))
        with model.hooks(fwd_hooks=[(block_hook_name(l, "attn.hook_z"), ablate) for l in layers]):
            resid = model.run_blocks(state, first)
            final = batch.final_position.to(resid.device).repeat(k)
            final_resid = resid[torch.arange(k * b, device=resid.device), final]
            final_logits = model.unembed(model.ln_final(final_resid[:, None]))[:, 0].cpu()
        margin, correct = option_margins(final_logits, choice.repeat(k, 1), answer.repeat(k))
        margins += list((margin.view(k, b) - base_margin).mean(1))
        accuracies += list(correct.view(k, b).float().mean(1))
    return torch.stack(margins), torch.stack(accuracies), float(base_margin.mean()), float(base_correct.float().mean())


def scan_heads(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    choice_ids,
    answer_index,
    kind: AblationKind = "zero",
    heads_per_pass: int = 8,
    reference=None,
) -> AblationScan:
    """Every head ablated on its own, as a `[layer, head]` map."""
    change, accuracy, base_margin, base_accuracy = ablate_heads(
        model, batch, choice_ids, answer_index, kind, None, heads_per_pass, reference
    )
    shape = (model.cfg.n_layers, model.cfg.n_heads)
    return AblationScan(change.view(shape), accuracy.view(shape), base_margin, base_accuracy, kind)


def cumulative_ablation(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    choice_ids,
    answer_index,
    ranking: Sequence[tuple[int, int]],
    kind: AblationKind = "zero",
    heads_per_pass: int = 8,
    reference=None,
):
    """Ablate the top-1, top-2, ... heads of `ranking` together: `(margin_change [k], accuracy [k])`."""
    groups = [list(ranking[: k + 1]) for k in range(len(ranking))]
    change, accuracy, _, _ = ablate_heads(
        model, batch, choice_ids, answer_index, kind, groups, heads_per_pass, reference
    )
    return change, accuracy
