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
    # ranks a second way: each option's place in the vocabulary sorted by logit (0 = the model's top token)
    order = logits.argsort(-1, descending=True)
    expected_rank = torch.stack([(order[e] == torch.tensor([3, 8, 40])[:, None]).nonzero()[:, 1] for e in range(2)])
    assert torch.equal(lens.rank[-1].long(), expected_rank)
    top = logits.argmax(-1)  # and the model's own top token, asked as an option, has rank 0
    with_top = logit_lens(model, two_example_batch, [[int(top[e]), 8, 40] for e in range(2)])
    assert (with_top.rank[-1][:, 0] == 0).all() and (with_top.rank[-1][:, 1:] > 0).all()


def test_lens_over_audio_positions(tiny_pair, two_example_batch):
    from lens_audio.analysis.lens import logit_lens_over_audio

    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)
    probs = logit_lens_over_audio(model, two_example_batch, [3, 8], example=1)
    n_audio = int(two_example_batch.audio_mask[1].sum())
    assert probs.shape == (4, n_audio, 2) and ((probs >= 0) & (probs <= 1)).all()
    with torch.no_grad():
        logits = model(two_example_batch)[1][two_example_batch.audio_mask[1]]
    assert torch.allclose(probs[-1], logits.softmax(-1)[:, [3, 8]], atol=1e-5)
