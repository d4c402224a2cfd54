"""Session 2 checkers: which heads listen (`notebooks/workshop/02_listening_heads_*`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.statistics import pearson_columns
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.model.hook_point import block_hook_name
from lens_audio.workshop.exercises.checks import as_tensor, call_learner, max_diff, same, worst_example
from lens_audio.workshop.exercises.controls import demean_within, within_stratum_pearson

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def cached_pattern(model: "HookedAudioLM", batch: "AudioBatch", layer: int) -> Tensor:
    """`[batch, head, query, key]` attention pattern of one decoder layer."""
    name = block_hook_name(layer, "attn.hook_pattern")
    _, cache = model.run_with_cache(batch, names_filter=[name], stop_at_layer=layer + 1)
    return cache[name]


def both_paddings(model: "HookedAudioLM", items: list[dict[str, Any]]) -> dict[str, "AudioBatch"]:
    """The same prompts left-padded (every final position last) and right-padded (final positions differ)."""
    audio, prompts = [i["audio_path"] for i in items], [render_prompt(i, "workshop") for i in items]
    return {side: model.to_batch(audio, prompts, padding_side=side) for side in ("left", "right")}


PAIR_ROWS_WITH_FINAL = (
    "`pattern[:, :, final]` pairs every prompt with every prompt's final position ([batch, head, batch, key]); "
    "index prompts and positions together, `pattern[torch.arange(batch), :, final]` ([batch, head, key])."
)


@torch.no_grad()
def test_audio_mass(audio_mass: Callable, model: "HookedAudioLM", items: list[dict[str, Any]], layer: int = 1) -> None:
    """`audio_mass(pattern, audio_mask, final)` against `listening_signal`, which never forms the pattern, on the
    `items` left- and right-padded.

    `listening_signal` recomputes only the final query row from the rotated queries and keys.
    """
    for side, batch in both_paddings(model, items).items():
        pattern = cached_pattern(model, batch, layer)
        audio, final = batch.audio_mask, batch.final_position
        expected = listening_signal(model, batch, layers=[layer]).audio_mass[:, layer]
        got = call_learner(audio_mass, "audio_mass", (pattern.clone(), audio.clone(), final.clone()),
                           tuple(expected.shape), "batch head", PAIR_ROWS_WITH_FINAL)
        if not same(got, expected):
            explain_audio_mass(got, expected, pattern, audio, final, side)
    print(f"audio_mass: layer {layer} matches listening_signal (from queries and keys) for {len(items)} prompts x "
          f"{model.cfg.n_heads} heads, left- and right-padded. Passed!")


def explain_audio_mass(got: Tensor, expected: Tensor, pattern: Tensor, audio: Tensor, final: Tensor, side: str) -> None:
    """Raise the AssertionError that names the slip behind a wrong `audio_mass`."""
    rows = torch.arange(len(final))
    row = pattern[rows, :, final]  # [batch, head, key]
    assert not same(got, row.sum(-1)), (
        "every value is ~1: your audio mass sums over text positions too. The final token's attention row sums to 1 "
        "over all keys; keep only the keys where `audio_mask` is True."
    )
    assert not same(got, 1 - expected), (
        "you summed the text positions (everything but the audio). Multiply by `audio_mask`, not by its negation."
    )
    column = (pattern[rows, :, :, final] * audio[:, None, :]).sum(-1)
    assert not same(got, column), (
        "you summed a column of the pattern (how much the audio positions attend to the final token; zero, since "
        "attention is causal). The pattern is [batch, head, query, key]: take the final token's row "
        "`pattern[b, :, final[b], :]` and sum it over the audio keys."
    )
    n_audio = audio.sum(-1, keepdim=True)
    assert not same(got, expected / n_audio) and not same(got, expected / row.shape[-1]), (
        "you averaged over the audio positions (mean instead of sum); the listening signal is the total attention "
        "mass on the audio, a sum."
    )
    last = (pattern[:, :, -1] * audio[:, None, :]).sum(-1)
    assert not same(got, last), (
        f"{side}-padded batch: you read query position -1. Padding on the right puts each short prompt's final token "
        f"earlier (here at {final.tolist()}); use `final` to pick each row's final prompt position."
    )
    b, h = worst_example(got, expected)
    raise AssertionError(
        f"{side}-padded batch, prompt {b} head {h} (the largest difference, {max_diff(got, expected):.3g}): "
        f"expected {float(expected[b, h]):.4f}, got {float(got[b, h]):.4f}. Sum `pattern[b, :, final[b], :]` over "
        "the keys where `audio_mask[b]` is True."
    )


def spans_mass(rows: Tensor, spans: list[list[tuple[int, int]]], cut: Callable[[int, int], slice],
               reduce: str = "sum") -> Tensor:
    """`[batch, head, clip]` attention of `rows` ([batch, head, key]) on each clip's span, as `cut(start, end)`."""
    out = torch.zeros(rows.shape[0], rows.shape[1], max(len(s) for s in spans), dtype=torch.float64)
    for b, clips in enumerate(spans):
        for c, (start, end) in enumerate(clips):
            part = rows[b, :, cut(start, end)].double()
            out[b, :, c] = part.sum(-1) if reduce == "sum" else part.mean(-1)
    return out


