"""Session 1 checkers: hooks and the activation cache (`notebooks/workshop/01_hooks_and_the_cache_*`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lens_audio.benchmark.prompts import render_prompt
from lens_audio.inputs.audio import load_audio
from lens_audio.model.hook_point import block_hook_name
from lens_audio.workshop.exercises.checks import as_tensor, call_learner, check_shape, max_diff, same, worst_example

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

AUDIO_EMBEDS = "audio.hook_audio_embeds"
PAIR_ROWS_WITH_FINAL = (
    "`logits[:, final]` pairs every row with every row's final position ([batch, batch, vocab]); index rows and "
    "positions together, `logits[torch.arange(batch), final]` ([batch, vocab]), then gather the option tokens."
)


def test_clip_token_mask(clip_token_mask: Callable, batch: "AudioBatch", audio_token_id: int) -> None:
    """`clip_token_mask(input_ids, audio_token_id, clip)` against the processor's own clip spans, every clip."""
    for row in range(batch.batch_size):
        ids = batch.input_ids[row]
        spans = batch.audio_spans[row]
        every_clip = torch.zeros_like(ids, dtype=torch.bool)
        for start, end in spans:
            every_clip[start:end] = True
        for clip, (start, end) in enumerate(spans, start=1):
            got = as_tensor(clip_token_mask(ids.clone(), audio_token_id, clip), "clip_token_mask")
            check_shape(got, tuple(ids.shape), "clip_token_mask", "pos")
            assert got.dtype == torch.bool, (
                f"clip_token_mask returned dtype {got.dtype}; return a boolean mask (e.g. `ids == audio_token_id`)."
            )
            expected = torch.zeros_like(got)
            expected[start:end] = True
            if same(got, expected):
                continue
            where = torch.nonzero(got).flatten().tolist()
            assert not same(got, every_clip), (
                f"for clip={clip} you marked every clip's audio tokens ({int(every_clip.sum())} positions); keep only "
                f"the run of <|AUDIO|> tokens that belongs to Audio {clip} (positions {start}-{end - 1})."
            )
            for other, (s, e) in enumerate(spans, start=1):
                if other != clip and where == list(range(s, e)):
                    raise AssertionError(
                        f"for clip={clip} you marked Audio {other}'s tokens ({s}-{e - 1}); clips count from 1 as in "
                        f"the prompt's 'Audio {clip}:' line, so Audio {clip} is the run at positions {start}-{end - 1}."
                    )
            with_markers = expected.clone()
            with_markers[max(start - 1, 0) : end + 1] = True
            assert not same(got, with_markers), (
                f"for clip={clip} your mask includes the <|audio_bos|>/<|audio_eos|> markers at {start - 1} and {end}; "
                "only the <|AUDIO|> placeholder positions carry the clip's projected audio."
            )
            raise AssertionError(
                f"for clip={clip} the mask should be True at positions {start}-{end - 1} ({end - start} tokens), "
                f"yours is True at {where[:8]}{' ...' if len(where) > 8 else ''} ({len(where)} tokens)."
            )
    print(f"clip_token_mask: all {sum(len(s) for s in batch.audio_spans)} clips match the processor's spans. Passed!")


def option_ids_of(model: "HookedAudioLM", items: list[dict[str, Any]]) -> Tensor:
    """`[item, choice]` token id of each option (every workshop option is one token)."""
    tok = model.tokenizer
    return torch.tensor([[tok.encode(c, add_special_tokens=False)[0] for c in i["choices"]] for i in items])


