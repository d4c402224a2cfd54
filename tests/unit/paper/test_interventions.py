"""The rival interventions, each checked a second way: contrastive correction at strength 0 is the baseline bit for
bit and at strength 1 the hand-made contrast, in choice scoring and in decoding; back-patching a layer onto itself
changes nothing; attention scaling by 1 changes nothing and by more moves the chosen heads' attention to the audio
up, and only theirs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lens_audio.benchmark.runner import choice_log_likelihoods
from lens_audio.inputs.batch import make_batch
from lens_audio.paper.interventions import AudioAttentionScale, BackPatch, ContrastiveCorrection
from tests.helpers.reference import waveform


@pytest.fixture(scope="module")
def setup(tiny_pair, processor):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2, seed=5)
    batch = make_batch(processor, [waveform(1.2, 1), waveform(0.5, 2)], ["Which sound is it?", "Is this a bell?"],
                       sampling_rate=16000)
    return model, batch, [["bell", "dog bark", "rain"], ["yes", "no"]]


def test_contrastive_correction_at_zero_is_the_baseline_and_at_one_the_contrast(setup):
    model, batch, choices = setup
    plain = choice_log_likelihoods(model, batch, choices, scoring="mean")
    assert torch.equal(ContrastiveCorrection(0.0).score_options(model, batch, choices, "mean"), plain)
    silence = choice_log_likelihoods(model, batch.silence_twin(), choices, scoring="mean")
    got = ContrastiveCorrection(1.0).score_options(model, batch, choices, "mean")
    present = torch.isfinite(plain)
    torch.testing.assert_close(got[present], (2 * plain - silence)[present])
    assert torch.equal(got[~present], plain[~present])  # an absent option stays absent (-inf)
    with pytest.raises(ValueError, match="alpha"):
        ContrastiveCorrection(-1.0)
    with pytest.raises(ValueError, match="greedy"):
        ContrastiveCorrection(1.0).generate(model, batch, do_sample=True)


def test_contrastive_decoding_at_zero_is_greedy_decoding_and_at_one_the_contrast_of_each_step(setup):
    model, batch, _ = setup
    width = batch.input_ids.shape[1]
    plain = model.generate(batch, max_new_tokens=4, do_sample=False)
    assert torch.equal(ContrastiveCorrection(0.0).generate(model, batch, 4), plain)
    got = ContrastiveCorrection(1.0).generate(model, batch, 4)
    assert got.shape[0] == batch.batch_size
    with torch.no_grad():  # the first step by hand: the contrast of the prompt's last logits
        audio = model(batch)[:, -1].log_softmax(-1)
        silence = model(batch.silence_twin())[:, -1].log_softmax(-1)
    assert torch.equal(got[:, width], (2 * audio - silence).argmax(-1))
    # the second step by hand: the first token appended to both prompts, audio and silence alike
    longer = dataclasses.replace(batch, input_ids=got[:, : width + 1],
                                 attention_mask=torch.cat([batch.attention_mask,
                                                           torch.ones_like(batch.attention_mask[:, :1])], 1))
    with torch.no_grad():
        audio = model(longer)[:, -1].log_softmax(-1)
        silence = model(longer.silence_twin())[:, -1].log_softmax(-1)
    assert torch.equal(got[:, width + 1], (2 * audio - silence).argmax(-1))
    # every step, decoded a second way: no key-value cache, the whole sequence each step
    assert torch.equal(ContrastiveCorrection(1.0).generate(model, batch, 4, use_past_kv_cache=False), got)


def test_back_patching_a_layer_onto_itself_changes_nothing_and_a_later_layer_does(setup):
    model, batch, _ = setup
    plain = model(batch)
    with model.hooks(fwd_hooks=BackPatch(0, 1)(model, batch)):  # the stream after block 0 is the one entering 1
        assert torch.equal(model(batch), plain)
    with model.hooks(fwd_hooks=BackPatch(1, 0)(model, batch)):
        moved = model(batch)
    audio = batch.audio_mask
    assert not torch.allclose(moved, plain)
    before_audio = (torch.cumsum(audio.int(), 1) == 0) & batch.attention_mask.bool()  # real, before the audio
    torch.testing.assert_close(moved[before_audio], plain[before_audio])  # causal: earlier positions untouched
    with pytest.raises(ValueError, match="layers 0-1"):
        BackPatch(5, 0)(model, batch)


def test_attention_scaling_by_one_changes_nothing_and_more_raises_only_the_chosen_heads_audio_share(setup):
    model, batch, _ = setup
    plain = model(batch)
    with model.hooks(fwd_hooks=AudioAttentionScale(((1, 2),), 1.0)(model, batch)):
        torch.testing.assert_close(model(batch), plain, atol=1e-6, rtol=1e-5)
    names = ["blocks.1.attn.hook_pattern"]
    _, before = model.run_with_cache(batch, names_filter=names)
    hooks = AudioAttentionScale(((1, 2),), 4.0)(model, batch)
    with model.hooks(fwd_hooks=hooks):
        _, after = model.run_with_cache(batch, names_filter=names)
    audio = batch.audio_mask[:, None, :].float()
    final = batch.final_position
    rows = torch.arange(batch.batch_size)
    share = lambda cache: (cache[names[0]][rows, :, final] * audio[:, 0][:, None]).sum(-1)  # noqa: E731
    assert (share(after)[:, 2] > share(before)[:, 2]).all()
    others = [0, 1, 3]
    torch.testing.assert_close(share(after)[:, others], share(before)[:, others])
    torch.testing.assert_close(after[names[0]].sum(-1), torch.ones_like(after[names[0]].sum(-1)))  # rows sum to 1
