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


def test_options_are_read_in_chunks_that_bound_the_logits_held(tiny_pair, two_example_batch):
    """`read_options` unembeds a bounded number of rows at a time, and chunking changes no number."""
    from lens_audio.analysis.lens import read_options

    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)
    with torch.no_grad():
        _, cache = model.run_with_cache(two_example_batch, names_filter="blocks.1.hook_resid_post")
    resid = cache["blocks.1.hook_resid_post"].flatten(0, 1)  # every position of both rows
    options = torch.tensor([[3, 8, 40]]).expand(resid.shape[0], -1)
    seen = []
    handle = model.unembed.register_forward_hook(lambda module, args, out: seen.append(out.shape[0]))
    try:
        with torch.no_grad():
            whole = read_options(model, resid, options, chunk_bytes=2**40)
            chunk_bytes = 4 * model.cfg.d_vocab * 4 * 3  # three rows of logits (and their option columns)
            chunked = read_options(model, resid, options, chunk_bytes=chunk_bytes)
    finally:
        handle.remove()
    assert seen[0] == resid.shape[0] and max(seen[1:]) == 3 and sum(seen[1:]) == resid.shape[0]
    assert torch.allclose(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    with torch.no_grad():  # a second way: the softmax of the whole logits
        logits = model.unembed(model.ln_final(resid)).float()
    assert torch.allclose(chunked[0], logits.softmax(-1)[:, [3, 8, 40]], atol=1e-6)
