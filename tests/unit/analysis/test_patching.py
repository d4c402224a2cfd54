"""Audio-aware activation patching: exact restoration, no-op patches, dead heads, and TransformerLens's helpers."""

from __future__ import annotations

import copy

import pytest
import torch
from transformer_lens import patching as tl_patching

from lens_audio.analysis.patching import BoundAudioModel, normalized_logit_diff, patch_heads, patch_residual_by_position


@pytest.fixture
def setup(tiny_pair, two_example_batch):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2, seed=7)
    clean, corrupted = two_example_batch, two_example_batch.silence_twin()
    with torch.no_grad():
        logits = model(clean)[torch.arange(2), clean.final_position]
    top2 = logits.topk(2, dim=-1).indices
    return model, clean, corrupted, top2[:, 0], top2[:, 1]


def test_patching_everything_restores_exactly_and_nothing_does_nothing(setup):
    model, clean, corrupted, correct, wrong = setup
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    with torch.no_grad():
        assert metric(model(clean)).item() == pytest.approx(1.0, abs=1e-6)
        assert metric(model(corrupted)).item() == pytest.approx(0.0, abs=1e-6)
    table, labels = patch_residual_by_position(model, clean, corrupted, metric)
    assert labels[0] == "audio" and table.shape == (model.cfg.n_layers, len(labels))
    # At layer 0 the clean and corrupted residuals differ only at audio positions: patching them restores fully.
    assert table[0, 0].item() == pytest.approx(1.0, abs=1e-5)
    assert table[0, 1:].abs().max().item() < 1e-6


def test_transformer_lens_helpers_run_on_audio(setup):
    model, clean, corrupted, correct, wrong = setup
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    _, clean_cache = model.run_with_cache(clean)
    bound = BoundAudioModel(model, corrupted)
    result = tl_patching.get_act_patch_resid_pre(bound, corrupted.input_ids, clean_cache, metric)
    assert result.shape == (model.cfg.n_layers, corrupted.input_ids.shape[1])
    audio = clean.audio_mask[0]
    assert result[0, ~audio].abs().max().item() < 1e-6  # text positions are identical at layer 0
    # lens_audio's map (replicas start at the patched layer) equals TransformerLens's whole forwards per position
    table, _ = patch_residual_by_position(model, clean, corrupted, metric, group_audio=False, columns_per_pass=3)
    assert torch.allclose(table, result.cpu(), atol=1e-4)  # a metric normalised by the clean-corrupted span
    mid = tl_patching.get_act_patch_resid_mid(bound, corrupted.input_ids, clean_cache, metric)
    hooked, _ = patch_residual_by_position(model, clean, corrupted, metric, group_audio=False, site="hook_resid_mid")
    assert torch.allclose(hooked, mid.cpu(), atol=1e-4)  # other sites: one whole hooked forward per cell
    with pytest.raises(ValueError, match="share their token layout"):
        bound.run_with_hooks(corrupted.input_ids[:, 1:])


def test_residual_patching_with_a_user_hook_active(setup):
    """A hook the user has on the patched layer fires once per patched run, before the patch, as in a whole run."""
    model, clean, corrupted, correct, wrong = setup
    push = 5 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    with model.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", lambda resid, hook: resid + push)]):
        metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
        _, clean_cache = model.run_with_cache(clean)
        expected = tl_patching.get_act_patch_resid_pre(
            BoundAudioModel(model, corrupted), corrupted.input_ids, clean_cache, metric
        )
        table, _ = patch_residual_by_position(model, clean, corrupted, metric, group_audio=False)
    assert torch.allclose(table, expected.cpu(), atol=1e-3)  # the push shrinks the span: float noise grows
    assert expected.abs().max() > 0.5  # the map is not trivially zero (a push applied twice was off by ~16)


def test_a_head_with_zero_output_weights_has_no_effect(setup, two_example_batch):
    model, clean, corrupted, correct, wrong = setup
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.blocks[1].attn.W_O[3] = 0.0
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    table = patch_heads(model, clean, corrupted, metric)
    assert table[1, 3].abs().item() < 1e-6
    assert table.abs().max().item() > 1e-3  # other heads do matter


