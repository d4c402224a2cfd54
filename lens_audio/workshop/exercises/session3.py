"""Session 3 checkers: audio-minus-silence steering (`notebooks/workshop/03_steering_*`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import stats

from lens_audio.analysis.steering import adaptive_direction, adaptive_steering, steering_hooks
from lens_audio.evaluation.fast_steering import FastSteering
from lens_audio.model.hook_point import block_hook_name
from lens_audio.workshop.evaluate import PROFILE, score_items
from lens_audio.workshop.exercises.checks import as_tensor, check_shape, max_diff, same

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


@torch.no_grad()
def test_direction(direction_by_hand: Callable, model: "HookedAudioLM", batch: "AudioBatch",
                   layers: tuple[int, ...] = (1, 4, 5)) -> None:
    """`direction_by_hand(model, batch, layers)` against `adaptive_direction` (one batched audio+silence pass)."""
    layers = list(layers)
    expected = adaptive_direction(model, batch, layers)
    got = as_tensor(direction_by_hand(model, batch, list(layers)), "direction_by_hand")
    check_shape(got, tuple(expected.shape), "direction_by_hand", "batch d_model")
    if same(got, expected, atol=1e-4):
        print(f"direction_by_hand: layers {layers}, {batch.batch_size} prompts, matches adaptive_direction. Passed!")
        return
    assert not same(got, -expected, atol=1e-4), (
        "your direction points the wrong way: audio minus silence, not silence minus audio."
    )
    assert not same(got, expected * len(layers), atol=1e-4), f"you summed over the {len(layers)} layers; average them."
    assert not same(got, adaptive_direction(model, batch, layers, site="hook_resid_pre"), atol=1e-4), (
        "you read `hook_resid_pre` (the input of block L); the method reads block L's output, "
        "`blocks.{L}.hook_resid_post`."
    )
    names = [block_hook_name(layer, "hook_resid_post") for layer in layers]
    _, cache = model.run_with_cache(batch, names_filter=names)
    rows, final = torch.arange(batch.batch_size), batch.final_position
    audio_only = torch.stack([cache[n][rows, final] for n in names], 1).mean(1)
    assert not same(got, audio_only, atol=1e-4), (
        "you returned the residual stream of the audio run itself; subtract the same residual from "
        "`batch.silence_twin()` (same prompt, all-zero audio of the same length)."
    )
    last_only = adaptive_direction(model, batch, layers[-1:])
    assert not same(got, last_only, atol=1e-4), (
        f"you used only layer {layers[-1]}; average over every layer in `layers`."
    )
    raise AssertionError(
        f"direction differs from adaptive_direction by up to {max_diff(got, expected):.3g} (norm of the expected "
        f"direction {float(expected.norm(dim=-1).mean()):.3g}): at each layer take the final position's "
        "resid_post with audio minus with silence, then average over layers."
    )


@torch.no_grad()
def test_add_direction_hook(add_direction_hook: Callable, model: "HookedAudioLM", batch: "AudioBatch",
                            direction: torch.Tensor, beta: float = 2.5) -> None:
    """`add_direction_hook(direction, beta)` against `steering_hooks`: same logits at every position."""
    name = block_hook_name(model.cfg.n_layers - 1, "hook_resid_post")
    expected = model.run_with_hooks(batch, fwd_hooks=steering_hooks(model, direction, beta))
    hook = add_direction_hook(direction.clone(), beta)
    assert callable(hook), f"add_direction_hook should return a hook function, got {hook!r}."
    got = model.run_with_hooks(batch, fwd_hooks=[(name, hook)])
    if same(got, expected, atol=1e-4):
        print(f"add_direction_hook: same logits as steering_hooks at every position (beta {beta}). Passed!")
        return
    clean = model(batch)
    assert not same(got, clean, atol=1e-6), (
        "the hook changed nothing: return the edited residual stream (or edit it in place)."
    )
    everywhere = model.run_with_hooks(batch, fwd_hooks=[(name, lambda r, hook: r + beta * direction[:, None])])
    assert not same(got, everywhere, atol=1e-4), (
        "you pushed every position. The final prompt position is the only one that predicts the answer; add "
        "`beta * direction` at position -1 (the batch is left-padded) and leave the rest of the sequence alone."
    )
    for wrong in (1.0, -beta):
        if same(got, model.run_with_hooks(batch, fwd_hooks=steering_hooks(model, direction, wrong)), atol=1e-4):
            raise AssertionError(f"you pushed with strength {wrong}, but beta is {beta}: add `beta * direction`.")
    raise AssertionError(
        f"final-position logits differ from steering_hooks' by up to {max_diff(got[:, -1], expected[:, -1]):.3g}."
    )


def test_steered_correct(steered_correct: Callable, model: "HookedAudioLM", items: list[dict[str, Any]],
                         beta: float = 3.0) -> None:
    """`steered_correct(fast, heads, beta)` against real steered runs (hooks on the model) of the same items."""
    fast = FastSteering.collect(model, items, PROFILE.prompt, heads=False)
    for heads in ([(0, 5)], [(5, 0), (1, 3)]):  # read as (head, layer): layers 5, then 0 and 3
        layers = sorted({layer for layer, _ in heads})
        records = score_items(model, items, steering=adaptive_steering(layers, beta), progress=False)
        expected = np.array([r["correct"] for r in records])
        result = steered_correct(fast, heads, beta)
        got = as_tensor(None if result is None else np.asarray(result), "steered_correct").numpy()
        assert got.shape == expected.shape, (
            f"steered_correct returned shape {got.shape}; expected ({len(items)},): one True/False per item."
        )
        if np.array_equal(got.astype(bool), expected):
            continue
        by_head_index = fast.correct(fast.layer_direction(sorted({h for _, h in heads})), beta)
        unsteered = fast.correct()
        assert not (np.array_equal(got.astype(bool), unsteered) and np.array_equal(got.astype(bool), by_head_index)), (
            f"for heads {heads} you returned the unsteered correctness, or steered from layers "
            f"{sorted({h for _, h in heads})} (the head indices) where the push does nothing. Pass "
            f"`fast.layer_direction` of the heads' layers, {layers}, and beta to `fast.correct`."
        )
        assert not np.array_equal(got.astype(bool), by_head_index), (
            f"for heads {heads} you steered from layers {sorted({h for _, h in heads})}: a head is (layer, head), and "
            f"the direction comes from the heads' layers, {layers}."
        )
        assert not np.array_equal(got.astype(bool), unsteered), (
            f"for heads {heads} you returned the unsteered correctness; pass the direction and beta to `fast.correct`."
        )
        raise AssertionError(
            f"for heads {heads}, beta {beta}: real steered runs get {int(expected.sum())}/{len(items)} right, you "
            f"predict {int(got.astype(bool).sum())}; items that differ: "
            f"{[i for i in range(len(items)) if bool(got[i]) != expected[i]]}."
        )
    print(f"steered_correct: matches real steered runs on {len(items)} items for two head sets. Passed!")


def test_percentile(percentile_among: Callable) -> None:
    """`percentile_among(ours, draws)` against `scipy.stats.percentileofscore(kind="mean")`: ties count half, as in
    `lens_audio.analysis.statistics.control_distribution`."""
    cases = [
        (91.7, np.array([90.0, 91.7, 91.7, 92.5, 89.2, 90.8, 91.7, 88.0])),
        (50.0, np.array([40.0, 45.0, 60.0])),
        (75.0, np.full(10, 75.0)),
    ]
    for ours, draws in cases:
        expected = float(stats.percentileofscore(draws, ours, kind="mean"))
        got = percentile_among(ours, draws.copy())
        assert got is not None and got is not Ellipsis, "percentile_among returned nothing: replace the `...  # TODO`."
        got = float(got)
        if abs(got - expected) < 1e-6:
            continue
        below, ties = int((draws < ours).sum()), int((draws == ours).sum())
        assert abs(got * 100 - expected) > 1e-6, "you returned a fraction; return a percentage (0-100)."
        assert abs(got - 100 * below / draws.size) > 1e-6, (
            f"ties count half: {ties} of {draws.size} draws equal {ours}, and you counted them as below none."
        )
        assert abs(got - 100 * (below + ties) / draws.size) > 1e-6, (
            f"ties count half: {ties} of {draws.size} draws equal {ours}, and you counted them all as below."
        )
        raise AssertionError(f"ours = {ours}, draws = {draws.tolist()}: expected percentile {expected}, got {got}.")
    print("percentile_among: matches scipy.stats.percentileofscore (ties count half). Passed!")
