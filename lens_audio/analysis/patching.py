"""Activation patching with audio: clean and corrupted runs that differ in their audio (or text).

Two ways in:

- `BoundAudioModel(model, corrupted_batch)` binds one batch's audio features
  and masks to the model, so TransformerLens 4's `transformer_lens.patching`
  helpers — which call `model.run_with_hooks(tokens, fwd_hooks=...)` with
  tokens only — run unchanged on audio inputs::

      from transformer_lens import patching
      clean = model.to_batch(clip, question); corrupted = clean.silence_twin()
      _, clean_cache = model.run_with_cache(clean)
      metric = normalized_logit_diff(model, clean, corrupted, correct_id, wrong_id)
      result = patching.get_act_patch_resid_pre(BoundAudioModel(model, corrupted), corrupted.input_ids, clean_cache,
      metric)

- `patch_residual_by_position` and `patch_heads` here, which also group the
  audio positions into one "audio" column, as audio-token positions are many
  and individually uninformative.

Clean and corrupted batches must share their token layout (a silence twin, a
clip of the same length, or text of the same token length).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens_audio.model.hook_point import block_hook_name, block_input_hook_name
from lens_audio.model.memory import require_attribution

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Tensor]


class BoundAudioModel:
    """A `HookedAudioLM` with one batch's audio bound in: `run_with_hooks(tokens, fwd_hooks=...)` feeds that audio."""

    def __init__(self, model: "HookedAudioLM", batch: "AudioBatch") -> None:
        self.model, self.batch = model, batch

    def run_with_hooks(self, tokens: Tensor, fwd_hooks: Sequence = (), **kwargs: Any) -> Tensor:
        if tokens.shape != self.batch.input_ids.shape:
            raise ValueError(
                f"tokens have shape {tuple(tokens.shape)} but the bound batch has {tuple(self.batch.input_ids.shape)}: "
                "clean and corrupted inputs must share their token layout (use a silence twin or same-length inputs)."
            )
        b = self.batch
        return self.model.run_with_hooks(
            tokens, b.attention_mask, b.input_features, b.feature_attention_mask, fwd_hooks=list(fwd_hooks), **kwargs
        )

    def __call__(self, tokens: Tensor, **kwargs: Any) -> Tensor:
        return self.run_with_hooks(tokens, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def check_same_layout(clean: "AudioBatch", corrupted: "AudioBatch") -> None:
    if clean.input_ids.shape != corrupted.input_ids.shape or clean.audio_spans != corrupted.audio_spans:
        raise ValueError(
            "clean and corrupted batches differ in token layout "
            f"({tuple(clean.input_ids.shape)} vs {tuple(corrupted.input_ids.shape)}); patching needs position-aligned "
            "runs: "
            "use batch.silence_twin(), clips of equal length, or texts of equal token length."
        )


@torch.no_grad()
def normalized_logit_diff(
    model: "HookedAudioLM",
    clean: "AudioBatch",
    corrupted: "AudioBatch",
    correct: Sequence[int] | Tensor,
    wrong: Sequence[int] | Tensor,
) -> Metric:
    """A metric over logits: (patched - corrupted) / (clean - corrupted) of the correct-minus-wrong logit at the final
    position.

    1 means the patch fully restores the clean behaviour, 0 means no effect. Averaged over the batch.
    """
    check_same_layout(clean, corrupted)
    correct, wrong = torch.as_tensor(correct), torch.as_tensor(wrong)
    rows = torch.arange(clean.batch_size)
    final = clean.final_position

    def logit_diff(logits: Tensor) -> Tensor:
        r, f, c, w = (t.to(logits.device) for t in (rows, final, correct, wrong))
        last = logits[r, f]
        return last[r, c] - last[r, w]

    clean_diff, corrupted_diff = logit_diff(model(clean)), logit_diff(model(corrupted))
    span = clean_diff - corrupted_diff
    if bool((span.abs() < 1e-6).any()):
        raise ValueError(
            "clean and corrupted runs give the same logit difference for some example; the metric would divide by zero."
        )
    return lambda logits: ((logit_diff(logits) - corrupted_diff) / span).mean()


@torch.no_grad()
def patch_residual_by_position(
    model: "HookedAudioLM",
    clean: "AudioBatch",
    corrupted: "AudioBatch",
    metric: Metric,
    site: str = "hook_resid_pre",
    group_audio: bool | str = True,
    columns_per_pass: int = 8,
    layers: Sequence[int] | None = None,
) -> tuple[Float[Tensor, "layer column"], list[str]]:
    """Metric after patching the clean residual into the corrupted run, per (layer, position).

    With `group_audio`, every example's audio positions are patched together as one column
    labelled "audio"; other columns are single text positions, labelled by example 0's tokens. With
    `group_audio="clip"` the columns follow the prompt's order and each clip's audio is its own column
    ("Audio 1", "Audio 2", ...).
    Returns the `[layer, column]` table and the column labels.

    At the default site (`hook_resid_pre`) a patched run only differs from the corrupted run from the
    patched layer on, so each starts there from the corrupted run's cached input to that block,
    `columns_per_pass` patched copies of the batch in one forward (hooks active fire once, from that block
    on); other sites run one whole hooked forward per cell.

    `layers` computes only those rows of the table (the others are NaN): a share of the work, as
    `evaluation.parallel.sharded_patch_residual_by_position` deals it out to the processes of a launch.
    """
    check_same_layout(clean, corrupted)
    n_layers = model.cfg.n_layers
    rows = list(range(n_layers)) if layers is None else sorted(set(layers))
    if any(not 0 <= layer < n_layers for layer in rows):
        raise ValueError(f"layers must be decoder layers 0..{n_layers - 1}, not {list(layers or [])}.")
    names = [block_hook_name(layer, site) for layer in rows]
    _, cache = model.run_with_cache(clean, names_filter=names, return_cache_object=False)
    columns, labels = _position_groups(model, clean, group_audio)
    table = torch.full((n_layers, len(columns)), float("nan")) if layers is not None else torch.zeros(
        n_layers, len(columns))
    if site == "hook_resid_pre":
        inputs = [block_input_hook_name(layer) for layer in rows]
        _, corrupted_cache = model.run_with_cache(corrupted, names_filter=inputs, return_cache_object=False)
        mask = corrupted.attention_mask.to(model.device)
        b = corrupted.batch_size
        for layer, name, block_input in zip(rows, names, inputs):
            for start in range(0, len(columns), columns_per_pass):
                chunk = columns[start : start + columns_per_pass]

                def put(resid, hook, chunk=chunk, clean_resid=cache[name]):  # after any hook the user has there
                    resid = resid.clone()
                    for r, column in enumerate(chunk):
                        rows = resid[r * b : (r + 1) * b]
                        column = column.to(rows.device)
                        rows[column] = clean_resid.to(rows.device)[column]
                    return resid

                copies = len(chunk)
                state = model.decoder_state(corrupted_cache[block_input].repeat(copies, 1, 1), mask.repeat(copies, 1))
                with model.hooks(fwd_hooks=[(name, put)]):
                    resid = model.run_blocks(state, layer)
                for r in range(copies):  # one replica's logits at a time: [b, pos, d_vocab], as a whole forward
                    table[layer, start + r] = metric(model.unembed(model.ln_final(resid[r * b : (r + 1) * b])))
        return table, labels
    for layer, name in zip(rows, names):
        for c, mask in enumerate(columns):
            def put(resid, hook, mask=mask.to(model.device), clean_resid=cache[name]):  # noqa: B008 (binds this iteration's mask)
                resid = resid.clone()
                resid[mask] = clean_resid[mask]
                return resid
            table[layer, c] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, put)]))
    return table, labels