@torch.no_grad()
def test_clip_mass(clip_mass: Callable, model: "HookedAudioLM", items: list[dict[str, Any]], layer: int = 1) -> None:
    """`clip_mass(pattern, spans, final)` against the final-row attention of `listening_signal`, summed per clip,
    on the `items` left- and right-padded."""
    heads = [(layer, h) for h in range(model.cfg.n_heads)]
    for side, batch in both_paddings(model, items).items():
        pattern = cached_pattern(model, batch, layer)
        final = batch.final_position
        rows = listening_signal(model, batch, heads=heads, layers=[layer]).rows  # [batch, head, pos]
        spans = [list(s) for s in batch.audio_spans]
        expected = spans_mass(rows, spans, lambda s, e: slice(s, e))
        got = call_learner(clip_mass, "clip_mass", (pattern.clone(), [list(s) for s in spans], final.clone()),
                           tuple(expected.shape), "batch head clip", PAIR_ROWS_WITH_FINAL)
        if same(got, expected):
            continue
        assert not same(got, expected.flip(-1)), "your clips come out in reverse order; column c must be Audio c + 1."
        slips = {
            "one position too many at the end: spans are [start, end), so the clip is `start:end` (the position `end` "
            "is its <|audio_eos|> marker)": lambda s, e: slice(s, e + 1),
            "one position too few at the end: spans are [start, end) with `end` exclusive, so `start:end` already "
            "ends at the clip's last token (`end - 1` drops it)": lambda s, e: slice(s, e - 1),
            "one position too many at the start: `start` is the clip's first audio token, so `start - 1` adds its "
            "<|audio_bos|> marker": lambda s, e: slice(s - 1, e),
            "one position too few at the start: `start` is already the clip's first audio token; `start + 1` drops "
            "it": lambda s, e: slice(s + 1, e),
        }
        for message, cut in slips.items():
            assert not same(got, spans_mass(rows, spans, cut)), f"each clip's mass has {message}."
        assert not same(got, spans_mass(rows, spans, lambda s, e: slice(s, e), "mean")), (
            "you averaged over each clip's positions (mean instead of sum); a clip's mass is the total attention on "
            "its tokens, a sum."
        )
        assert not same(got, expected.sum(-1, keepdim=True).expand_as(expected)), (
            "every clip got the whole audio mass: sum each clip's own span only."
        )
        b, h, c = worst_example(got, expected)
        raise AssertionError(
            f"{side}-padded batch, prompt {b} head {h} Audio {c + 1} (the largest difference, "
            f"{max_diff(got, expected):.3g}): expected {float(expected[b, h, c]):.4f}, got {float(got[b, h, c]):.4f}."
        )
    print(f"clip_mass: layer {layer}, every clip of {len(items)} prompts, matches listening_signal's rows, left- and "
          "right-padded. Passed!")


def test_pearson_by_head(pearson_by_head: Callable, mass: np.ndarray, correct: np.ndarray) -> None:
    """`pearson_by_head(mass, correct)` against `scipy.stats.pearsonr`, one head at a time (and on made-up data)."""
    rng = np.random.default_rng(0)
    fake_correct = rng.random(40) < 0.6
    fake = rng.random((40, 2, 3)) * 0.1 + 0.3
    fake[:, 0, 1] += 0.2 * fake_correct  # one head that predicts correctness
    fake[:, 1, 2] = 0.25  # one head whose mass never varies: no correlation (NaN)
    for name, (m, y) in {"made-up data": (fake, fake_correct), "your calibration data": (mass, correct)}.items():
        m, y = np.asarray(m, dtype=float), np.asarray(y)
        expected = np.full(m.shape[1:], np.nan)
        for layer in range(m.shape[1]):
            for head in range(m.shape[2]):
                if np.ptp(m[:, layer, head]) > 0:
                    expected[layer, head] = stats.pearsonr(m[:, layer, head], y.astype(float)).statistic
        with np.errstate(all="ignore"):
            result = pearson_by_head(m.copy(), y.copy())
        got = as_tensor(np.asarray(result, dtype=float) if result is not None else None, "pearson_by_head").numpy()
        assert got.shape == expected.shape, (
            f"on {name}, pearson_by_head returned shape {got.shape}; expected {expected.shape} = [layer, head]. "
            "Correlate across the example axis (axis 0), one value per head."
        )
        constant = np.isnan(expected)
        ok = ~constant
        if np.allclose(got[ok], expected[ok], atol=1e-6):
            assert np.all(np.isnan(got[constant]) | (got[constant] == 0)), (
                f"on {name}, heads whose mass never varies got r = {got[constant]}; their r is undefined (NaN; 0 is "
                "also accepted), and these must never be picked as specialists."
            )
            continue
        assert not np.allclose(got[ok], -expected[ok], atol=1e-6), (
            f"on {name} your r has the wrong sign: correlate with `correct` (1 = right), not with errors."
        )
        x, yy = m.reshape(len(m), -1), y.astype(float)
        with np.errstate(all="ignore"):
            cosine = (x * yy[:, None]).sum(0) / np.linalg.norm(x, axis=0) / np.linalg.norm(yy)
        assert not np.allclose(got[ok], cosine.reshape(expected.shape)[ok], atol=1e-6), (
            f"on {name} you computed a cosine similarity: subtract each head's mean mass and the mean of `correct` "
            "before multiplying (Pearson r is the cosine of the *centred* vectors)."
        )
        worst = np.unravel_index(np.nanargmax(np.abs(got - expected)), expected.shape)
        raise AssertionError(
            f"on {name}, head L{worst[0]}H{worst[1]}: expected r = {expected[worst]:.4f}, got {got[worst]:.4f}."
        )
    print("pearson_by_head: matches scipy.stats.pearsonr head by head (constant heads left undefined). Passed!")


