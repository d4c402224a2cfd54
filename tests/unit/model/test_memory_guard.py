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
