"""The silence twin's prefix cached across calls: the same numbers as without it, and never stale."""

from __future__ import annotations

import copy

import pytest
import torch

from lens_audio import make_batch
from lens_audio.analysis.steering import adaptive_direction, final_residuals
from lens_audio.analysis.steering.silence_cache import silence_prefix_cache, weight_signature
from lens_audio.analysis.steering.silence_prefix import shared_silence_residuals
from tests.helpers import silence_fixtures
from tests.helpers.reference import waveform

model, batch, single = silence_fixtures.model, silence_fixtures.batch, silence_fixtures.single  # shared fixtures

LAYERS = [0, 2]


def test_cold_and_warm_cache_equal_the_uncached_path_exactly(model, batch):
    silence_prefix_cache(model, max_bytes=0)
    uncached = shared_silence_residuals(model, batch, LAYERS)
    store = silence_prefix_cache(model, max_bytes=1 << 30)
    cold = shared_silence_residuals(model, batch, LAYERS)
    assert (store.hits, store.misses, len(store.entries)) == (0, 2, 2)
    warm = shared_silence_residuals(model, batch, LAYERS)
    assert store.hits == 2
    assert torch.equal(cold, uncached) and torch.equal(warm, uncached)
    full = final_residuals(model, batch.silence_twin(), LAYERS)  # the plain silence pass, computed a second way
    assert torch.allclose(warm, full, atol=1e-5)


def test_a_warm_cache_serves_batch_one_and_shallower_calls(model, single, batch):
    store = silence_prefix_cache(model)
    full = final_residuals(model, single.silence_twin(), LAYERS)
    audio = final_residuals(model, single, LAYERS)
    for _ in range(2):
        assert torch.allclose(adaptive_direction(model, single, LAYERS), (audio - full).mean(1), atol=1e-5)
    assert store.hits == 1  # the second call took the prefix from the cache
    shallow = shared_silence_residuals(model, single, [1])  # layers 0-1 of the 3 stored
    assert store.hits == 2 and torch.allclose(shallow, final_residuals(model, single.silence_twin(), [1]), atol=1e-5)
    store.clear()
    shared_silence_residuals(model, single, [0])
    deeper = shared_silence_residuals(model, single, [2])  # the entry holds layer 0 only: a miss, recomputed
    assert store.misses == 3 and store.entries[next(iter(store.entries))].depth == 3
    assert torch.allclose(deeper, final_residuals(model, single.silence_twin(), [2]), atol=1e-5)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.blocks[0].attn._W_K.mul_(1.5),  # in place under no_grad, through a TransformerLens-layout view
        lambda m: m.blocks[1].attn.v_proj.weight.copy_(torch.randn_like(m.blocks[1].attn.v_proj.weight)),
        lambda m: m.load_state_dict({k: v * 0.9 for k, v in m.state_dict().items()}),
        lambda m: setattr(m.blocks[0].attn.q_proj, "weight", torch.nn.Parameter(m.blocks[0].attn.q_proj.weight * 2)),
        lambda m: m.audio.conv1.weight.mul_(3.0),  # the audio encoder: the silent clips' embeddings change
    ],
    ids=["view-mul_", "copy_", "load_state_dict", "replaced-parameter", "audio-encoder"],
)
def test_a_weight_edit_never_reuses_a_stale_entry(model, single, edit):
    store = silence_prefix_cache(model)
    before = shared_silence_residuals(model, single, LAYERS)
    signature = weight_signature(model)
    with torch.no_grad():
        edit(model)
    assert weight_signature(model) != signature
    after = shared_silence_residuals(model, single, LAYERS)
    assert store.hits == 0  # the edit emptied the cache: the prefix ran again
    expected = final_residuals(model, single.silence_twin(), LAYERS)  # the edited model's plain silence pass
    assert torch.allclose(after, expected, atol=1e-5) and not torch.allclose(after, before, atol=1e-4)


def test_dtype_changes_and_weight_processing_change_the_signature(model, tiny_pair):
    signature = weight_signature(model)
    model.to(torch.float64)
    assert weight_signature(model) != signature
    raw = copy.deepcopy(tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)[0])
    from lens_audio import HookedAudioLM

    unfolded = HookedAudioLM.from_hf_model(raw, fold_ln=False)
    signature = weight_signature(unfolded)
    unfolded.process_weights_(fold_ln=True)
    assert weight_signature(unfolded) != signature


def test_hooks_bypass_the_cache(model, single):
    store = silence_prefix_cache(model)
    shared_silence_residuals(model, single, LAYERS)
    seen = []
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda resid, hook: seen.append(resid.shape))]):
        assert shared_silence_residuals(model, single, LAYERS) is None  # the caller runs the full silence pass
    handle = model.blocks[0].register_forward_hook(lambda module, args, out: None)  # a plain torch hook
    try:
        assert shared_silence_residuals(model, single, LAYERS) is None
    finally:
        handle.remove()
    assert store.hits == 0


def test_memory_is_bounded_least_recently_used_first(model, processor):
    store = silence_prefix_cache(model)
    batches = [make_batch(processor, [waveform(s, 1)], ["Why?"], sampling_rate=16000) for s in (0.4, 0.8, 1.2)]
    sizes = []
    for b in batches:
        shared_silence_residuals(model, b, LAYERS)
        sizes.append(store.entries[next(reversed(store.entries))].nbytes)
    assert sizes[0] < sizes[1] < sizes[2]  # longer clips, more keys and values
    store.clear()
    silence_prefix_cache(model, max_bytes=sizes[1] + sizes[2])  # room for the last two, not all three
    for b in batches:
        shared_silence_residuals(model, b, LAYERS)
    assert store.nbytes == sizes[1] + sizes[2] <= store.max_bytes  # the first, least recently used, went
    shared_silence_residuals(model, batches[1], LAYERS)  # still there: a hit, now the most recent
    shared_silence_residuals(model, batches[0], LAYERS)  # recomputed; the 1.2 s entry (least recent) goes
    assert (store.hits, store.misses) == (1, 7) and store.nbytes == sizes[0] + sizes[1]
    with pytest.raises(ValueError, match="max_bytes"):
        silence_prefix_cache(model, max_bytes=-1)

