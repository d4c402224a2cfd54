"""Session 2 checkers: which heads listen (`notebooks/workshop/02_listening_heads_*`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from lens_audio.analysis.listening import listening_signal
from lens_audio.model.hook_point import block_hook_name
from lens_audio.workshop.exercises.checks import as_tensor, check_shape, max_diff, same

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def cached_pattern(model: "HookedAudioLM", batch: "AudioBatch", layer: int) -> Tensor:
    """`[batch, head, query, key]` attention pattern of one decoder layer."""
    name = block_hook_name(layer, "attn.hook_pattern")
    _, cache = model.run_with_cache(batch, names_filter=[name], stop_at_layer=layer + 1)
    return cache[name]


@torch.no_grad()
def test_audio_mass(audio_mass: Callable, model: "HookedAudioLM", batch: "AudioBatch", layer: int = 1) -> None:
    """`audio_mass(pattern, audio_mask, final)` against `listening_signal`, which never forms the pattern.

    `listening_signal` recomputes only the final query row from the rotated queries and keys.
    """
    pattern = cached_pattern(model, batch, layer)
    audio, final = batch.audio_mask, batch.final_position
    expected = listening_signal(model, batch, layers=[layer]).audio_mass[:, layer]
    got = as_tensor(audio_mass(pattern.clone(), audio.clone(), final.clone()), "audio_mass")
    check_shape(got, tuple(expected.shape), "audio_mass", "batch head")
    if same(got, expected):
        print(f"audio_mass: layer {layer} matches listening_signal (from queries and keys) for all "
              f"{batch.batch_size} prompts x {model.cfg.n_heads} heads. Passed!")
        return
    rows = torch.arange(batch.batch_size)
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
    assert not same(got, expected / n_audio), (
        "you averaged over the audio positions; the listening signal is the total attention mass on the audio, a sum."
    )
    last = (pattern[:, :, -1] * audio[:, None, :]).sum(-1)
    assert not (same(got, last) and not same(final, torch.full_like(final, pattern.shape[-1] - 1))), (
        "you read query position -1; use `final` (the final prompt position of each row)."
    )
    raise AssertionError(
        f"expected {expected[0].tolist()} for the first prompt, got {got[0].tolist()} (max difference "
        f"{max_diff(got, expected):.3g}): sum `pattern[b, :, final[b], :]` over the keys where `audio_mask[b]` is True."
    )


@torch.no_grad()
def test_clip_mass(clip_mass: Callable, model: "HookedAudioLM", batch: "AudioBatch", layer: int = 1) -> None:
    """`clip_mass(pattern, spans, final)` against the final-row attention of `listening_signal`, summed per clip."""
    pattern = cached_pattern(model, batch, layer)
    final = batch.final_position
    heads = [(layer, h) for h in range(model.cfg.n_heads)]
    rows = listening_signal(model, batch, heads=heads, layers=[layer]).rows  # [batch, head, pos]
    spans = batch.audio_spans
    n_clips = max(len(s) for s in spans)
    expected = torch.zeros(batch.batch_size, model.cfg.n_heads, n_clips)
    for b, clips in enumerate(spans):
        for c, (start, end) in enumerate(clips):
            expected[b, :, c] = rows[b, :, start:end].sum(-1)
    got = as_tensor(clip_mass(pattern.clone(), [list(s) for s in spans], final.clone()), "clip_mass")
    check_shape(got, tuple(expected.shape), "clip_mass", "batch head clip")
    if same(got, expected):
        print(f"clip_mass: layer {layer}, {n_clips} clips per prompt, matches listening_signal's rows. Passed!")
        return
    assert not same(got, expected.flip(-1)), "your clips come out in reverse order; column c must be Audio c + 1."
    inclusive = torch.zeros_like(expected)
    for b, clips in enumerate(spans):
        for c, (start, end) in enumerate(clips):
            inclusive[b, :, c] = rows[b, :, start : end + 1].sum(-1)
    assert not same(got, inclusive), (
        "each clip's mass includes one position too many: spans are [start, end), so the clip is `start:end` "
        "(the position `end` is its <|audio_eos|> marker)."
    )
    assert not same(got, expected.sum(-1, keepdim=True).expand_as(expected)), (
        "every clip got the whole audio mass: sum each clip's own span only."
    )
    raise AssertionError(
        f"expected {expected[0, 0].tolist()} (first prompt, head 0), got {got[0, 0].tolist()} (max difference "
        f"{max_diff(got, expected):.3g})."
    )


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
