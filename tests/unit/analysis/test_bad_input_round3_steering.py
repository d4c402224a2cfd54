"""Bad input, round 3, for steering: layers and heads named more than once, heads the model does not have, and one
beta per batch row.

Each test fails on the code before this round (866792f) and checks a second computation or that the message names
the input."""

from __future__ import annotations

import re

import pytest
import torch

from lens_audio.analysis.steering import adaptive_direction, steering_hooks
from lens_audio.analysis.steering.direction import head_output_direction
from lens_audio.analysis.steering.steered_pass import steered_logits
from tests.helpers.reference import waveform


@pytest.fixture
def model(tiny_pair):
    return tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)[1]


@pytest.fixture
def batch(processor):
    clips = [waveform(0.8, 1), waveform(1.2, 2)]
    from lens_audio import make_batch

    return make_batch(processor, clips, ["What is the sound?", "Why?"], sampling_rate=16000)


def test_layers_of_heads_sharing_a_layer_count_once(model, batch):
    with pytest.warns(UserWarning, match=re.escape("name layer(s) [1] more than once; each layer counts once")):
        repeated = adaptive_direction(model, batch, [1, 1, 2])
    distinct = adaptive_direction(model, batch, [1, 2])
    assert torch.equal(repeated, distinct)
    by_hand = (adaptive_direction(model, batch, [1]) + adaptive_direction(model, batch, [2])) / 2
    assert torch.allclose(repeated, by_hand, atol=1e-6)  # the plain mean over the two layers, not 2:1
    with pytest.warns(UserWarning, match="more than once"):
        one_pass = steered_logits(model, batch, [1, 1, 2], 3.0)
    assert torch.equal(one_pass.direction, distinct)  # the one-pass path decides the same


def test_a_repeated_head_counts_once(model, batch):
    with pytest.warns(UserWarning, match=re.escape("head(s) [(1, 2)] are named more than once")):
        repeated = head_output_direction(model, batch, [(1, 2), (0, 1), (1, 2)])
    assert torch.equal(repeated, head_output_direction(model, batch, [(1, 2), (0, 1)]))
    by_hand = head_output_direction(model, batch, [(1, 2)]) + head_output_direction(model, batch, [(0, 1)])
    assert torch.allclose(repeated, by_hand, atol=1e-5)


@pytest.mark.parametrize("head", [(0, 4), (3, 0), (-1, 0)])
def test_a_head_the_model_does_not_have_is_named(model, batch, head):
    with pytest.raises(ValueError) as raised:
        head_output_direction(model, batch, [(0, 1), head])
    message = str(raised.value)
    assert f"head {head} does not exist" in message and "layers 0-2 and heads 0-3" in message
    with pytest.raises(ValueError, match=re.escape(f"head {head} does not exist")):  # the one pass too
        steered_logits(model, batch, None, 1.0, heads=[head])


def test_one_beta_per_batch_row(model, batch):
    direction = adaptive_direction(model, batch, [1, 2])
    betas = torch.tensor([0.5, 4.0])
    with torch.no_grad(), model.hooks(fwd_hooks=steering_hooks(model, direction, betas)):
        per_row = model(batch)[:, -1]
    for row, beta in enumerate(betas.tolist()):  # each row as if the whole batch were pushed by its beta
        with torch.no_grad(), model.hooks(fwd_hooks=steering_hooks(model, direction, beta)):
            assert torch.allclose(per_row[row], model(batch)[row, -1], atol=1e-6)
    one_pass = steered_logits(model, batch, [1, 2], betas)
    assert torch.allclose(one_pass.logits, per_row, atol=1e-5)
    assert torch.allclose(steered_logits(model, batch, [1, 2], [0.5, 4.0]).logits, per_row, atol=1e-5)  # a list


def test_a_beta_per_row_of_another_batch_is_refused(model, batch):
    direction = adaptive_direction(model, batch, [1, 2])
    with pytest.raises(ValueError, match="beta holds 3 strengths, one per batch row, but the batch has 2 rows"):
        with torch.no_grad(), model.hooks(fwd_hooks=steering_hooks(model, direction, torch.ones(3))):
            model(batch)
    with pytest.raises(ValueError, match="beta holds 3 strengths, one per batch row, but the batch has 2 rows"):
        steered_logits(model, batch, [1, 2], torch.ones(3))
    with pytest.raises(ValueError, match=re.escape("one per batch row (a 1-D tensor of shape [batch]), not a tensor "
                                                   "of shape [2, 2]")):
        steering_hooks(model, direction, torch.ones(2, 2))
    with pytest.raises(ValueError, match=re.escape("not finite at row(s) [1]")):
        steering_hooks(model, direction, torch.tensor([1.0, float("nan")]))
