"""Session 3 checkers: audio-minus-silence steering (`notebooks/workshop/03_steering_*`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from lens_audio.analysis.final_position import audio_arrival
from lens_audio.analysis.steering.direction import adaptive_direction, adaptive_steering, steering_hooks
from lens_audio.model.hook_point import block_hook_name
from lens_audio.organisms.evaluate import PROFILE, score_items
from lens_audio.paper.fast_steering import FastSteering
from lens_audio.workshop.exercises.checks import as_tensor, call_learner, max_diff, same

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


@torch.no_grad()
def test_direction(direction_by_hand: Callable, model: "HookedAudioLM", batch: "AudioBatch",
                   layers: tuple[int, ...] = (1, 4, 5)) -> None:
    """`direction_by_hand(model, batch, layers)` against `adaptive_direction` (one batched audio+silence pass).

    Where `layers` has as many layers as `batch` has prompts, a layer set of another size is checked first, so
    that averaging over the prompts instead of the layers changes the shape and is named.
    """
    layers = list(layers)
    layer_sets = [layers]
    if len(layers) == batch.batch_size:
        other = layers[:-1] if len(layers) > 2 else sorted(set(layers) | {model.cfg.n_layers - 1, 1})
        layer_sets.insert(0, other if len(other) != batch.batch_size else layers + [model.cfg.n_layers - 1])
    for layer_set in layer_sets:
        check_direction(direction_by_hand, model, batch, layer_set)
    print(f"direction_by_hand: layers {' and '.join(map(str, layer_sets))}, {batch.batch_size} prompts, matches "
          "adaptive_direction. Passed!")


def check_direction(direction_by_hand: Callable, model: "HookedAudioLM", batch: "AudioBatch",
                    layers: list[int]) -> None:
    """One layer set of `test_direction`: the shape (naming a slip onto the wrong axis), then the values."""
    expected = adaptive_direction(model, batch, layers)
    sizes = {"batch": batch.batch_size, "layer": len(layers), "d_model": model.cfg.d_model}
    got = call_learner(direction_by_hand, "direction_by_hand", (model, batch, list(layers)), tuple(expected.shape),
                       "batch d_model", "`cache[name][:, final]` pairs every prompt with every prompt's final position "
                       "([batch, batch, d_model]); take `cache[name][torch.arange(batch), final]` ([batch, d_model]), "
                       "then average over layers.", sizes=sizes)
    if same(got, expected, atol=1e-4):
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


class RecordingSteering:
    """A `FastSteering` that remembers every push (`beta * direction`) asked of `correct`, so the checker can see
    the direction the learner built even where the items' right/wrong answers happen not to change."""

    def __init__(self, fast: FastSteering) -> None:
        self.fast, self.pushes = fast, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fast, name)

    def correct(self, direction: Tensor | None = None, beta: float | Tensor = 0.0) -> np.ndarray:
        self.pushes.append(None if direction is None else torch.as_tensor(beta) * direction)
        return self.fast.correct(direction, beta)


STEERED_CORRECT_CASES = (  # head sets; the last repeats layer 0 three times
    [(0, 5)],  # read as (head, layer) it is layer 5
    [(5, 0), (1, 3)],  # layers 1 and 5; read as (head, layer), layers 0 and 3
    [(0, 1), (0, 2), (0, 6), (5, 4)],  # layers 0 and 5, each counted once
)


