"""Head-ablation scans: batched and unbatched agree, dead heads do nothing, kinds behave as defined."""

from __future__ import annotations

import copy

import pytest
import torch

from lens_audio.analysis.ablation import cumulative_ablation, scan_heads


@pytest.fixture
def setup(tiny_pair, two_example_batch):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2, seed=3)
    choices = [[5, 9, 13, 21], [5, 9, 13, 21]]
    return model, two_example_batch, choices, [0, 2]


@pytest.mark.parametrize("kind", ["zero", "mean", "silence"])
def test_batched_and_unbatched_scans_agree(setup, kind):
    model, batch, choices, answers = setup
    one = scan_heads(model, batch, choices, answers, kind=kind, heads_per_pass=1)
    many = scan_heads(model, batch, choices, answers, kind=kind, heads_per_pass=8)
    assert torch.allclose(one.margin_change, many.margin_change, atol=1e-5)
    assert torch.equal(one.accuracy, many.accuracy)
    assert one.margin_change.abs().max() > 1e-4


@pytest.mark.parametrize("kind, user_hook", [("zero", False), ("silence", False), ("zero", True)])
def test_scan_equals_one_plain_hooked_forward_per_head(setup, kind, user_hook):
    """The scan (replicas start at the ablated layer) against the naive way: a whole forward per head; with
    a user's hook active at the layer a pass starts from, it still fires once, as in the whole forward."""
    model, batch, choices, answers = setup
    push = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    hooks = [("blocks.1.hook_resid_pre", lambda resid, hook: resid + push)] if user_hook else []
    with model.hooks(fwd_hooks=hooks):
        _check_scan_against_plain_forwards(model, batch, choices, answers, kind)


def _check_scan_against_plain_forwards(model, batch, choices, answers, kind):
    scan = scan_heads(model, batch, choices, answers, kind=kind, heads_per_pass=3)
    rows, final = torch.arange(batch.batch_size), batch.final_position
    choice, answer = torch.tensor(choices), torch.tensor(answers)

    def margin(logits):
        scores = logits[rows, final][rows[:, None], choice]
        others = scores.clone()
        others[rows, answer] = float("-inf")
        return (scores[rows, answer] - others.max(-1).values).mean()

    _, silence = model.run_with_cache(batch.silence_twin())
    base = margin(model(batch))
    for layer, head in [(0, 1), (1, 3)]:
        name = f"blocks.{layer}.attn.hook_z"

        def ablate(z, hook, name=name, head=head):
            z = z.clone()
            z[:, :, head] = 0.0 if kind == "zero" else silence[name][:, :, head]
            return z

        expected = margin(model.run_with_hooks(batch, fwd_hooks=[(name, ablate)])) - base
        assert torch.isclose(scan.margin_change[layer, head], expected, atol=1e-5), (layer, head)


def test_zeroing_a_dead_head_changes_nothing(setup):
    model, batch, choices, answers = setup
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.blocks[0].attn.W_O[1] = 0.0
    scan = scan_heads(model, batch, choices, answers, kind="zero")
    assert scan.margin_change[0, 1].abs() < 1e-6


def test_cumulative_and_errors(setup):
    model, batch, choices, answers = setup
    scan = scan_heads(model, batch, choices, answers)
    change, accuracy = cumulative_ablation(model, batch, choices, answers, ranking=[(1, 2), (0, 3)])
    assert torch.isclose(change[0], scan.margin_change[1, 2], atol=1e-5) and change.shape == accuracy.shape == (2,)
    with pytest.warns(DeprecationWarning, match="margin_change"):
        assert scan.logit_diff_change is scan.margin_change  # the old name still reads, with a warning
    with pytest.raises(ValueError, match=r"head \(5, 0\) does not exist"):
        cumulative_ablation(model, batch, choices, answers, ranking=[(5, 0)])
