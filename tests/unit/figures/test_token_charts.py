"""Truthful token charts (`plots.tokens`, used by the SAE dashboard, the explorer and the logit lens): one bar per
token even when texts collide, logits centred so a "lowest" panel holds no positive bar, bars sorted."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from lens_audio import plots
from lens_audio.plots.tokens import token_bars, unique_labels
from lens_audio.sae.dashboard import FeatureDashboard, decoder_logits

REPLACEMENT = "\ufffd"  # what a lone byte token decodes to


def test_colliding_texts_get_their_ids_and_distinct_ones_stay_plain():
    assert unique_labels([REPLACEMENT, "a", REPLACEMENT], [7, 8, 9]) == [f"'{REPLACEMENT}' #7", "'a'",
                                                                       f"'{REPLACEMENT}' #9"]
    assert unique_labels(["bell", "bell", "dog"], quote=False) == ["bell (1)", "bell (2)", "dog"]
    assert unique_labels([" the", "the"]) == ["' the'", "'the'"]  # repr keeps the space visible


def _stub(vocab: int = 40, d: int = 8, seed: int = 0):
    """A model whose first 12 tokens all decode to '�' (byte tokens), and an SAE feature on its residual stream."""
    g = torch.Generator().manual_seed(seed)
    w_u = torch.randn(d, vocab, generator=g) + 0.5  # a shared offset: uncentred logits would be mostly positive
    model = SimpleNamespace(W_U=w_u, tokenizer=SimpleNamespace(decode=lambda ids: REPLACEMENT if ids[0] < 12
                                                                 else f"t{ids[0]}"))
    sae = SimpleNamespace(cfg=SimpleNamespace(hook_name="blocks.2.hook_resid_post"),
                          W_dec=torch.ones(3, d) + 0.1 * torch.randn(3, d, generator=g))
    return model, sae


def test_decoder_logits_are_centred_and_carry_their_ids():
    model, sae = _stub()
    promoted, suppressed = decoder_logits(model, sae, 1, n=10)
    raw = (sae.W_dec[1] @ model.W_U).double().numpy()
    assert (raw > 0).sum() > 30  # before centring most logits are positive: the old "suppressed" panel showed them
    expected = raw - raw.mean()
    order = np.argsort(-expected)
    assert [p[2] for p in promoted] == order[:10].tolist() and [p[2] for p in suppressed] == order[::-1][:10].tolist()
    assert np.allclose([p[1] for p in promoted], expected[order[:10]], atol=1e-5)
    assert all(v <= 0 for _, v, _ in suppressed) and all(v >= 0 for _, v, _ in promoted)


def test_the_dashboard_draws_one_bar_per_token_sorted():
    model, sae = _stub()
    promoted, suppressed = decoder_logits(model, sae, 1, n=10)
    assert sum(text == REPLACEMENT for text, _, _ in promoted + suppressed) >= 2  # texts that collide
    board = FeatureDashboard("blocks.2.hook_resid_post", "text", 1, [], np.ones(5), promoted, suppressed, [], 1)
    fig = board.logits_chart()
    up, down = fig.data
    assert len(set(up.y)) == len(up.y) == 10 and len(set(down.y)) == len(down.y) == 10  # no two tokens merged
    assert list(up.x) == sorted(up.x) and list(down.x) == sorted(down.x, reverse=True)  # largest / lowest on top
    assert max(down.x) <= 0
    titles = [a.text for a in fig.layout.annotations]
    assert "suppressed (lowest)" in titles and "centred" in fig.layout.title.text
    # two-element pairs (text, value) still draw, labelled uniquely without ids
    bar = token_bars([(REPLACEMENT, 0.3), (REPLACEMENT, 0.9), ("x", 0.5)], "#000")
    assert list(bar.y) == [f"'{REPLACEMENT}' (2)", "'x'", f"'{REPLACEMENT}' (1)"] and list(bar.x) == [0.3, 0.5, 0.9]


def test_the_logit_lens_keeps_equal_option_names_apart():
    lens = SimpleNamespace(prob=torch.rand(3, 1, 2), rank=torch.zeros(3, 1, 2, dtype=torch.long),
                           labels=["0_pre", "1_pre", "final_post"])
    fig = plots.logit_lens_plot(lens, ["bell", "bell"])
    assert [t.name for t in fig.data] == ["bell (1)", "bell (2)"]
