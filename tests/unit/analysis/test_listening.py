"""The listening signal equals the explicit attention pattern summed over audio positions."""

from __future__ import annotations

import pytest
import torch

from lens_audio import make_batch
from lens_audio.analysis import listening_signal
from tests.helpers.reference import waveform


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_matches_cached_patterns(tiny_pair, processor, padding_side):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)
    batch = make_batch(processor, [[waveform(0.6, 1), waveform(1.0, 2)], waveform(0.4, 3)], ["Two clips?", "One?"],
                       sampling_rate=16000, padding_side=padding_side)
    signal = listening_signal(model, batch, heads=[(1, 2), (2, 0)])
    with torch.no_grad():
        _, cache = model.run_with_cache(batch, names_filter=lambda n: n.endswith("hook_pattern"))
    audio, final = batch.audio_mask, batch.final_position
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer]  # [batch, head, q, k]
        for example in range(batch.batch_size):
            row = pattern[example, :, final[example]]
            expected = row[:, audio[example]].sum(-1)
            assert torch.allclose(signal.audio_mass[example, layer], expected, atol=1e-5)
    assert torch.allclose(signal.rows[:, 0], cache["pattern", 1][torch.arange(2), 2, final], atol=1e-5)
    assert ((signal.audio_mass >= 0) & (signal.audio_mass <= 1)).all()


def test_layers_subset_and_bad_head(tiny_pair, two_example_batch):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)
    signal = listening_signal(model, two_example_batch, layers=[1])
    assert torch.isnan(signal.audio_mass[:, 0]).all() and not torch.isnan(signal.audio_mass[:, 1]).any()
    with pytest.raises(ValueError, match=r"head \(3, 0\) does not exist: this model has layers 0-2 and heads 0-3"):
        listening_signal(model, two_example_batch, heads=[(3, 0)])
