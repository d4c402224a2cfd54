"""Running a model over MMAU-format items: resumable, with progress, baseline or steered.

Two modes:
- `generate`: greedy decoding (`do_sample=False`), answer extraction, and the
  official `string_match`;
- `choice`: the log-likelihood of each choice's tokens after the prompt; the
  best choice is the prediction (one forward when every choice is one token).
  `choice_scoring` says how options of several tokens are compared: `"mean"` (default) the mean log-probability
  per token (length-normalised: a summed log-likelihood favours the shortest option, on a random model the
  shortest in 41 of 41 MMAU items), `"sum"` the summed log-likelihood, `"first_token"` the first token's
  log-probability alone (one forward; refused for items whose options share a first token). With one-token
  options the three agree. Under the `letters` template the options compared are the letters the prompt asks for
  ("A", "B", ...), as the validity controls score them; the record's `output` is then the letter.

A clip longer than the model's audio window (30 s for Qwen2-Audio) is cut to the window; the record of its item holds
`truncated_s`, the seconds cut (summed over its clips; absent when nothing was cut), besides the warning.

Each finished item is appended to a JSON-lines run file at once (one write
of a whole line, synced), and a rerun skips the ids already there, so an
interrupted run loses nothing and resumes where it stopped; the file is owned
by one writer at a time (see `lens_audio.benchmark.run_file`). Each record also holds the item's listening signal
(audio attention mass per layer and head at the final prompt position).

A run file records what made it (`lens_audio.benchmark.manifest`): a manifest beside it, and in each record
the manifest's digest and digests of its item's content and prompt. A rerun reuses a record only if both
match, and otherwise refuses with one line naming what differs (`fresh=True` starts over).
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from lens_audio.analysis.listening import listening_signal
from lens_audio.benchmark.items import RUN_KEYS, validate_items
from lens_audio.benchmark.manifest import DIGEST_KEY, ITEM_KEY, check_items, item_digests, run_manifest
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.benchmark.run_file import RunFile, read_records
from lens_audio.benchmark.run_result import RunResult
from lens_audio.benchmark.scoring import (
    DEFAULT_CHOICE_SCORING,
    asks_for_letters,
    check_choice_scoring,
    score_output,
    scored_options,
)
from lens_audio.checks import check_int
from lens_audio.inputs.audio import TARGET_SAMPLE_RATE, add_white_noise, load_audio, recording_cuts
from lens_audio.inputs.plain_text import encode_text
from lens_audio.model.finite import NonFiniteError, check_finite_logits
from lens_audio.model.generation import last_logits, span_logits

if TYPE_CHECKING:
    from lens_audio.benchmark.answer_match import EmbeddingMatch
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

# Given the model, a batch and the first position to push (final prompt position), return forward hooks.
SteeringFn = Callable[["HookedAudioLM", "AudioBatch", int], list]
__all__ = ["choice_log_likelihoods", "read_records", "run_benchmark"]  # read_records: from run_file, for readers
RECORD_KEYS = ("task", "difficulty", "category", "sub-category", "hint", "hinted_choice", "split")


def run_benchmark(
    model: "HookedAudioLM",
    items: Sequence[dict[str, Any]],
    out_path: str | Path | None,
    template: str | Callable[[dict[str, Any]], str] = "instruct",
    mode: Literal["generate", "choice"] = "generate",
    steering: SteeringFn | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 32,
    listening: bool = True,
    progress: bool = True,
    description: str = "evaluating",
    silence: bool = False,
    settings: Mapping[str, Any] | None = None,
    fresh: bool = False,
    noise_snr_db: float | None = None,
    choice_scoring: str = DEFAULT_CHOICE_SCORING,
    answer_match: "EmbeddingMatch | None" = None,
) -> RunResult:
    """Score `items`; with `out_path`, append records as they finish and resume from what is there.

    Returns a `RunResult`: the records in item order (iterate it like a list of dicts) with
    `correct` and, with `listening`, the `[item, layer, head]` listening signal as numpy arrays.
    `template` is a template name or a function item -> prompt (a profile's `prompt`).

    With `silence`, every clip is replaced by its silence twin (same length, all zeros): the
    control that shows how much the answers depend on the audio at all. With `noise_snr_db`, seeded white
    noise at that SNR is added to every clip (`inputs.audio.add_white_noise`, seeded by the item's id and the
    clip's index, so a resumed run hears the same noise).

    With `out_path`, the run file records what made it and a rerun under other settings or item content
    refuses (see `lens_audio.benchmark.manifest`); `settings` names what the arguments do not show (a steering
    function's heads, layers, beta, ...; a dataclass such as `AdaptiveSteering` or a plain function describes
    itself), and `fresh` drops the file's old records.

    In choice mode `choice_scoring` ("mean", "sum" or "first_token"; see the module) ranks the options; the manifest
    records it where the records depend on it (some option of several tokens), so resuming under another refuses.
    In generate mode `answer_match` (e.g. `benchmark.answer_match.EmbeddingMatch`, MMAU-Pro's rule) matches each
    answer to an option instead of MMAU's string match (`scoring.score_output`); the manifest records its `label`.
    """
    if mode not in ("generate", "choice"):
        raise ValueError(f"mode must be 'generate' or 'choice', not {mode!r}.")
    check_int("batch_size", batch_size, 1)
    check_int("max_new_tokens", max_new_tokens, 1)
    check_choice_scoring(choice_scoring)
    required = RUN_KEYS if callable(template) else (*RUN_KEYS, "question")  # named templates show the question
    validate_items(items, "run_benchmark's items", required, fix="Fix the items (load_mmau gives checked ones).")
    letters = mode == "choice" and asks_for_letters(template)
    scoring = choice_rule(model, items, letters, choice_scoring) if mode == "choice" else None
    manifest = digests = None
    if out_path is not None:
        manifest = run_manifest(model, template, mode, max_new_tokens=max_new_tokens, listening=listening,
                                silence=silence, noise_snr_db=noise_snr_db, steering=steering, settings=settings,
                                batch_size=batch_size, choice_scoring=scoring,
                                answer_match=None if answer_match is None else answer_match.label)
        digests = {item["id"]: item_digests(item, render_prompt(item, template)) for item in items}
    with RunFile(out_path, manifest, fresh) if out_path is not None else contextlib.nullcontext() as run:
        done = dict(run.records) if run is not None else {}
        if run is not None:
            check_items(run.path, done, digests)
        pending = [item for item in items if item["id"] not in done]
        with tqdm(total=len(items), initial=len(items) - len(pending), desc=description, disable=not progress) as bar:
            start, size = 0, batch_size
            while start < len(pending):
                chunk = pending[start : start + size]
                try:
                    scored = _score_chunk(model, chunk, template, mode, steering, max_new_tokens, listening, silence,
                                          noise_snr_db, (choice_scoring, letters),
                                          answer_match if mode == "generate" else None)
                except NonFiniteError as exc:  # name the items; the records before them are kept
                    ids = [chunk[row]["id"] for row in exc.rows if row < len(chunk)]
                    raise NonFiniteError(f"{exc} Items: {ids}.", exc.rows) from exc
                except OUT_OF_MEMORY as exc:  # back off: half the batch from here on; the records so far are kept
                    size = smaller_batch(chunk, exc, model)
                    continue
                start += len(chunk)
                for record in scored:
                    done[record["id"]] = record
                    if run is not None:
                        record.update({DIGEST_KEY: manifest.digest, ITEM_KEY: digests[record["id"]]})
                        run.append(record)
                bar.update(len(chunk))
    records = [done[item["id"]] for item in items]
    signal = np.array([r["listening"] for r in records], dtype=np.float32) if listening and records else None
    return RunResult(records, signal)


OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def smaller_batch(chunk: Sequence[dict[str, Any]], error: BaseException, model: "HookedAudioLM") -> int:
    """The batch size after `chunk` ran out of memory: half of it, said in a warning; a single item that does not
    fit raises `NotEnoughMemory` naming it and what lowers the memory."""
    from lens_audio.model.memory import NotEnoughMemory

    if len(chunk) == 1:
        raise NotEnoughMemory(
            f"item {chunk[0]['id']!r} alone does not fit in memory on {model.device} ({str(error).splitlines()[0]}): "
            "load the model in bfloat16 (--dtype bfloat16), spread it over devices (--device-map auto), or shorten the "
            "item's clips; the records before it are kept, so the run resumes where it stopped."
        ) from error
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    size = len(chunk) // 2
    warnings.warn(f"out of memory scoring {len(chunk)} items at once: scoring {size} at a time from here on (the "
                  "records so far are kept; --batch-size sets the starting size).", stacklevel=3)
    return size


@torch.no_grad()
def _score_chunk(
    model, chunk, template, mode, steering, max_new_tokens, listening, silence, noise_snr_db=None,
    choice=(DEFAULT_CHOICE_SCORING, False), answer_match=None,
) -> list[dict[str, Any]]:
    prompts = [render_prompt(item, template) for item in chunk]
    with recording_cuts() as cuts:  # seconds the model's audio window cut from each clip, in order
        if noise_snr_db is None:
            batch = model.to_batch([item["audio_path"] for item in chunk], prompts)
        else:
            with warnings.catch_warnings():  # loud noise peaks past 1 by design: the clip is not rescaled
                warnings.filterwarnings("ignore", message=".*far outside \\[-1, 1\\]")
                batch = model.to_batch([noisy_clips(item, noise_snr_db) for item in chunk], prompts,
                                       sampling_rate=TARGET_SAMPLE_RATE)
    truncated = truncated_seconds(chunk, cuts)
    if silence:
        batch = batch.silence_twin()
    prompt_length = batch.input_ids.shape[1]
    # Generation steers the newest position of every step; multi-token choice scoring steers the
    # final prompt position and the answer tokens appended after it.
    # A steering object with its own `generate` (adaptive steering) shares its direction pass with the prefill.
    # So does one with its own `logits` in single-token choice scoring (one pass for direction and logits).
    scoring, letters = choice
    choices = [scored_options(item, letters) for item in chunk]  # the letters under the letters template
    fused = hasattr(steering, "generate") if mode == "generate" else (
        hasattr(steering, "logits") and (scoring == "first_token" or one_token_choices(model, choices))
    )
    # A steering object with its own `score_options` (a logit-level correction) ranks the options itself.
    own_scores = mode == "choice" and hasattr(steering, "score_options")
    hooks = (
        steering(model, batch, -1 if mode == "generate" else prompt_length - 1)
        if steering is not None and not fused and not own_scores
        else []
    )
    signal = listening_signal(model, batch).audio_mass if listening else None
    if mode == "generate":
        if fused:
            tokens = steering.generate(model, batch, max_new_tokens=max_new_tokens, do_sample=False)
        else:
            tokens = model.generate(batch, max_new_tokens=max_new_tokens, do_sample=False, fwd_hooks=hooks)
        outputs = [model.tokenizer.decode(row[prompt_length:], skip_special_tokens=True).strip() for row in tokens]
    else:
        if own_scores:
            scores = steering.score_options(model, batch, choices, scoring)
        else:
            final_logits = steering.logits(model, batch) if fused else None
            scores = choice_log_likelihoods(model, batch, choices, hooks, final_logits, scoring)
        outputs = [options[int(scores[row, : len(options)].argmax())] for row, options in enumerate(choices)]
    records = []
    for row, (item, output) in enumerate(zip(chunk, outputs)):
        extracted, correct = (answer_match or score_output)(output, item["answer"], item["choices"])
        record = {"id": item["id"], **{k: item[k] for k in RECORD_KEYS if k in item}, "answer": item["answer"],
                  "output": output, "extracted": extracted, "correct": correct}
        if truncated[row]:
            record["truncated_s"] = truncated[row]
        if signal is not None:
            record["listening"] = (
                signal[row].float().tolist()
            )  # float32 values, exact: resuming reads back the same array
        records.append(record)
    return records


def truncated_seconds(chunk: Sequence[dict[str, Any]], cuts: Sequence[float]) -> list[float]:
    """Each item's seconds of audio the model's window cut (summed over its clips, rounded to ms), from the cuts
    `recording_cuts` listed clip by clip; zeros where the clips were not listed one by one."""
    counts = [len(i["audio_path"]) if isinstance(i["audio_path"], (list, tuple)) else 1 for i in chunk]
    if len(cuts) != sum(counts):
        return [0.0] * len(chunk)
    starts = np.cumsum([0, *counts])
    return [round(float(sum(cuts[a:b])), 3) for a, b in zip(starts[:-1], starts[1:])]


def noisy_clips(item: dict[str, Any], snr_db: float) -> list[np.ndarray]:
    """The item's clips at 16 kHz with seeded white noise at `snr_db` (seed: crc32 of the id, the clip's index)."""
    paths = item["audio_path"] if isinstance(item["audio_path"], (list, tuple)) else [item["audio_path"]]
    key = zlib.crc32(str(item["id"]).encode())
    return [add_white_noise(load_audio(path), snr_db, [key, index]) for index, path in enumerate(paths)]


def one_token_choices(model: "HookedAudioLM", choices: Sequence[Sequence[str]]) -> bool:
    """Whether every choice is one token (then one forward scores them all)."""
    return all(len(encode_text(model.tokenizer, c)) == 1 for row in choices for c in row)


def shared_first_tokens(model: "HookedAudioLM", choices: Sequence[Sequence[str]]) -> list[int]:
    """The rows of `choices` whose options share a first token (first-token scoring cannot tell them apart)."""
    firsts = [[tuple(encode_text(model.tokenizer, c)[:1]) for c in row] for row in choices]
    return [i for i, row in enumerate(firsts) if len(set(row)) < len(row)]


def choice_rule(model: "HookedAudioLM", items: Sequence[dict[str, Any]], letters: bool, scoring: str) -> str | None:
    """The choice scoring the records of `items` depend on: None where every scored option is one token (then
    "mean", "sum" and "first_token" agree; the manifest leaves it out), else `scoring`. First-token scoring of items
    whose options share a first token is refused here, before any work, naming them and how many."""
    options = [scored_options(item, letters) for item in items]
    if scoring == "first_token":
        clash = shared_first_tokens(model, options)
        if clash:
            ids = ", ".join(repr(items[i]["id"]) for i in clash[:3]) + (", ..." if len(clash) > 3 else "")
            raise ValueError(f"choice_scoring 'first_token' cannot tell apart options that share their first token: "
                             f"{len(clash)} of {len(items)} items do ({ids}); use choice_scoring 'mean' or 'sum' "
                             "(--choice-scoring), or drop those items.")
    return None if one_token_choices(model, options) else scoring


@torch.no_grad()
def choice_log_likelihoods(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    choices: Sequence[Sequence[str]],
    hooks: list = (),
    final_logits: torch.Tensor | None = None,
    scoring: str = "sum",
) -> Float[torch.Tensor, "batch max_choices"]:
    """`[batch, max_choices]` log-likelihood of each choice's tokens after the prompt (-inf where absent): summed
    (`scoring="sum"`), the mean per token (`"mean"`) or the first token's alone (`"first_token"`, one forward).

    The batch must be left-padded (each prompt ends at the last position). `final_logits` (`[batch, d_vocab]`,
    e.g. from `steered_logits`) are the final-position logits when already computed: single-token choices (or
    first-token scoring) only.
    """
    check_choice_scoring(scoring)
    if not bool(batch.attention_mask[:, -1].all()):
        raise ValueError("choice scoring needs a left-padded batch (model.to_batch's default).")
    tok = model.tokenizer
    encoded = [[encode_text(tok, c) for c in row] for row in choices]
    if scoring == "first_token":
        if shared_first_tokens(model, choices):
            raise ValueError(f"first-token scoring: rows {shared_first_tokens(model, choices)} have options that share "
                             "their first token; score them with 'mean' or 'sum'.")
        encoded = [[ids[:1] for ids in row] for row in encoded]
    width = max(len(row) for row in encoded)
    scores = torch.full((batch.batch_size, width), float("-inf"))
    if final_logits is not None and not all(len(ids) == 1 for row in encoded for ids in row):
        raise ValueError("final_logits score single-token choices only; pass hooks for multi-token choices.")
    if all(len(ids) == 1 for row in encoded for ids in row):
        if final_logits is None:
            with model.hooks(fwd_hooks=list(hooks)):  # the final position's logits only
                final_logits = last_logits(model, model(batch, stop_at_layer=model.cfg.n_layers))
        check_finite_logits(model, final_logits, "choice scoring")
        logprobs = final_logits.log_softmax(-1).cpu()
        for i, row in enumerate(encoded):
            scores[i, : len(row)] = logprobs[i, [ids[0] for ids in row]]
        return scores
    for j in range(width):  # one forward per choice slot, all examples at once
        suffixes = [row[j] if j < len(row) else [] for row in encoded]
        length = max(1, max(len(s) for s in suffixes))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        extra = torch.tensor([s + [pad] * (length - len(s)) for s in suffixes])
        extra_mask = torch.tensor([[1] * len(s) + [0] * (length - len(s)) for s in suffixes])
        ids = torch.cat([batch.input_ids, extra.to(batch.input_ids.device)], dim=1)
        mask = torch.cat([batch.attention_mask, extra_mask.to(batch.attention_mask.device)], dim=1)
        prompt = batch.input_ids.shape[1]
        with model.hooks(fwd_hooks=list(hooks)):  # logits only where the option's tokens are predicted
            resid = model(ids, mask, batch.input_features, batch.feature_attention_mask,
                          stop_at_layer=model.cfg.n_layers)
            logits = span_logits(model, resid, prompt - 1, -1)
        check_finite_logits(model, logits, "choice scoring")
        logprobs = logits.log_softmax(-1).cpu()
        gathered = logprobs.gather(-1, extra[..., None]).squeeze(-1) * extra_mask
        for i, s in enumerate(suffixes):
            if s:
                scores[i, j] = gathered[i].sum() / (len(s) if scoring == "mean" else 1)
    return scores