def _position_groups(
    model: "HookedAudioLM", batch: "AudioBatch", group_audio: bool | str
) -> tuple[list[Tensor], list[str]]:
    """`[batch, pos]` masks: every example's audio tokens together (if grouped), then each other position; with
    `group_audio="clip"`, every position in prompt order with each clip's audio tokens one column ("Audio k").

    Labels are example 0's tokens; with left padding, positions line up at the end of the prompt.
    """
    if group_audio not in (True, False, "clip"):
        raise ValueError(f"group_audio must be True, False or 'clip', not {group_audio!r}.")
    audio = batch.audio_mask.cpu()
    tokens = (
        model.to_str_tokens(batch.input_ids[0])
        if model.processor is not None
        else [str(t) for t in batch.input_ids[0].tolist()]
    )
    columns, labels = [], []
    clip_starts: dict[int, int] = {}
    if group_audio == "clip":
        counts = {len(spans) for spans in batch.audio_spans}
        if len(counts) > 1:
            raise ValueError(
                f"group_audio='clip' needs the same number of clips in every example, not {sorted(counts)}; "
                "use group_audio=True."
            )
        clip_starts = {start: k for k, (start, _) in enumerate(batch.audio_spans[0])}
    elif group_audio and audio.any():
        columns.append(audio)
        labels.append("audio")
    for pos in range(batch.input_ids.shape[1]):
        if pos in clip_starts:
            k = clip_starts[pos]
            mask = torch.zeros_like(audio)
            for row, spans in enumerate(batch.audio_spans):
                mask[row, spans[k][0] : spans[k][1]] = True
            columns.append(mask)
            labels.append(f"Audio {k + 1}")
            continue
        if group_audio and audio[0, pos]:
            continue
        mask = torch.zeros_like(audio)
        mask[:, pos] = True
        columns.append(mask & ~audio if group_audio else mask)
        labels.append(tokens[pos])
    return columns, labels


