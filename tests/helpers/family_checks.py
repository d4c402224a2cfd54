"""Checks every family's tests share: the silence twin, the listening signal and steering run on a padded batch of
the clips `waveform(1.5, 1)` and `waveform(0.4, 2)` with the questions below."""

from __future__ import annotations

import numpy as np
import torch

from lens_audio import make_batch
from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.steering import adaptive_direction, steer
from tests.helpers.reference import waveform

QUESTIONS = ["What is the sound?", "Is this music?"]


def padded_batch(processor, padding_side="left"):
    """Two clips of different lengths (150 and 40 mel frames), so one row is padded."""
    return make_batch(processor, [waveform(1.5, 1), waveform(0.4, 2)], QUESTIONS, sampling_rate=16000,
                      padding_side=padding_side)


def assert_silence_twin_listening_and_steering(model, processor, batch) -> None:
    """The twin is token-identical with silent features (those of silent clips of the same lengths); the listening
    signal is a mass in (0, 1) per head; steering at the final position changes only that position's logits."""
    twin = batch.silence_twin()
    assert torch.equal(twin.input_ids, batch.input_ids) and not torch.equal(twin.input_features, batch.input_features)
    silent = make_batch(processor, [np.zeros(24000, np.float32), np.zeros(6400, np.float32)], QUESTIONS,
                        sampling_rate=16000)
    assert torch.equal(twin.input_features, silent.input_features) and torch.equal(twin.input_ids, silent.input_ids)
    signal = listening_signal(model, batch)
    assert signal.audio_mass.shape == (2, model.cfg.n_layers, model.cfg.n_heads)
    assert ((signal.audio_mass > 0) & (signal.audio_mass < 1)).all()
    direction = adaptive_direction(model, batch, layers=[1])
    assert direction.shape == (2, model.cfg.d_model) and direction.abs().max() > 0
    with torch.no_grad():
        plain = model(batch)
        with steer(model, direction, beta=4.0):
            steered = model(batch)
    assert torch.equal(plain[:, :-1], steered[:, :-1]) and not torch.allclose(plain[:, -1], steered[:, -1])


def without_head_results(heads) -> list:
    """Hooks that take `heads`' per-head outputs (`attn.hook_result`) out of their layers' attention output
    (`hook_attn_out`): a head mask computed a second way, through the output projection."""
    taken: dict[int, torch.Tensor] = {}
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def keep(result, hook, layer, hs):
        taken[layer] = result[:, :, hs].sum(2)

    hooks = []
    for layer, hs in by_layer.items():
        hooks.append((f"blocks.{layer}.attn.hook_result", lambda r, hook, l=layer, hs=hs: keep(r, hook, l, hs)))
        hooks.append((f"blocks.{layer}.hook_attn_out", lambda out, hook, l=layer: out - taken[l]))
    return hooks


def assert_rival_interventions(model, batch) -> None:
    """The rivals of steering run on the family, each checked a second way: back-patching a layer onto itself and
    attention scaling by 1 change nothing, scaling by 4 changes the logits, contrastive correction at 0 is the
    plain option scores, and a head mask takes the heads' per-head outputs out of their layers' attention."""
    from lens_audio.benchmark.runner import choice_log_likelihoods
    from lens_audio.paper.interventions import AudioAttentionScale, BackPatch, ContrastiveCorrection, HeadMask

    last = model.cfg.n_layers - 1
    with torch.no_grad():
        plain = model(batch)
        with model.hooks(fwd_hooks=BackPatch(last - 1, last)(model, batch)):
            assert torch.equal(model(batch), plain)
        with model.hooks(fwd_hooks=AudioAttentionScale(((last, 0), (0, 1)), 1.0)(model, batch)):
            torch.testing.assert_close(model(batch), plain, atol=1e-5, rtol=1e-4)
        with model.hooks(fwd_hooks=AudioAttentionScale(((last, 0), (0, 1)), 4.0)(model, batch)):
            assert not torch.allclose(model(batch)[:, -1], plain[:, -1])
        heads = ((last, 0), (0, 1))
        with model.hooks(fwd_hooks=HeadMask(heads, "two heads")(model, batch)):
            masked = model(batch)
        with model.hooks(fwd_hooks=without_head_results(heads)):
            torch.testing.assert_close(masked, model(batch), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(masked[:, -1], plain[:, -1])
    choices = [["yes", "no"], ["a", "b c"]]
    assert torch.equal(ContrastiveCorrection(0.0).score_options(model, batch, choices, "mean"),
                       choice_log_likelihoods(model, batch, choices, scoring="mean"))
