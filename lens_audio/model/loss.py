"""Next-token loss as TransformerLens computes it, with the positions an audio prompt should not be scored on masked.

`return_type="loss"` averages the cross-entropy of predicting each next token over the *targets* that are real
text tokens predicted from a real position: as in TransformerLens, a target is skipped when it or the position
predicting it is padding, and `<|AUDIO|>` placeholder targets are skipped too (the model never predicts audio
embeddings). On a padded batch the loss is the token-weighted mean of the rows' unpadded losses. `answer_loss`
scores only an appended answer, as for an MMAU-style multiple-choice item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lens_audio.inputs.plain_text import encode_text

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def text_targets(
    input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"], audio_token_id: int
) -> Bool[Tensor, "batch pos"]:
    """True where a position is a real, non-audio token (a target worth predicting)."""
    return attention_mask.bool() & (input_ids != audio_token_id)


def lm_cross_entropy_loss(
    logits: Float[Tensor, "batch pos d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    targets: Bool[Tensor, "batch pos"] | None = None,
    per_token: bool = False,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, ""] | Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of predicting `tokens[:, 1:]` from `logits[:, :-1]`, over the targets where `targets` is True
    and whose predicting position is real (`attention_mask`; TransformerLens's `lm_cross_entropy_loss` rule).

    `per_token=True` returns `[batch, pos - 1]` with unscored positions set to 0 (as TransformerLens's loss).
    """
    tokens = tokens.to(logits.device)
    log_probs = logits[:, :-1].float().log_softmax(-1)
    nll = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
    keep = torch.ones_like(nll, dtype=torch.bool) if targets is None else targets[:, 1:].to(nll.device)
    if attention_mask is not None:
        keep = keep & attention_mask[:, :-1].to(device=nll.device, dtype=torch.bool)
    nll = nll.masked_fill(~keep, 0.0)
    if per_token:
        return nll
    if not bool(keep.any()):
        raise ValueError("No position is scored: every target is padding or audio. Give a prompt with text tokens.")
    return nll.sum() / keep.sum()


def answer_loss(
    model: "HookedAudioLM", batch: "AudioBatch", answers: str | Sequence[str], per_token: bool = False
) -> Float[Tensor, " batch"] | Float[Tensor, "batch answer_pos"]:
    """Mean loss of each row's answer given its prompt (e.g. an MMAU choice after `model.to_batch(audio, question)`).

    Each answer is tokenised, appended after its row's prompt (answers of different lengths are right-padded), and
    only the answer tokens are scored. Returns one mean per row, or `[batch, answer_pos]` with `per_token=True`
    (0 past a row's answer).
    """
    if isinstance(answers, str):
        answers = [answers] * batch.batch_size
    if len(answers) != batch.batch_size:
        raise ValueError(f"Got {len(answers)} answers for a batch of {batch.batch_size} prompts; give one per prompt.")
    if batch.padding_side != "left":
        raise ValueError("answer_loss appends answers after each prompt: build the batch with padding_side='left'.")
    ids = [encode_text(model.tokenizer, a) for a in answers]
    if not all(ids):
        raise ValueError(f"An answer tokenises to nothing: {answers!r}.")
    width = max(len(i) for i in ids)
    device = batch.input_ids.device
    answer_ids = torch.zeros(len(ids), width, dtype=batch.input_ids.dtype, device=device)
    answer_mask = torch.zeros_like(answer_ids)
    for row, row_ids in enumerate(ids):
        answer_ids[row, : len(row_ids)] = torch.tensor(row_ids, device=device)
        answer_mask[row, : len(row_ids)] = 1
    tokens = torch.cat([batch.input_ids, answer_ids], dim=1)
    mask = torch.cat([batch.attention_mask, answer_mask], dim=1)
    targets = torch.cat([torch.zeros_like(batch.attention_mask, dtype=torch.bool), answer_mask.bool()], dim=1)
    logits = model(tokens, mask, batch.input_features, batch.feature_attention_mask)
    nll = lm_cross_entropy_loss(logits, tokens, targets, per_token=True, attention_mask=mask)[:, -width:]
    if per_token:
        return nll
    return nll.sum(-1) / answer_mask.sum(-1)