@torch.no_grad()
def patch_heads(
    model: "HookedAudioLM",
    clean: "AudioBatch",
    corrupted: "AudioBatch",
    metric: Metric,
    by_position: bool = False,
    group_audio: bool = True,
) -> Float[Tensor, "layer head"] | tuple[Float[Tensor, "layer head column"], list[str]]:
    """Metric after patching each head's clean output (`hook_z`) into the corrupted run.

    All positions at once by default (`[layer, head]`); with `by_position`, one position (or the
    grouped audio positions) at a time, returning `[layer, head, column]` and the column labels.
    """
    check_same_layout(clean, corrupted)
    names = [block_hook_name(layer, "attn.hook_z") for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(clean, names_filter=names, return_cache_object=False)
    if by_position:
        columns, labels = _position_groups(model, clean, group_audio)
    else:
        columns, labels = [torch.ones(clean.input_ids.shape, dtype=torch.bool)], ["all"]
    table = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, len(columns))
    for layer, name in enumerate(names):
        for head in range(model.cfg.n_heads):
            for c, mask in enumerate(columns):
                def put(z, hook, head=head, mask=mask.to(model.device), clean_z=cache[name]):  # noqa: B008 (binds this iteration's mask)
                    z = z.clone()
                    z[:, :, head][mask] = clean_z[:, :, head][mask]
                    return z
                table[layer, head, c] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, put)]))
    return (table, labels) if by_position else table[..., 0]


@dataclass
class Attribution:
    """Attribution-patching estimates of the metric change from patching clean into corrupted.

    `per_head[layer, head]`: each head's output (`hook_z`, all positions); `resid[layer, pos]`: the
    residual stream entering each layer at each position (example 0's layout, summed over the batch).
    """

    per_head: Float[Tensor, "layer head"]
    resid: Float[Tensor, "layer pos"]

    @property
    def heads(self) -> Float[Tensor, "layer head"]:
        """Deprecated name of `per_head` ("heads" elsewhere means a list of (layer, head) pairs)."""
        warnings.warn("Attribution.heads is now per_head.", DeprecationWarning, stacklevel=2)
        return self.per_head


def attribution_patching(
    model: "HookedAudioLM", clean: "AudioBatch", corrupted: "AudioBatch", metric: Metric, final_only: bool = False
) -> Attribution:
    """Linear (gradient) approximation of activation patching for every head and residual position.

    One clean forward and one corrupted forward-backward for the whole batch:
    effect ≈ (clean activation − corrupted activation) · d metric / d activation, at the corrupted run.
    With `final_only`, `per_head` estimates patching each head's output at each example's final prompt
    position only (`resid` is unchanged).
    """
    check_same_layout(clean, corrupted)
    require_attribution(model, corrupted)  # a refusal up front, naming the rows that fit, not an out-of-memory midway
    n_layers = model.cfg.n_layers
    names = [block_hook_name(l, "attn.hook_z") for l in range(n_layers)] + [
        block_hook_name(l, "hook_resid_pre") for l in range(n_layers)
    ]
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean, names_filter=names, return_cache_object=False)
    acts: dict[str, Tensor] = {}

    def make_leaf(x, hook):  # weights need no gradient; the activations do
        return x.detach().requires_grad_(True)

    def keep(x, hook):
        acts[hook.name] = x
        return x

    with torch.enable_grad():
        logits = model.run_with_hooks(corrupted, fwd_hooks=[("hook_embed", make_leaf)] + [(n, keep) for n in names])
        # autograd.grad, not backward: the (trainable) weights must not collect gradients.
        grads = dict(zip(names, torch.autograd.grad(metric(logits), [acts[n] for n in names])))
    def head_effect(n: str) -> Tensor:
        effect = (clean_cache[n] - acts[n].detach()) * grads[n]  # [batch, pos, head, d_head]
        if final_only:
            rows = torch.arange(effect.shape[0], device=effect.device)
            return effect[rows, corrupted.final_position.to(effect.device)].sum(dim=(0, 2))
        return effect.sum(dim=(0, 1, 3))

    heads = torch.stack([head_effect(n) for n in names[:n_layers]])
    resid = torch.stack([((clean_cache[n] - acts[n].detach()) * grads[n]).sum(dim=(0, 2)) for n in names[n_layers:]])
    return Attribution(per_head=heads.cpu(), resid=resid.cpu())
