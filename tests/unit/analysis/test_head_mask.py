"""Head masks, checked a second way: masking a head's `hook_z` equals taking its `hook_result` out of the layer's
attention output; the mask's loss is a hand cross-entropy; training is seeded, leaves the model as it was, and the
mask it learns lowers the loss it was trained on, measured with the plain hooks."""

from __future__ import annotations

import pytest
import torch

from lens_audio.analysis.head_mask import HeadMaskLogits, head_mask_hooks, option_loss, train_head_mask
from lens_audio.benchmark.fingerprint import model_fingerprint
from lens_audio.inputs.batch import make_batch
from lens_audio.model.generation import last_logits
from lens_audio.paper.interventions import HeadMask
from tests.helpers.family_checks import without_head_results
from tests.helpers.reference import waveform


@pytest.fixture(scope="module")
def setup(tiny_pair, processor):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2, seed=7)
    batch = make_batch(processor, [waveform(1.2, 1), waveform(0.5, 2), waveform(0.8, 3)],
                       ["Which sound is it?", "Is this a bell?", "What do you hear?"], sampling_rate=16000)
    return model, batch


def test_a_mask_takes_the_heads_outputs_out_and_an_empty_mask_changes_nothing(setup):
    model, batch = setup
    heads = ((0, 1), (1, 0), (1, 3))
    with torch.no_grad():
        plain = model(batch)
        with model.hooks(fwd_hooks=HeadMask(heads, "by hand")(model, batch)):
            masked = model(batch)
        with model.hooks(fwd_hooks=without_head_results(heads)):
            expected = model(batch)
        with model.hooks(fwd_hooks=HeadMask((), "empty")(model, batch)):
            assert torch.equal(model(batch), plain)
    assert not torch.allclose(masked, plain)
    torch.testing.assert_close(masked, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="head_mask_hooks: head \\(2, 0\\) does not exist"):
        head_mask_hooks(model, [(2, 0)])


def test_the_loss_is_the_cross_entropy_over_each_rows_options_counted_once():
    logits = torch.randn(2, 10)
    options, answer = [[3, 5, 7], [2, 4, 2]], [2, 1]  # row 1 padded with a repeat of its option 2
    got = option_loss(logits, options, answer)
    first = -torch.log_softmax(logits[0, [3, 5, 7]], 0)[2]
    second = -torch.log_softmax(logits[1, [2, 4]], 0)[1]
    torch.testing.assert_close(got, (first + second) / 2)


def test_training_is_seeded_leaves_the_model_as_it_was_and_lowers_the_loss(setup):
    model, batch = setup
    with torch.no_grad():
        logits = last_logits(model, model(batch, stop_at_layer=model.cfg.n_layers))
    options = [[11, 12, 13], [11, 12, 13], [11, 12, 13]]
    answer = [int(logits[i, options[i]].argmin()) for i in range(3)]  # each row's least likely option: work to do
    before = model_fingerprint(model)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    first = train_head_mask(model, [(batch, options, answer)], 60, [20, 60], learning_rate=0.2, progress=False)
    again = train_head_mask(model, [(batch, options, answer)], 60, [20, 60], learning_rate=0.2, progress=False)
    assert first.masked == again.masked and sorted(first.masked) == [20, 60]
    assert model_fingerprint(model) == before
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    heads = first.masked[60]
    assert heads, "the mask should switch some head off"

    def loss(hooks):
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            return float(option_loss(last_logits(model, model(batch, stop_at_layer=model.cfg.n_layers)), options,
                                     answer))

    assert loss(head_mask_hooks(model, heads)) < loss([])
    with pytest.raises(ValueError, match="checkpoints must lie in 1..steps"):
        train_head_mask(model, [(batch, options, answer)], 10, [20], progress=False)


def test_a_sample_is_exactly_0_or_1_where_logit_plus_noise_is_positive_and_its_gradient_the_sigmoids():
    mask = HeadMaskLogits(3, 4, 0.0)
    with torch.no_grad():
        mask.logits.copy_(torch.linspace(-2, 2, 12).reshape(3, 4))
    sample = mask.sample(torch.Generator().manual_seed(5))
    u = torch.rand((3, 4), generator=torch.Generator().manual_seed(5)).clamp(1e-6, 1 - 1e-6)
    noisy = mask.logits.detach() + torch.log(u) - torch.log1p(-u)  # the same draw, by hand
    assert torch.equal(sample.detach(), (noisy > 0).float())
    sample.sum().backward()
    torch.testing.assert_close(mask.logits.grad, torch.sigmoid(noisy) * (1 - torch.sigmoid(noisy)))
    with torch.no_grad():
        mask.logits[0, 1] = -0.5
    assert (0, 1) in mask.masked() and (0, 0) in mask.masked() and (2, 3) not in mask.masked()
