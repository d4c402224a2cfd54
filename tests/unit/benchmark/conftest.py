"""Fixtures of the benchmark tests: a small workshop benchmark, and a tiny model of the test's own to edit or hook."""

from __future__ import annotations

import copy

import pytest

from lens_audio.organisms.benchmark_writer import write_benchmark


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory):
    """A 12-item workshop benchmark (seed 3), written once per test module."""
    return write_benchmark(tmp_path_factory.mktemp("bench") / "w", seed=3, n_clips=2, progress=False) / "workshop.json"


@pytest.fixture
def own_model(tiny_pair):
    """A copy of the tiny 2-layer, 4-head model: a test may hook, splice or edit it."""
    return copy.deepcopy(tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)[1])
