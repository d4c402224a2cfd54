"""The fast steering path equals the hook-based steered forward of the runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.analysis.steering import adaptive_direction, head_output_direction, steering_hooks
from lens_audio.benchmark import load_mmau
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.benchmark.runner import choice_log_likelihoods
from lens_audio.organisms.benchmark_writer import write_benchmark
from lens_audio.paper.fast_steering import FastSteering
from lens_audio.paper.profile import profile_for


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    bench = write_benchmark(tmp_path_factory.mktemp("bench") / "w", seed=3, n_clips=4, progress=False) / "workshop.json"
    return HookedAudioLM.from_pretrained("workshop"), load_mmau(bench), profile_for("workshop")


@pytest.mark.parametrize("layers, site, beta", [([1, 3], "hook_resid_post", 1.5), ([0, 2, 4], "hook_resid_pre", 3.0)])
def test_fast_path_scores_equal_the_steered_forward(setup, layers, site, beta):
    model, items, profile = setup
    fast = FastSteering.collect(model, items, profile.prompt, batch_size=5)
    batch = model.to_batch([i["audio_path"] for i in items], [render_prompt(i, profile.prompt) for i in items])
    hooks = steering_hooks(
        model, adaptive_direction(model, batch, layers, site), beta, None, batch.input_ids.shape[1] - 1
    )
    reference = choice_log_likelihoods(model, batch, [i["choices"] for i in items], hooks)
    ours = fast.option_scores(fast.layer_direction(layers, site), beta)
    for row, scores in enumerate(ours):
        assert torch.allclose(scores, reference[row, : len(scores)], atol=1e-4)
    predicted = reference.argmax(1).numpy()
    assert (fast.correct(fast.layer_direction(layers, site), beta) == (predicted == fast.answer_index)).all()


def test_fast_path_head_outputs_and_per_item_beta(setup):
    model, items, profile = setup
    fast = FastSteering.collect(model, items[:6], profile.prompt)
    batch = model.to_batch([i["audio_path"] for i in items[:6]], [render_prompt(i, profile.prompt) for i in items[:6]])
    heads = [(1, 0), (3, 2)]
    assert torch.allclose(fast.head_direction(heads), head_output_direction(model, batch, heads), atol=1e-4)
    betas = torch.linspace(0, 4, 6)
    direction = fast.layer_direction([2])
    per_item = fast.option_scores(direction, betas)
    one_by_one = [fast.option_scores(direction, float(b))[row] for row, b in enumerate(betas)]
    assert all(torch.allclose(a, b) for a, b in zip(per_item, one_by_one))
    baseline = np.array([int(s.argmax()) for s in fast.option_scores()])
    plain = choice_log_likelihoods(model, batch, [i["choices"] for i in items[:6]]).argmax(1).numpy()
    assert (baseline == plain).all()