def test_attribution_patching_ranks_heads_like_exact_patching(setup):
    from scipy import stats

    from lens_audio.analysis.patching import attribution_patching

    model, clean, corrupted, correct, wrong = setup
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    attribution = attribution_patching(model, clean, corrupted, metric)
    exact = patch_heads(model, clean, corrupted, metric)
    assert attribution.per_head.shape == exact.shape == (model.cfg.n_layers, model.cfg.n_heads)
    assert stats.spearmanr(attribution.per_head.flatten(), exact.flatten()).statistic > 0.8
    audio = clean.audio_mask[0]
    assert attribution.resid[0, ~audio].abs().max() == 0  # clean and corrupted text positions are identical at layer 0
    assert attribution.resid[0, audio].abs().sum() > 0
    assert not any(p.grad is not None for p in model.parameters()), "weights must not collect gradients"


def test_head_patching_by_position(setup):
    model, clean, corrupted, correct, wrong = setup
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    table, labels = patch_heads(model, clean, corrupted, metric, by_position=True)
    assert labels[0] == "audio" and table.shape == (model.cfg.n_layers, model.cfg.n_heads, len(labels))
    # Layer-0 heads at text positions before the audio see identical inputs in both runs (causal attention).
    before_audio = clean.audio_spans[0][0][0]
    assert table[0, :, 1 : 1 + before_audio].abs().max() < 1e-6
    assert table[:, :, 1 + before_audio :].abs().max() > 1e-3  # after the audio, text positions carry its effect


def test_transformer_lens_layer_and_head_helpers(setup):
    model, clean, corrupted, correct, wrong = setup
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    _, clean_cache = model.run_with_cache(clean)
    bound = BoundAudioModel(model, corrupted)
    n_pos = corrupted.input_ids.shape[1]
    attn = tl_patching.get_act_patch_attn_out(bound, corrupted.input_ids, clean_cache, metric)
    mlp = tl_patching.get_act_patch_mlp_out(bound, corrupted.input_ids, clean_cache, metric)
    heads = tl_patching.get_act_patch_attn_head_out_all_pos(bound, corrupted.input_ids, clean_cache, metric)
    assert attn.shape == mlp.shape == (model.cfg.n_layers, n_pos) and heads.shape == (
        model.cfg.n_layers,
        model.cfg.n_heads,
    )
    # same up to float rounding (the full cache runs the explicit attention path, patch_heads the SDPA one)
    assert torch.allclose(heads, patch_heads(model, clean, corrupted, metric), atol=1e-3)


def test_clip_columns_follow_the_prompt(setup):
    """group_audio='clip': each clip one column at its place in the prompt; with one clip it equals the 'audio'
    column, and the text columns equal the grouped map's."""
    model, clean, corrupted, correct, wrong = setup
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    grouped, labels = patch_residual_by_position(model, clean, corrupted, metric)
    by_clip, clip_labels = patch_residual_by_position(model, clean, corrupted, metric, group_audio="clip")
    assert len(clean.audio_spans[0]) == 1 and clip_labels.count("Audio 1") == 1
    where = clip_labels.index("Audio 1")
    tokens = model.to_str_tokens(clean.input_ids[0])
    assert clip_labels[:where] == tokens[: clean.audio_spans[0][0][0]]  # the text before the clip, in order
    assert torch.allclose(by_clip[:, where], grouped[:, 0], atol=1e-6)
    rest = [c for c in range(len(clip_labels)) if c != where]
    assert torch.allclose(by_clip[:, rest], grouped[:, 1:], atol=1e-6)
    with pytest.raises(ValueError, match="group_audio must be"):
        patch_residual_by_position(model, clean, corrupted, metric, group_audio="clips")


@pytest.mark.parametrize("site", ["hook_resid_pre", "hook_resid_mid"])
def test_a_share_of_the_layers_is_those_rows_of_the_whole_table_and_the_sharded_call_is_the_plain_one(setup, site):
    from lens_audio.benchmark.parallel import sharded_patch_residual_by_position

    model, clean, corrupted, correct, wrong = setup
    metric = normalized_logit_diff(model, clean, corrupted, correct, wrong)
    whole, labels = patch_residual_by_position(model, clean, corrupted, metric, site=site)
    share, share_labels = patch_residual_by_position(model, clean, corrupted, metric, site=site, layers=[1])
    assert share_labels == labels and torch.isnan(share[0]).all()
    assert torch.allclose(share[1], whole[1], atol=1e-6) and not torch.isnan(whole).any()
    sharded, _ = sharded_patch_residual_by_position(model, clean, corrupted, metric, site=site)  # one process
    assert torch.equal(sharded, whole)
    with pytest.raises(ValueError, match="decoder layers"):
        patch_residual_by_position(model, clean, corrupted, metric, layers=[model.cfg.n_layers])
