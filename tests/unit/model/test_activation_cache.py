"""TransformerLens's ActivationCache helpers give exact answers on HookedAudioLM's caches."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import ActivationCache


@pytest.fixture
def model(tiny_pair):
    return tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)[1]


@pytest.fixture
def run(model, two_example_batch):
    with torch.no_grad():
        return model.run_with_cache(two_example_batch)


def test_cache_has_decoder_and_audio_hooks(model, run):
    _, cache = run
    assert isinstance(cache, ActivationCache)
    for name in ["hook_embed", "blocks.0.attn.hook_pattern", "blocks.2.mlp.hook_post", "ln_final.hook_scale",
                 "audio.hook_mel", "audio.blocks.1.attn.hook_pattern", "audio.hook_audio_embeds"]:
        assert name in cache.cache_dict, name
    assert not any(k.endswith("attn.hook_result") for k in cache.keys()), "hook_result is on demand only"
    assert cache["pattern", 1].shape[:2] == (2, model.cfg.n_heads)


def test_accumulated_resid_with_final_norm_reproduces_logits(model, run):
    logits, cache = run
    stack = cache.accumulated_resid(apply_ln=True)
    assert stack.shape[0] == model.cfg.n_layers + 1
    final = stack[-1] @ model.W_U  # apply_ln uses model.ln_final, weight included
    assert (final - logits).abs().max() < 1e-4


def test_decompose_resid_sums_to_final_residual(model, run):
    _, cache = run
    parts, labels = cache.decompose_resid(return_labels=True)
    assert labels[0] == "embed" and len(labels) == 1 + 2 * model.cfg.n_layers
    assert (parts.sum(0) - cache["resid_post", model.cfg.n_layers - 1]).abs().max() < 1e-4


def test_stack_head_results_sum_to_attention_outputs(model, run):
    _, cache = run
    heads = cache.stack_head_results(layer=model.cfg.n_layers)
    n = model.cfg.n_heads
    for layer in range(model.cfg.n_layers):
        summed = heads[layer * n : (layer + 1) * n].sum(0)
        assert (summed - cache["attn_out", layer]).abs().max() < 1e-4


def test_logit_attrs_of_full_decomposition_equal_the_logit_difference(model, run):
    logits, cache = run
    parts = cache.decompose_resid(pos_slice=-1)
    a, b = 11, 42
    attrs = cache.logit_attrs(parts, tokens=torch.tensor([a, a]), incorrect_tokens=torch.tensor([b, b]), pos_slice=-1)
    expected = logits[:, -1, a] - logits[:, -1, b]
    assert (attrs.sum(0) - expected).abs().max() < 1e-4


def test_hook_result_on_demand_matches_attention_output(model, two_example_batch):
    seen = {}
    hooks = [("blocks.1.attn.hook_result", lambda x, hook: seen.__setitem__("result", x)),
             ("blocks.1.hook_attn_out", lambda x, hook: seen.__setitem__("out", x))]
    with torch.no_grad():
        plain = model(two_example_batch)
        hooked = model.run_with_hooks(two_example_batch, fwd_hooks=hooks)
    assert seen["result"].shape[2:] == (model.cfg.n_heads, model.cfg.d_model)
    assert (seen["result"].sum(2) - seen["out"]).abs().max() < 1e-5
    assert (plain - hooked).abs().max() < 1e-5
    model.set_use_attn_result(True)
    try:
        _, cache = model.run_with_cache(two_example_batch)
        assert "blocks.0.attn.hook_result" in cache.cache_dict
    finally:
        model.set_use_attn_result(False)


def test_zeroing_a_heads_W_O_removes_its_contribution(tiny_pair, two_example_batch):
    import copy

    hf, base = tiny_pair(n_heads=4, n_kv_heads=2, seed=5)
    model = copy.deepcopy(base)
    with torch.no_grad():
        model.blocks[0].attn.W_O[2] = 0.0
        _, cache = model.run_with_cache(
            two_example_batch, names_filter=lambda n: n.startswith("blocks.0.attn.hook_result")
        )
    assert cache["blocks.0.attn.hook_result"][:, :, 2].abs().max() == 0
    assert base.blocks[0].attn.W_O[2].abs().max() > 0, "deepcopy must not share weights"


def test_hooks_context_and_reset(model, two_example_batch):
    def kill(x, hook):
        return torch.zeros_like(x)
    with torch.no_grad():
        clean = model(two_example_batch)
        with model.hooks(fwd_hooks=[("hook_embed", kill)]):
            dead = model(two_example_batch)
        again = model(two_example_batch)
    assert not torch.allclose(clean, dead)
    assert torch.equal(clean, again)
