"""Fixtures of the TransformerLens-facing tests (conformance, circuits and text): one tiny grouped-query model
(2 layers), with and without weight processing, and its transformers twin."""

from __future__ import annotations

import pytest

from lens_audio import HookedAudioLM
from lens_audio.testing import tiny_hf_model

GQA = {"n_heads": 4, "n_kv_heads": 2, "n_layers": 2}


@pytest.fixture(scope="module")
def hf(processor):
    return tiny_hf_model(processor, seed=11, **GQA)[0]


@pytest.fixture(scope="module")
def model(hf, processor):
    return HookedAudioLM.from_hf_model(hf, processor)


@pytest.fixture(scope="module")
def raw(hf, processor):
    return HookedAudioLM.from_hf_model(hf, processor, fold_ln=False)
