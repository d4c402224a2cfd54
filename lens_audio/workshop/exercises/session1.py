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
        given = silent_embeds.clone()
        hook = silence_clip_hook(clip, given)
        assert callable(hook), f"silence_clip_hook({clip}, ...) should return a hook function, got {hook!r}."
        got = model.run_with_hooks(batch, fwd_hooks=[(AUDIO_EMBEDS, checked_hook(hook, clip))])[0, final]
        assert same(given, silent_embeds, atol=0), (
            f"your hook for clip={clip} changed `silent_embeds` in place, so the next hook made from it (exercise "
            "1.4 makes one per clip) silences the wrong thing. Clone `embeds` and copy the silent row into the clone; "
            "never write into `silent_embeds`."
        )
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


def checked_hook(learner_hook: Callable, clip: int) -> Callable:
    """The learner's hook, with its result checked where it is produced: an error inside it, or a result that is
    not `[clip, tok, d_model]` like its input, becomes an AssertionError naming the slip (instead of a traceback
    from inside the model's audio splice, which only sees the wrong tensor later)."""
    def run(embeds: Tensor, hook: Any) -> Tensor | None:
        shape = tuple(embeds.shape)
        try:
            result = learner_hook(embeds, hook)
        except Exception as error:  # the learner's own code failed: name it, and what it receives
            raise AssertionError(
                f"your hook for clip={clip} raised {type(error).__name__}: {error}. It receives `embeds` of shape "
                f"{shape} = [clip tok d_model] (Audio k is row k - 1) and should return that shape."
            ) from error
        if result is None:
            return None
        if not isinstance(result, Tensor):
            raise AssertionError(f"your hook for clip={clip} returned a {type(result).__name__}; return the edited "
                                 "`embeds` tensor (or None after editing it in place).")
        if tuple(result.shape) != shape:
            row = " (one clip's row: assign it into a clone of `embeds` and return the clone)" if tuple(
                result.shape) == shape[1:] else ""
            raise AssertionError(
                f"your hook for clip={clip} returned shape {tuple(result.shape)}{row}; it must return the whole "
                f"`embeds`, shape {shape} = [clip tok d_model], with row {clip - 1} replaced."
            )
        return result

    return run


def silenced_option_probs(model: "HookedAudioLM", item: dict[str, Any]) -> Tensor:
    """`[silenced, option]` probabilities of the item's options: row 0 as is, row k with Audio k an all-zero
    waveform (through the feature extractor and the audio encoder, no hook)."""
    prompt = render_prompt(item, "workshop")
    waves = [load_audio(p) for p in item["audio_path"]]
    ids = option_ids_of(model, [item])[0]
    rows = []
    for clip in range(len(waves) + 1):
        clips = [np.zeros_like(w) if j == clip - 1 else w for j, w in enumerate(waves)]
        batch = model.to_batch(clips, prompt, sampling_rate=16000)
        rows.append(model(batch)[0, batch.final_position[0], ids].softmax(-1))
    return torch.stack(rows)


@torch.no_grad()
def test_silence_table(probs: Any, model: "HookedAudioLM", item: dict[str, Any]) -> None:
    """Exercise 1.4's table, `probs[k, j]` = P(option j) with Audio k silenced (row 0: nothing silenced), checked
    lightly: its shape, that each row (not each column) is a distribution, then its values against prompts whose
    clip is an all-zero waveform."""
    if isinstance(probs, list | tuple) and probs and all(isinstance(row, Tensor) for row in probs):
        probs = torch.stack([row.detach().cpu() for row in probs])
    got = as_tensor(None if probs is None or probs is Ellipsis else torch.as_tensor(np.asarray(probs)), "probs")
    n_rows, n_options = len(item["audio_path"]) + 1, len(item["choices"])
    axes = f"silenced ({n_rows}: nothing, Audio 1..{n_rows - 1}) option ({n_options})"
    if tuple(got.shape) != (n_rows, n_options):
        squeezed = tuple(d for d in got.shape if d != 1)
        hint = " Drop the size-1 batch axis (`[0]` on each row's `[1, option]` logits) before stacking." if (
            squeezed == (n_rows, n_options)) else ""
        raise AssertionError(f"probs has shape {tuple(got.shape)}; expected ({n_rows}, {n_options}) = [{axes}].{hint}")
    got = got.double()
    if bool(((got - 1).abs() < 1e-6).all()):
        raise AssertionError(
            "every probability is 1.00: your softmax ran over an axis of size 1 — the batch axis of a one-prompt "
            f"batch's `[1, {n_options}]` option logits (`.softmax(0)`). Take it over the options: `.softmax(-1)`."
        )
    rows_sum, columns_sum = got.sum(1), got.sum(0)
    if not bool(((rows_sum - 1).abs() < 1e-3).all()):
        if bool(((columns_sum - 1).abs() < 1e-3).all()):
            raise AssertionError(
                "each column sums to 1, not each row: your softmax ran over axis 0, what was silenced. Each row is "
                "one run's distribution over the options: softmax over the options axis (`softmax(-1)` on each "
                "run's option logits) before stacking the runs."
            )
        if abs(float(got.sum()) - 1) < 1e-3:
            raise AssertionError("the whole table sums to 1: softmax each row (one run) over its options, not all "
                                 f"{n_rows * n_options} values at once.")
        raise AssertionError(
            f"row sums {[round(v, 3) for v in rows_sum.tolist()]}: each row should be probabilities over the "
            "options, summing to 1 (did you keep the logits? apply `softmax(-1)`)."
        )
    expected = silenced_option_probs(model, item).double()
    if same(got, expected, atol=2e-3):
        print(f"probs: each row sums to 1 over the {n_options} options and matches prompts whose clip is an all-zero "
              "waveform. Passed!")
        return
    label = ["nothing silenced"] + [f"Audio {k} silenced" for k in range(1, n_rows)]
    matches = [next((m for m in range(n_rows) if same(got[k], expected[m], atol=2e-3)), None) for k in range(n_rows)]
    if None not in matches:
        raise AssertionError(
            "your rows are in the wrong order: " + ", ".join(
                f"your row {k} is the run with {label[m]}" for k, m in enumerate(matches) if m != k)
            + ". Row 0 is the plain run and row k has Audio k silenced: your hook counts clips from 1, so pass k."
        )
    row, _ = worst_example(got, expected)
    raise AssertionError(
        f"row {row} ({'nothing' if row == 0 else f'Audio {row}'} silenced) should be "
        f"{[round(v, 2) for v in expected[row].tolist()]}, yours is {[round(v, 2) for v in got[row].tolist()]}."
    )