@torch.no_grad()
def test_option_logits(option_logits: Callable, model: "HookedAudioLM", items: list[dict[str, Any]]) -> None:
    """`option_logits(logits, final, option_ids)` on a left- and a right-padded batch of `items`.

    Reference: the last block's residual stream at the final position, through `ln_final` and the unembedding.
    """
    ids = option_ids_of(model, items)
    last = block_hook_name(model.cfg.n_layers - 1, "hook_resid_post")
    for side in ("left", "right"):
        batch = model.to_batch([i["audio_path"] for i in items], [render_prompt(i, "workshop") for i in items],
                               padding_side=side)
        logits, cache = model.run_with_cache(batch, names_filter=[last])
        final = batch.final_position
        rows = torch.arange(batch.batch_size)
        expected = model.unembed(model.ln_final(cache[last][rows, final]))
        expected = torch.gather(expected, 1, ids)
        got = call_learner(option_logits, "option_logits", (logits.clone(), final.clone(), ids.clone()),
                           tuple(ids.shape), "batch choice", PAIR_ROWS_WITH_FINAL)
        if same(got, expected):
            continue
        at_minus_one = torch.gather(logits[:, -1], 1, ids)
        assert not (side == "right" and same(got, at_minus_one)), (
            "you read the logits at position -1. In a right-padded batch the last position of a short prompt is "
            f"padding; use `final` (here {final.tolist()}, sequence length {logits.shape[1]}) to pick each row's "
            "final prompt token."
        )
        assert not same(got, expected.softmax(-1)) and not same(got, expected.log_softmax(-1)), (
            "you returned probabilities (softmax or log-softmax); return the raw logits of the option tokens."
        )
        full = torch.gather(logits[rows, final], 1, ids)
        assert not same(got, full.log_softmax(-1)) and not same(got, logits[rows, final].softmax(-1).gather(1, ids)), (
            "you returned (log-)probabilities; return the raw logits of the option tokens."
        )
        assert not same(got.sort(-1).values, expected.sort(-1).values), (
            "right values in the wrong order: column j must be the logit of option j (`option_ids[:, j]`), in the "
            "item's own order of choices."
        )
        row, _ = worst_example(got, expected)
        raise AssertionError(
            f"{side}-padded batch, item {row} (the one that differs most): expected {expected[row].tolist()}, got "
            f"{got[row].tolist()} (max difference {max_diff(got, expected):.3g}). Gather "
            "`logits[row, final[row], option_ids[row]]`."
        )
    print("option_logits: matches the unembedded final residual stream, left- and right-padded. Passed!")


@torch.no_grad()
def test_silence_clip_hook(silence_clip_hook: Callable, model: "HookedAudioLM", item: dict[str, Any]) -> None:
    """`silence_clip_hook(clip, silent_embeds)` against prompts whose clip `clip` is an all-zero waveform.

    The reference never touches a hook: the silent clip goes through the feature extractor and audio encoder.
    """
    prompt = render_prompt(item, "workshop")
    batch = model.to_batch(item["audio_path"], prompt)
    final = int(batch.final_position[0])
    _, silent_cache = model.run_with_cache(batch.silence_twin(), names_filter=[AUDIO_EMBEDS])
    silent_embeds = silent_cache[AUDIO_EMBEDS]
    clean = model(batch)[0, final]
    everything_silent = model(batch.silence_twin())[0, final]
    waves = [load_audio(p) for p in item["audio_path"]]
    references = {}
    for clip in range(1, len(waves) + 1):
        clips = [np.zeros_like(w) if j == clip - 1 else w for j, w in enumerate(waves)]
        references[clip] = model(model.to_batch(clips, prompt, sampling_rate=16000))[0, final]
    for clip in references:
        hook = silence_clip_hook(clip, silent_embeds.clone())
        assert callable(hook), f"silence_clip_hook({clip}, ...) should return a hook function, got {hook!r}."
        got = model.run_with_hooks(batch, fwd_hooks=[(AUDIO_EMBEDS, hook)])[0, final]
        if same(got, references[clip], atol=1e-3):
            continue
        assert not same(got, clean, atol=1e-5), (
            f"with your hook for clip={clip} the logits did not change at all. A hook changes the forward only if it "
            "returns the new tensor (or edits its input in place); check that it returns the edited `embeds`."
        )
        assert not same(got, everything_silent, atol=1e-3), (
            f"for clip={clip} you silenced every clip. `embeds` is [clip, tok, d_model]: replace only row "
            f"{clip - 1} (Audio {clip})."
        )
        for other, reference in references.items():
            if other != clip and same(got, reference, atol=1e-3):
                raise AssertionError(
                    f"for clip={clip} you silenced Audio {other}. Row i of `embeds` is Audio i + 1: clips count "
                    f"from 1 in the prompt, rows from 0, so Audio {clip} is row {clip - 1}."
                )
        raise AssertionError(
            f"for clip={clip} your final-position logits differ from a prompt whose Audio {clip} is silent "
            f"(max difference {max_diff(got, references[clip]):.3g}): replace row {clip - 1} of `embeds` with "
            f"row {clip - 1} of `silent_embeds`, and leave the other rows alone."
        )
    print("silence_clip_hook: same logits as feeding an all-zero waveform for each clip. Passed!")
