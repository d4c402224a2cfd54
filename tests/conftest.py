"""Shared fixtures: offline processors, random tiny models of each family, and reference runs of transformers."""

from __future__ import annotations

import pytest

from lens_audio import HookedAudioLM, make_batch
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.testing import tiny_hf_model
from tests.helpers.reference import CHUNK_SECONDS, N_MELS, waveform


@pytest.fixture(scope="session")
def processor():
    return build_offline_processor(n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS)


@pytest.fixture(scope="session")
def tiny_pair(processor):
    """Factory: (transformers model, HookedAudioLM sharing its weights) for a tiny random config."""
    made = {}

    def make(attn_implementation: str = "eager", seed: int = 0, **config):
        key = (attn_implementation, seed, tuple(sorted(config.items())))
        if key not in made:
            hf, _ = tiny_hf_model(
                processor,
                seed=seed,
                attn_implementation=attn_implementation,
                n_mels=N_MELS,
                chunk_seconds=CHUNK_SECONDS,
                **config,
            )
            made[key] = (hf, HookedAudioLM.from_hf_model(hf, processor))
        return made[key]

    return make


@pytest.fixture
def two_example_batch(processor):
    """Two examples with different audio lengths, so the shorter prompt is padded."""
    return make_batch(
        processor, [waveform(1.5, 1), waveform(0.4, 2)], ["What is the sound?", "Is this music?"], sampling_rate=16000
    )
