"""Memory before work: the cache estimate equals what a cache holds, and a forward that would not fit is refused
up front, in one line naming the option that lowers it (tested by forcing a low limit)."""

from __future__ import annotations

import pytest
import torch

from lens_audio.model import memory


def _held(cache) -> int:
    return sum(t.numel() * t.element_size() for t in cache.values())


@pytest.fixture
def limit():
    yield memory.set_memory_limit
    memory.set_memory_limit(None)


def test_the_cache_estimate_equals_what_the_cache_holds(tiny_pair, two_example_batch):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)
    for names_filter in (None, lambda n: n.endswith("hook_pattern"), ["blocks.0.hook_resid_post", "audio.hook_mel"]):
        with torch.no_grad():
            _, cache = model.run_with_cache(two_example_batch, names_filter=names_filter, return_cache_object=False)
        assert sorted(memory.names_from_filter(model, names_filter)) == sorted(cache), names_filter
        estimate = memory.cache_bytes(model, two_example_batch, cache.keys())
        assert estimate == _held(cache), names_filter


def test_a_cache_over_the_limit_is_refused_before_any_forward(tiny_pair, two_example_batch, limit):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)
    with torch.no_grad():
        _, cache = model.run_with_cache(two_example_batch, names_filter=None, return_cache_object=False)
        whole = _held(cache)
        _, small = model.run_with_cache(two_example_batch, names_filter="blocks.1.hook_resid_post",
                                        return_cache_object=False)
    limit(whole // 2)
    calls = []
    handle = model.blocks[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(memory.NotEnoughMemory, match="names_filter") as refused:
            model.run_with_cache(two_example_batch)
        assert calls == [], "refused before the forward ran"
        assert "GiB limit" in str(refused.value) and "\n" not in str(refused.value)
        with torch.no_grad():  # a filter that fits runs
            _, kept = model.run_with_cache(two_example_batch, names_filter="blocks.1.hook_resid_post",
                                           return_cache_object=False)
        assert torch.equal(kept["blocks.1.hook_resid_post"], small["blocks.1.hook_resid_post"])
    finally:
        handle.remove()


def test_limits_parse_and_the_environment_sets_one(monkeypatch, limit):
    assert memory.parse_bytes("24GiB") == 24 * 2**30 and memory.parse_bytes("500MB") == 500 * 10**6
    for bad in ("lots", "-1GiB", "nanGB", "0"):
        with pytest.raises(ValueError, match="memory limit"):
            memory.parse_bytes(bad)
    assert memory.memory_limit("cpu") is None  # CPU: unguarded unless a limit is set
    monkeypatch.setenv(memory.ENVIRONMENT, "1MiB")
    assert memory.memory_limit("cpu") == 2**20
    limit("2MiB")
    assert memory.memory_limit("cpu") == 2 * 2**20  # the call wins over the environment


def _saved_by_autograd(model, batch) -> int:
    """Bytes autograd keeps for the backward pass of a corrupted run as attribution patching makes it, counted from
    the saved tensors themselves (each storage once), plus the float32 logits."""
    storages: dict[int, int] = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    leaf = lambda x, hook: x.detach().requires_grad_(True)  # noqa: E731
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model.run_with_hooks(batch, fwd_hooks=[("hook_embed", leaf)])
    return sum(storages.values()) + logits.numel() * 4


def test_the_attribution_estimate_covers_what_autograd_keeps(tiny_pair, two_example_batch):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)
    estimate = memory.attribution_bytes(model, two_example_batch)
    saved = _saved_by_autograd(model, two_example_batch)
    assert saved <= estimate <= 2.5 * saved  # safe, and refusing nothing that would fit by much


def test_attribution_over_the_limit_is_refused_and_the_controls_split_their_batch(tiny_pair, two_example_batch,
                                                                                  limit):
    from lens_audio.analysis import patching
    from lens_audio.analysis.patching import attribution_patching
    from lens_audio.analysis.validity import silence_output_attribution

    _, model = tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)
    batch, choices, answers = two_example_batch, [[5, 6, 7], [8, 9, 10]], [0, 2]
    whole = silence_output_attribution(model, batch, choices, answers)
    per_row = memory.attribution_bytes(model, batch[:1])
    limit(per_row + 1)  # one row fits, two do not
    metric = lambda logits: logits[:, -1, 0].sum()  # noqa: E731
    with pytest.raises(memory.NotEnoughMemory, match=r"attribution patching on a batch of 2 .*pass 1 rows at a time"):
        attribution_patching(model, batch.silence_twin(), batch, metric)
    calls = []
    real = patching.attribution_patching
    import lens_audio.analysis.validity as validity

    def counted(model, clean, corrupted, *args, **kwargs):
        calls.append(corrupted.batch_size)
        return real(model, clean, corrupted, *args, **kwargs)

    validity.attribution_patching = counted
    try:
        split = silence_output_attribution(model, batch, choices, answers)
    finally:
        validity.attribution_patching = real
    assert calls == [1, 1]
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-4)  # the row-weighted mean of the rows' effects
    limit(per_row // 2)  # not even one row: refused, saying so
    with pytest.raises(memory.NotEnoughMemory, match="not even one row fits"):
        silence_output_attribution(model, batch, choices, answers)