def test_within_stratum_r(within_stratum_r: Callable, mass: np.ndarray, correct: np.ndarray, strata: list) -> None:
    """`within_stratum_r(mass, correct, strata)` against a plain-numpy pooled within-stratum r, on made-up data
    (one head that only tracks the stratum, one that predicts correctness inside every stratum) and on yours."""
    rng = np.random.default_rng(0)
    fake_strata = np.repeat(["sound", "music", "speech"], 30)
    level = {"sound": 0.9, "music": 0.5, "speech": 0.2}
    fake_correct = rng.random(90) < np.array([level[s] + 0.05 for s in fake_strata])
    fake = rng.random((90, 1, 2)) * 0.1
    fake[:, 0, 0] += np.array([level[s] for s in fake_strata])  # follows the stratum, not the answer
    fake[:, 0, 1] += 0.1 * fake_correct  # follows the answer inside every stratum
    cases = {"made-up data": (fake, fake_correct, list(fake_strata)), "your calibration data": (mass, correct, strata)}
    for name, (m, y, groups) in cases.items():
        m, y = np.asarray(m, dtype=float), np.asarray(y)
        expected = within_stratum_pearson(m, y, groups)
        with np.errstate(all="ignore"):
            result = within_stratum_r(m.copy(), y.copy(), list(groups))
        got = as_tensor(np.asarray(result, dtype=float) if result is not None else None, "within_stratum_r").numpy()
        assert got.shape == expected.shape, (
            f"on {name}, within_stratum_r returned shape {got.shape}; expected {expected.shape} = [layer, head]: one "
            "r per head, pooled over every stratum."
        )
        ok = ~np.isnan(expected)
        if np.allclose(got[ok], expected[ok], atol=1e-6):
            continue
        explain_within_stratum_r(got[ok], ok, m, y, groups, name)
        worst = np.unravel_index(np.nanargmax(np.abs(np.where(ok, got - expected, np.nan))), expected.shape)
        raise AssertionError(
            f"on {name}, head L{worst[0]}H{worst[1]} (the largest difference): expected within-stratum r = "
            f"{expected[worst]:.4f}, got {got[worst]:.4f}."
        )
    print("within_stratum_r: matches the pooled within-stratum correlation (= the partial r given the stratum). "
          "Passed!")


def explain_within_stratum_r(got: np.ndarray, ok: np.ndarray, m: np.ndarray, y: np.ndarray, groups: list,
                             name: str) -> None:
    """Raise the AssertionError that names the slip behind a wrong `within_stratum_r`."""
    y = y.astype(float)
    flat = m.reshape(len(m), -1)

    def matches(candidate: np.ndarray) -> bool:
        return np.allclose(got, np.asarray(candidate).reshape(ok.shape)[ok], atol=1e-6, equal_nan=True)

    with np.errstate(all="ignore"):
        assert not matches(pearson_columns(flat, y)), (
            f"on {name} you returned the plain r over all examples: centre each variable on its *own stratum's* "
            "mean (the mean over the examples of that stratum), not on the overall mean."
        )
        assert not matches(pearson_columns(demean_within(flat, groups), y)), (
            f"on {name} you centred the mass within strata but not `correct`: the stratum's accuracy must come out "
            "of both variables, or the denominator still holds the differences between strata."
        )
        assert not matches(pearson_columns(flat, demean_within(y, groups))), (
            f"on {name} you centred `correct` within strata but not the mass: centre both on their stratum's mean."
        )
        labels = np.asarray([str(g) for g in groups])
        per_stratum = [pearson_columns(flat[labels == g], y[labels == g]) for g in np.unique(labels)]
        assert not matches(np.nanmean(per_stratum, 0)), (
            f"on {name} you averaged the r of each stratum; pool instead: centre within strata, then one r over "
            "every example (strata with more examples, or more variance, weigh more)."
        )
