"""Autoregressive decoding for `HookedAudioLM`, with a KV cache and hooks active on every step.

Mirrors Hugging Face's `generate` for the settings interpretability work
uses, with TransformerLens's defaults and arguments: sampling (`do_sample=True`,
the default, as in TransformerLens) with temperature (0 means greedy), top-k,
top-p and TransformerLens's `freq_penalty`, or greedy (`do_sample=False`, what
every evaluation in lens_audio passes); rows that emit an end-of-sequence
token are padded with the pad token afterwards; decoding stops when every
row has finished. The audio encoder runs once, on the prefill step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens_audio.checks import check_float, check_int
from lens_audio.model.finite import check_finite_logits
from lens_audio.model.kv_cache import KVCache

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

Hook = tuple["str | Callable[[str], bool]", Callable[..., Any]]


@torch.no_grad()
def generate(
    model: "HookedAudioLM",
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"],
    input_features: Float[Tensor, "clips mels frames"] | None = None,
    feature_attention_mask: Int[Tensor, "clips frames"] | None = None,
    *,
    max_new_tokens: int = 10,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    freq_penalty: float = 0.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    fwd_hooks: Sequence[Hook] = (),
    generator: torch.Generator | None = None,
    use_past_kv_cache: bool = True,
) -> Int[Tensor, "batch prompt_plus_new"]:
    """Return the prompt followed by up to `max_new_tokens` generated tokens per row.

    Takes the model's four input tensors (`HookedAudioLM.generate` unpacks an `AudioBatch` or text into them).
    Batched prompts must be left-padded (`model.to_batch` does so by
    default). `fwd_hooks` are added for the whole generation, so steering or
    ablation hooks act on the prefill and on every decoding step; hooks
    already on the model (e.g. inside `with model.hooks(...)`) stay active too.
    `eos_token_id` defaults to the model config's.
    """
    check_left_padded(attention_mask)
    device = model.device
    tokens, mask = input_ids.to(device), attention_mask.to(device)
    sampling = Sampling(
        max_new_tokens, do_sample, temperature, top_k, top_p, freq_penalty, eos_token_id, pad_token_id, generator
    )
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        if not use_past_kv_cache:
            step = lambda toks, m: model(toks, m, input_features, feature_attention_mask)[:, -1]  # noqa: E731
            return decode(model, tokens, mask, step(tokens, mask), None, sampling, step)
        cache = KVCache(model.cfg.n_layers)
        state = model.start_decoder(tokens, mask, input_features, feature_attention_mask, past_kv_cache=cache)
        return decode(model, tokens, mask, last_logits(model, model.run_blocks(state)), cache, sampling)


def last_logits(model: "HookedAudioLM", resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch d_vocab"]:
    """Logits of the last position only (a prefill needs no others; `ln_final` hooks see that position)."""
    return model.unembed(model.ln_final(resid[:, -1:]))[:, -1]


def span_logits(
    model: "HookedAudioLM", resid: Float[Tensor, "batch pos d_model"], start: int, stop: int | None = None
) -> Float[Tensor, "batch span d_vocab"]:
    """Logits of positions `start:stop` only, from the final residual (`model(..., stop_at_layer=n_layers)`): the
    unembedding of a 7B model's vocabulary over a whole 30 s prompt is gigabytes per row, and choice scoring reads
    only the answer positions. `ln_final` hooks see those positions."""
    return model.unembed(model.ln_final(resid[:, start:stop]))


def check_left_padded(attention_mask: Int[Tensor, "batch pos"]) -> None:
    if attention_mask.shape[0] > 1 and not bool(attention_mask[:, -1].all()):
        raise ValueError(
            "Batched generation needs left padding (every row's last token real); build the batch with "
            "padding_side='left' (the default of model.to_batch)."
        )


@dataclass
class Sampling:
    """How `decode` picks tokens and when it stops (the keyword arguments of `generate`, TransformerLens's defaults)."""

    max_new_tokens: int = 10
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    freq_penalty: float = 0.0
    eos_token_id: int | Sequence[int] | None = None
    pad_token_id: int | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        check_int("max_new_tokens", self.max_new_tokens, 0)
        check_float("temperature", self.temperature, 0.0)  # 0, or do_sample=False, is greedy
        check_float("freq_penalty", self.freq_penalty, 0.0)
        if self.top_k is not None:
            check_int("top_k", self.top_k, 1)
        if self.top_p is not None:
            check_float("top_p", self.top_p, 0.0, 1.0)


def decode(
    model: "HookedAudioLM",
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    next_logits: Float[Tensor, "batch d_vocab"],
    cache: KVCache | None,
    sampling: Sampling,
    step: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Int[Tensor, "batch prompt_plus_new"]:
    """The decoding loop after the prefill: `next_logits` predict the first new token; `cache` holds the prompt.

    Each later step feeds the newest token through the model with the cache (or calls `step(tokens, mask)`
    for the next logits when there is no cache). Hooks active on the model act on every step.
    """
    s = sampling
    eos = _as_list(model.cfg.eos_token_id if s.eos_token_id is None else s.eos_token_id)
    pad = (
        s.pad_token_id
        if s.pad_token_id is not None
        else (model.cfg.pad_token_id if model.cfg.pad_token_id is not None else (eos[0] if eos else 0))
    )
    eos_ids = torch.tensor(eos, device=tokens.device)
    finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    one = torch.ones_like(mask[:, :1])
    for i in range(s.max_new_tokens):
        check_finite_logits(model, next_logits, f"generate (new token {i})")
        next_logits = next_logits.to(tokens.device)
        if s.do_sample and s.freq_penalty:
            next_logits = penalise_frequency(next_logits, tokens, mask, s.freq_penalty * s.temperature)
        next_tokens = _choose(next_logits, s.do_sample, s.temperature, s.top_k, s.top_p, s.generator)
        next_tokens = torch.where(finished, torch.full_like(next_tokens, pad), next_tokens)
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
        mask = torch.cat([mask, one], dim=1)
        if eos:
            finished |= torch.isin(next_tokens, eos_ids)
            if bool(finished.all()):
                break
        if i + 1 == s.max_new_tokens:
            break
        if cache is not None:
            next_logits = model(next_tokens[:, None], one, past_kv_cache=cache)[:, -1]
        else:
            next_logits = step(tokens, mask)
    return tokens


def _choose(
    logits: Float[Tensor, "batch d_vocab"],
    do_sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> Int[Tensor, " batch"]:
    if not do_sample or temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def penalise_frequency(
    logits: Float[Tensor, "batch d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    mask: Int[Tensor, "batch pos"],
    penalty: float,
) -> Float[Tensor, "batch d_vocab"]:
    """`logits - penalty * count`, count = how often each token occurs in the row so far (prompt and generated,
    padding not counted). `decode` passes `freq_penalty * temperature`, so that after `_choose` divides by the
    temperature this is TransformerLens's `logits / temperature - freq_penalty * count`."""
    counts = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
    counts.scatter_add_(1, tokens.to(logits.device), mask.to(device=logits.device, dtype=torch.float32))
    return logits.float() - penalty * counts


def _as_list(token_ids: int | Sequence[int] | None) -> list[int]:
    if token_ids is None:
        return []
    return [int(token_ids)] if isinstance(token_ids, int) else [int(t) for t in token_ids]
