"""Fixtures of the paper tests that need no trained model: MMAU-like items (no hints) on a tiny random model."""

from __future__ import annotations

import copy

import pytest

from lens_audio.benchmark import load_mmau
from lens_audio.organisms.benchmark_writer import write_benchmark

# options of 2, 4 and 6 choices (MMAU has 2-8), distinct first tokens with the test tokenizer
RAGGED = [["cat", "a"], ["cat", "dog bark", "melody", "bell"], ["cat", "a", "dog bark", "melody", "bell", "chord"]]
NOT_MMAU = ("hint", "hinted_choice", "snr_db")  # fields MMAU items do not have


@pytest.fixture(scope="module")
def mmau_like(tmp_path_factory):
    """Items of the workshop writer made to look like MMAU's: no hint fields, 2, 4 or 6 choices, splits assigned in
    turn (calibration, dev, test)."""
    bench = write_benchmark(tmp_path_factory.mktemp("bench") / "w", seed=3, n_clips=6, progress=False)
    items = []
    for n, item in enumerate(copy.deepcopy(load_mmau(bench / "workshop.json"))):
        for key in NOT_MMAU:
            item.pop(key, None)
        item["sub-category"] = ("Acoustic scene", "Music genre")[n % 2]  # MMAU-like, no hint wording
        item["choices"] = RAGGED[(n // 3 + n) % 3]
        item["answer"] = item["choices"][n % 2]
        item["split"] = ("calibration", "dev", "test")[n % 3] if n < 15 else "test"
        items.append(item)
    return items


@pytest.fixture
def tiny(tiny_pair):
    """The shared tiny 2-layer, 4-head random model (do not hook it)."""
    return tiny_pair(n_heads=4, n_kv_heads=2, n_layers=2)[1]
