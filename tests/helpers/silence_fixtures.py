"""Fixtures shared by the silence-cache and one-pass steering tests: a private model and prompts whose silence
twins share (or cannot share) a prefix. Import them by name into a test module to use them."""

from __future__ import annotations

import copy

import pytest

from lens_audio import make_batch
from tests.helpers.reference import waveform


@pytest.fixture
def model(tiny_pair):
    """A private copy (these tests edit weights and resize the cache)."""
    return copy.deepcopy(tiny_pair(n_heads=4, n_kv_heads=2, n_layers=3)[1])


@pytest.fixture
def batch(processor):
    """Rows 0 and 2 share a silence prefix; row 1 has a longer clip (a prefix of its own)."""
    clips = [waveform(0.8, 1), waveform(1.2, 2), waveform(0.8, 3)]
    return make_batch(processor, clips, ["What is the sound?", "Why?", "Is it loud, tell me?"], sampling_rate=16000)


@pytest.fixture
def single(processor):
    """Batch 1: nothing to share within the call, so only the cache can save the prefix."""
    return make_batch(processor, [waveform(0.8, 7)], ["Which animal is it?"], sampling_rate=16000)
