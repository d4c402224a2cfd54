"""Specialist-head statistics and audio-minus-silence steering, on hand-computable cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lens_audio import make_batch
from lens_audio.analysis.heads import HeadCorrelation, correlate_heads
from lens_audio.analysis.steering import FixedDirection, adaptive_direction, layers_of, steer, steering_hooks


def test_correlation_against_scipy_and_selection(tmp_path):
    rng = np.random.default_rng(0)
    correct = rng.random(60) < 0.5
    mass = rng.random((60, 3, 4))
    mass[:, 1, 2] = correct + 0.1 * rng.random(60)  # a near-perfect specialist
    mass[:, 0, 0] = 0.5  # a constant head: r undefined
    result = correlate_heads(mass, correct, n_bootstrap=200)
    expected = stats.pearsonr(mass[:, 2, 3], correct.astype(float))
    assert np.isclose(result.r[2, 3], expected.statistic) and np.isclose(result.p_value[2, 3], expected.pvalue)
    assert np.isnan(result.r[0, 0])
    assert result.top_k(1) == [(1, 2)] and result.r[1, 2] > 0.95
    assert result.ci_low[1, 2] <= result.r[1, 2] <= result.ci_high[1, 2]
    assert (0, 0) not in result.top_k(11)
    control = result.random_heads(3, seed=1, exclude=[(1, 2)])
    assert control == result.random_heads(3, seed=1, exclude=[(1, 2)]) and (1, 2) not in control
    result.save(tmp_path / "heads.json")
    again = HeadCorrelation.load(tmp_path / "heads.json")
    assert np.allclose(again.r, result.r, equal_nan=True) and again.top_k(1) == [(1, 2)]
    assert layers_of([(3, 1), (1, 0), (3, 2)]) == [1, 3]


@pytest.fixture
def model(tiny_pair):
    return tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)[1]


def test_beta_zero_is_bit_for_bit(model, two_example_batch):
    direction = adaptive_direction(model, two_example_batch, layers=[0, 2])
    with torch.no_grad():
        plain = model(two_example_batch)
        with steer(model, direction, beta=0.0):
            steered = model(two_example_batch)
    assert torch.equal(plain, steered)


def test_direction_of_silent_audio_is_zero(model, processor):
    silent = make_batch(
        processor, [np.zeros(12000, np.float32), np.zeros(5000, np.float32)], ["a?", "b?"], sampling_rate=16000
    )
    # the silence side may come from the cross-call silence cache, filled by a differently batched forward: equal
    # to float rounding (residuals here are ~1), not bit for bit
    assert adaptive_direction(model, silent, layers=[1, 2]).abs().max() < 1e-6


def test_steering_moves_the_final_logits_and_generation(model, two_example_batch):
    direction = adaptive_direction(model, two_example_batch, layers=[1])
    assert direction.shape == (2, model.cfg.d_model) and direction.abs().max() > 0
    with torch.no_grad():
        plain = model(two_example_batch)
        with steer(model, direction, beta=4.0):
            steered = model(two_example_batch)
    assert torch.equal(plain[:, :-1], steered[:, :-1]) and not torch.allclose(plain[:, -1], steered[:, -1])
    kwargs = dict(max_new_tokens=5, eos_token_id=[], do_sample=False)
    strong = model.generate(two_example_batch, fwd_hooks=steering_hooks(model, direction, 200.0), **kwargs)
    assert not torch.equal(strong, model.generate(two_example_batch, **kwargs))


def test_mismatched_vectors_are_refused(model, two_example_batch, tmp_path):
    with pytest.raises(ValueError, match="width 7 but the model's residual stream is 64 wide"):
        steering_hooks(model, torch.zeros(7), 1.0)
    with pytest.raises(ValueError, match="no hook point 'blocks.9.hook_resid_post'"):
        steering_hooks(model, torch.zeros(64), 1.0, hook_name="blocks.9.hook_resid_post")
    fixed = FixedDirection.from_batches(model, [two_example_batch], layers=[1, 2], beta=1.5)
    fixed.save(tmp_path / "direction.safetensors")
    loaded = FixedDirection.load(tmp_path / "direction.safetensors", model)
    assert torch.equal(loaded.vector, fixed.vector) and loaded.layers == [1, 2] and loaded.beta == 1.5
    assert torch.allclose(fixed.vector, adaptive_direction(model, two_example_batch, [1, 2]).mean(0))
    with torch.no_grad(), model.hooks(fwd_hooks=loaded.steering()(model, two_example_batch)):
        pushed = model(two_example_batch)
    with torch.no_grad():
        plain = model(two_example_batch)
    assert not torch.allclose(pushed[:, -1], plain[:, -1]) and torch.equal(pushed[:, :-1], plain[:, :-1])
    FixedDirection(torch.zeros(32), "other", [0], 1.0).save(tmp_path / "narrow.safetensors")
    with pytest.raises(ValueError, match="width 32 from 'other'.*64 wide"):
        FixedDirection.load(tmp_path / "narrow.safetensors", model)
