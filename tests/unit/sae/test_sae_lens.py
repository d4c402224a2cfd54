"""SAELens's `SAE` classes on a `HookedAudioLM` hook point (audio prompt), spliced in with a hook, checked against the
same SAE applied by hand between `stop_at_layer` and `start_at_layer`.

SAELens needs TransformerLens < 4, so it lives in its own environment (`pip install -e ".[sae]"` gives TransformerLens
3.9; CI runs this file there); where it is not installed the test is skipped.
"""

from __future__ import annotations

import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.testing import tiny_hf_model

sae_lens = pytest.importorskip(
    "sae_lens",
    reason="SAELens is not installed here: it needs TransformerLens < 4, so install it in its own environment with "
    "pip install -e '.[sae]' (TransformerLens 3.9).",
)

LAYER = 1
HOOK = f"blocks.{LAYER}.hook_resid_post"


@pytest.fixture(scope="module")
def model(processor):
    return HookedAudioLM.from_hf_model(tiny_hf_model(processor, seed=3, n_layers=3)[0], processor)


@pytest.fixture(scope="module")
def sae(model):
    torch.manual_seed(0)
    cfg = sae_lens.StandardSAEConfig(d_in=model.cfg.d_model, d_sae=4 * model.cfg.d_model)
    cfg.metadata.hook_name = HOOK
    sae = sae_lens.StandardSAE(cfg)
    with torch.no_grad():  # a bias so the reconstruction is visibly imperfect
        sae.b_enc.normal_(0, 0.1)
    return sae


def _splice(sae):
    return lambda resid, hook: sae(resid)


def test_sae_spliced_into_a_hook_point_equals_applying_it_by_hand(model, sae, two_example_batch):
    b = two_example_batch
    with torch.no_grad():
        clean = model(b)
        spliced = model.run_with_hooks(b, fwd_hooks=[(HOOK, _splice(sae))])
        resid = model(b, stop_at_layer=LAYER + 1)  # = blocks.LAYER.hook_resid_post
        by_hand = model(sae.decode(sae.encode(resid)), b.attention_mask, start_at_layer=LAYER + 1)
    valid = b.attention_mask.bool()
    assert (spliced - by_hand)[valid].abs().max() < 1e-5
    assert (spliced - clean)[valid].abs().max() > 1e-3  # the reconstruction is not the activation


def test_use_error_term_gives_back_the_clean_model_and_caches_features(model, sae, two_example_batch):
    b = two_example_batch
    sae.use_error_term = True
    try:
        features = {}
        with torch.no_grad():
            clean, cache = model.run_with_cache(b, names_filter=[HOOK])
            with sae.hooks(fwd_hooks=[("hook_sae_acts_post", lambda acts, hook: features.update(acts=acts))]):
                spliced = model.run_with_hooks(b, fwd_hooks=[(HOOK, _splice(sae))])
    finally:
        sae.use_error_term = False
    assert torch.allclose(spliced, clean, atol=1e-5)
    assert torch.allclose(features["acts"], sae.encode(cache[HOOK]), atol=1e-6)
    assert features["acts"].shape == (*cache[HOOK].shape[:2], sae.cfg.d_sae)
