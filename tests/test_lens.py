"""The logit lens's last layer is the model's own prediction."""

from __future__ import annotations

import torch

from lens_audio.analysis.lens import logit_lens


def test_final_layer_equals_model_output(tiny_pair, two_example_batch):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)
    options = [[3, 8, 40], [3, 8, 40]]
    lens = logit_lens(model, two_example_batch, options)
    assert lens.prob.shape == lens.rank.shape == (4, 2, 3) and lens.labels[-1] == "final_post"
    with torch.no_grad():
        logits = model(two_example_batch)[:, -1]
    expected = logits.softmax(-1)[:, [3, 8, 40]]
    assert torch.allclose(lens.prob[-1], expected, atol=1e-5)
    top = logits.argmax(-1)
    for example in range(2):
        rank_of_top = (logits[example] > logits[example, top[example]]).sum()
        assert rank_of_top == 0
    assert (lens.rank[-1] == (logits[:, None, :] > logits[:, [3, 8, 40]][..., None]).sum(-1)).all()


def test_lens_over_audio_positions(tiny_pair, two_example_batch):
    from lens_audio.analysis.lens import logit_lens_over_audio

    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)
    probs = logit_lens_over_audio(model, two_example_batch, [3, 8], example=1)
    n_audio = int(two_example_batch.audio_mask[1].sum())
    assert probs.shape == (4, n_audio, 2) and ((probs >= 0) & (probs <= 1)).all()
    with torch.no_grad():
        logits = model(two_example_batch)[1][two_example_batch.audio_mask[1]]
    assert torch.allclose(probs[-1], logits.softmax(-1)[:, [3, 8]], atol=1e-5)
