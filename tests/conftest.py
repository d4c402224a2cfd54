"""Shared fixtures: offline processors, random tiny models of each family, and reference runs of transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_audio import HookedAudioLM, make_batch
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.model.family import FAMILIES
from lens_audio.model.hooked_audio_lm import position_ids_from_mask
from lens_audio.testing import tiny_hf_model

N_MELS, CHUNK_SECONDS = 16, 2


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


def waveform(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture
def two_example_batch(processor):
    """Two examples with different audio lengths, so the shorter prompt is padded."""
    return make_batch(
        processor, [waveform(1.5, 1), waveform(0.4, 2)], ["What is the sound?", "Is this music?"], sampling_rate=16000
    )


def reference_run(hf, batch, **kwargs):
    """transformers' logits, per-layer residuals (decoder layer outputs) and projected audio `[clips, tokens, d]`,
    with padding-aware positions; the inputs are named as the model's family names them."""
    layers = hf.model.language_model.layers
    captured: dict[str, torch.Tensor] = {}
    handles = [
        layer.register_forward_hook(lambda m, i, o, n=n: captured.__setitem__(n, o[0] if isinstance(o, tuple) else o))
        for n, layer in enumerate(layers)
    ]
    handles.append(
        hf.model.multi_modal_projector.register_forward_hook(lambda m, i, o: captured.__setitem__("audio", o))
    )
    position_ids = position_ids_from_mask(batch.attention_mask)
    try:
        with torch.no_grad():
            logits = hf(**hf_inputs(hf, batch), position_ids=position_ids, **kwargs).logits
    finally:
        for h in handles:
            h.remove()
    if "audio" in captured and batch.input_features is not None:  # Voxtral projects a flat [clips * tokens, d]
        captured["audio"] = captured["audio"].reshape(batch.input_features.shape[0], -1, captured["audio"].shape[-1])
    return logits, captured


def hf_inputs(hf, batch):
    """`batch` as keyword arguments of `hf`'s forward / generate (each family names the mel-frame mask its way)."""
    family = FAMILIES[hf.config.model_type]
    return family.hf_inputs(batch.input_ids, batch.attention_mask, batch.input_features, batch.feature_attention_mask)
