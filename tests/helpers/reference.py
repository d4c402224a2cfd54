"""Shared by the tests (not fixtures): waveforms, the offline processors' sizes, and transformers as the reference."""

from __future__ import annotations

import numpy as np
import torch

from lens_audio.model.family import FAMILIES
from lens_audio.model.hooked_audio_lm import position_ids_from_mask

N_MELS, CHUNK_SECONDS = 16, 2
TOL = 1e-4  # float32 agreement with transformers


def waveform(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


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


def assert_matches(model, hf, batch):
    ref_logits, ref = reference_run(hf, batch)
    valid = batch.attention_mask.bool()
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch)
    assert (logits - ref_logits)[valid].abs().max() < TOL
    n_tokens = [end - start for spans in batch.audio_spans for start, end in spans]
    audio = cache["audio.hook_audio_embeds"]
    for clip, n in enumerate(n_tokens):
        assert (audio[clip, :n] - ref["audio"][clip, :n]).abs().max() < TOL
    for layer in range(model.cfg.n_layers):
        diff = (cache[f"blocks.{layer}.hook_resid_post"] - ref[layer])[valid].abs().max()
        assert diff < TOL, f"layer {layer}: {diff}"
