"""Adaptive steering in one pass: the steered logits and the direction from one batched forward."""

from __future__ import annotations

import pytest
import torch

from lens_audio.analysis.steering import adaptive_direction, adaptive_steering, steer, steering_hooks
from lens_audio.analysis.steering.silence_cache import silence_prefix_cache
from lens_audio.analysis.steering.steered_pass import steered_logits
from lens_audio.benchmark.runner import choice_log_likelihoods, one_token_choices, run_benchmark
from tests.helpers import silence_fixtures

model, batch, single = silence_fixtures.model, silence_fixtures.batch, silence_fixtures.single  # shared fixtures


@pytest.mark.parametrize(
    "layers, hook_name",
    [([1], None), ([0, 2], None), ([2], "blocks.1.hook_resid_post"), ([0], "blocks.1.hook_resid_mid")],
    ids=["shallow", "deepest-is-last", "hook-before-direction (fallback)", "mid-hook"],
)
def test_steered_logits_equal_direction_then_steer(model, batch, single, layers, hook_name):
    for b in (batch, single):
        for cache_bytes in (0, 1 << 30):  # the silence pass batched with the audio rows, or from the cache
            silence_prefix_cache(model, max_bytes=cache_bytes)
            direction = adaptive_direction(model, b, layers)
            with torch.no_grad(), steer(model, direction, 30.0, hook_name):
                expected = model(b)[:, -1]
            got = steered_logits(model, b, layers, 30.0, hook_name=hook_name)
            assert torch.equal(got.direction, direction)
            # the logits differ only by the rounding of unembedding one position rather than all (~1e-7)
            assert torch.allclose(got.logits, expected, atol=1e-5, rtol=0)
            with torch.no_grad():
                assert not torch.allclose(got.logits, model(b)[:, -1], atol=1e-2)  # the push really acted


def test_the_runner_scores_one_token_choices_steered_in_one_pass(model, tmp_path):
    from lens_audio.benchmark import load_mmau
    from lens_audio.organisms.benchmark_writer import write_benchmark

    folder = write_benchmark(tmp_path / "w", seed=2, n_clips=4, progress=False)
    items = [{**item, "choices": ["A", "B", "C", "D"], "answer": "B"} for item in load_mmau(folder / "workshop.json")]
    items = items[:6]
    assert one_token_choices(model, [item["choices"] for item in items])
    fused = adaptive_steering([0, 2], beta=40.0)
    separate = lambda m, b, start: steering_hooks(m, adaptive_direction(m, b, [0, 2]), 40.0, None, start)
    kwargs = dict(template="letters", mode="choice", batch_size=3, progress=False, listening=False)
    assert [r["output"] for r in run_benchmark(model, items, None, steering=fused, **kwargs)] == [
        r["output"] for r in run_benchmark(model, items, None, steering=separate, **kwargs)
    ]
    b = model.to_batch([item["audio_path"] for item in items[:3]], ["Which one? A, B, C or D."] * 3)
    choices = [item["choices"] for item in items[:3]]
    one_pass = choice_log_likelihoods(model, b, choices, final_logits=fused.logits(model, b))
    two_passes = choice_log_likelihoods(model, b, choices, separate(model, b, b.input_ids.shape[1] - 1))
    assert torch.allclose(one_pass, two_passes, atol=1e-5) and not torch.allclose(
        one_pass, choice_log_likelihoods(model, b, choices), atol=1e-3
    )
    generate = dict(kwargs, mode="generate", max_new_tokens=3)  # the steered prefill, then steered decoding
    assert [r["output"] for r in run_benchmark(model, items[:3], None, steering=fused, **generate)] == [
        r["output"] for r in run_benchmark(model, items[:3], None, steering=separate, **generate)
    ]
    with pytest.raises(ValueError, match="single-token"):
        choice_log_likelihoods(model, b, [["a long choice", "B"]] * 3, final_logits=fused.logits(model, b))