def test_steered_correct(steered_correct: Callable, model: "HookedAudioLM", items: list[dict[str, Any]],
                         beta: float = 3.0) -> None:
    """`steered_correct(fast, heads, beta)` against real steered runs (hooks on the model) of the same items, and
    the push it asks of `fast.correct` against the direction of the heads' layers, each layer once."""
    fast = FastSteering.collect(model, items, PROFILE.prompt, heads=False)
    for heads in STEERED_CORRECT_CASES:
        layers = sorted({layer for layer, _ in heads})
        records = score_items(model, items, steering=adaptive_steering(layers, beta), progress=False)
        expected = np.array([r["correct"] for r in records])
        recording = RecordingSteering(fast)
        try:
            result = steered_correct(recording, list(heads), beta)
        except Exception as error:
            raise AssertionError(
                f"steered_correct raised {type(error).__name__}: {error} (heads {heads}). It should return "
                f"({len(items)},) booleans, one per item: `fast.correct(direction, beta)`."
            ) from error
        got = as_tensor(None if result is None else np.asarray(result), "steered_correct").numpy()
        assert got.shape == expected.shape, (
            f"steered_correct returned shape {got.shape}; expected ({len(items)},): one True/False per item."
        )
        pushes = [push for push in recording.pushes if push is not None]
        push = pushes[-1] if pushes else None
        if np.array_equal(got.astype(bool), expected) and (
            push is None or same(push, beta * fast.layer_direction(layers), atol=1e-5)
        ):
            continue
        explain_steered_correct(fast, heads, layers, beta, got.astype(bool), push)
        raise AssertionError(
            f"for heads {heads}, beta {beta}: real steered runs get {int(expected.sum())}/{len(items)} right, you "
            f"predict {int(got.astype(bool).sum())}; items that differ: "
            f"{[i for i in range(len(items)) if bool(got[i]) != expected[i]]}."
        )
    print(f"steered_correct: matches real steered runs on {len(items)} items for {len(STEERED_CORRECT_CASES)} head "
          "sets (one with several heads in a layer). Passed!")


def explain_steered_correct(fast: FastSteering, heads: list[tuple[int, int]], layers: list[int], beta: float,
                            got: np.ndarray, push: Tensor | None) -> None:
    """Raise the AssertionError that names the slip behind a wrong `steered_correct`."""
    head_indices = sorted({h for _, h in heads})
    every_layer = [layer for layer, _ in heads]
    if push is None:
        assert not np.array_equal(got, fast.correct()), (
            f"for heads {heads} you returned the unsteered correctness; pass the direction and beta to `fast.correct`."
        )
        return
    slips = {
        f"you steered from layers {every_layer}: a layer holding several heads counted once per head. The direction "
        f"averages the heads' layers, each layer once: {layers}": every_layer,
        f"you steered from the deepest layer only ({layers[-1]}); average the direction over every layer of the "
        f"heads, {layers}": layers[-1:],
        f"you steered from the shallowest layer only ({layers[0]}); average the direction over every layer of the "
        f"heads, {layers}": layers[:1],
        f"you steered from layers {head_indices} (the head indices): a head is (layer, head), and the direction "
        f"comes from the heads' layers, {layers}": head_indices,
    }
    for message, wrong_layers in slips.items():
        if wrong_layers != layers:
            assert not same(push, beta * fast.layer_direction(wrong_layers), atol=1e-5), f"for heads {heads} {message}."
    direction = fast.layer_direction(layers)
    for wrong in (1.0, -beta):
        assert not same(push, wrong * direction, atol=1e-5), (
            f"for heads {heads} you pushed with strength {wrong}, but beta is {beta}: pass `beta` to `fast.correct`."
        )
    raise AssertionError(
        f"for heads {heads} the push you asked of `fast.correct` is not beta * `fast.layer_direction({layers})` "
        f"(largest difference {max_diff(push, beta * direction):.3g}): steer from the heads' layers, each once."
    )


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


def arrival_case(by_layer: list[float], audio: float, silence: float, n: int = 40) -> tuple[np.ndarray, ...]:
    """Correctness arrays with these accuracies (fractions of `n` items): `([item], [item], [layer, item])`."""
    def row(accuracy: float) -> np.ndarray:
        return np.arange(n) < round(accuracy * n)
    return row(audio), row(silence), np.stack([row(a) for a in by_layer])


ARRIVAL_CASES = (  # (by layer, audio, silence): a late arrival; a layer that restores, then one that does not;
    # patched accuracy >= 90% of the audio run's though < 90% of the audio's effect (the silence run is at 50%)
    ([0.2, 0.2, 0.2, 0.2, 0.175, 0.875, 0.875, 0.85, 0.8, 0.8, 0.8], 0.8, 0.2),
    ([0.3, 0.3, 0.9, 0.3, 0.85, 0.9, 0.9, 0.9], 0.9, 0.3),
    ([0.5, 0.5, 0.75, 0.75, 0.85, 0.8], 0.8, 0.5),
)


def test_arrival_layers(arrival_layers: Callable, threshold: float = 0.9) -> None:
    """`arrival_layers(audio, silence, patched, threshold)` against `lens_audio.analysis.final_position`'s
    `audio_arrival(...).layers` on three made-up patching results, each built to tell a usual slip apart."""
    for by_layer, audio_accuracy, silence_accuracy in ARRIVAL_CASES:
        audio, silence, patched = arrival_case(by_layer, audio_accuracy, silence_accuracy)
        expected = audio_arrival("check", "made-up", audio, silence, patched, threshold).layers
        case = (f"audio run {100 * audio_accuracy:.0f}%, silence {100 * silence_accuracy:.0f}%, patched by layer "
                f"{[round(100 * a) for a in by_layer]}%")
        try:
            result = arrival_layers(audio.copy(), silence.copy(), patched.copy(), threshold)
        except Exception as error:
            raise AssertionError(f"arrival_layers raised {type(error).__name__}: {error} ({case}). `patched` is "
                                 f"[layer, item] = {patched.shape}; return a list of layers.") from error
        assert result is not None and result is not Ellipsis, (
            "arrival_layers returned nothing: replace the `...  # TODO`.")
        if isinstance(result, int | np.integer):
            raise AssertionError(f"arrival_layers returned one layer ({result}); return the list of layers the "
                                 f"audio has reached, from the arrival layer to the last, here {expected}.")
        got = [int(layer) for layer in result]
        if got == expected:
            continue
        n_layers, n_items = patched.shape
        share = (patched.mean(1) - silence.mean()) / (audio.mean() - silence.mean())
        assert max(got, default=0) < n_layers, (
            f"{case}: you returned layers up to {max(got)}, but there are {n_layers}: `patched` is [layer, item] "
            f"= ({n_layers}, {n_items}); average each layer over its items (axis 1)."
        )
        reached = np.nonzero(share >= threshold)[0]
        assert got != [int(layer) for layer in reached], (
            f"{case}: you kept every layer that restores >= {threshold:.0%} on its own ({reached.tolist()}); the "
            f"audio has arrived from the first layer from which *every* later layer restores it: {expected}."
        )
        first = int(reached[0]) if reached.size else None
        assert first is None or got != list(range(first, n_layers)), (
            f"{case}: layer {first} restores the effect, but a later layer does not; the arrival is the first "
            f"layer from which every later layer restores >= {threshold:.0%}: {expected}."
        )
        ratio = patched.mean(1) / audio.mean()
        below = np.nonzero(ratio < threshold)[0]
        naive = list(range(int(below[-1]) + 1, n_layers)) if below.size else list(range(n_layers))
        assert got != naive, (
            f"{case}: you compared the patched accuracy with the audio run's ({threshold:.0%} of "
            f"{100 * audio_accuracy:.0f}%); the share restored is of the audio's *effect*: (patched - silence) / "
            f"(audio - silence), shares {[round(float(s), 2) for s in share]}."
        )
        across_layers = audio_arrival("check", "made-up", audio, silence, patched.T, threshold).layers
        assert got != across_layers, (
            f"{case}: you averaged over the layers (axis 0) instead of the items: `patched` is [layer, item] = "
            f"({n_layers}, {n_items}); each layer's accuracy is `patched.mean(1)`."
        )
        raise AssertionError(f"{case}: expected layers {expected}, got {got}. Restored shares by layer "
                             f"{[round(float(s), 2) for s in share]}.")
    print(f"arrival_layers: matches audio_arrival on {len(ARRIVAL_CASES)} patching results (a late arrival, a layer "
          "that restores and one after it that does not, a silence run at 50%). Passed!")
