"""CircuitsVis's attention views render a lens_audio cache of an audio prompt (skipped where circuitsvis, part of
the notebooks extra, is not installed)."""

from __future__ import annotations

import json

import pytest
import torch

from lens_audio import HookedAudioLM
from lens_audio.testing import tiny_hf_model

cv = pytest.importorskip("circuitsvis", reason="circuitsvis is not installed: pip install -e '.[notebooks]'.")


def test_attention_patterns_render_an_audio_cache_with_inline_javascript(processor, two_example_batch):
    model = HookedAudioLM.from_hf_model(tiny_hf_model(processor, seed=2)[0], processor)
    with torch.no_grad():
        _, cache = model.run_with_cache(two_example_batch, names_filter=lambda name: name.endswith("hook_pattern"))
    tokens = model.to_str_tokens(two_example_batch.input_ids[0])
    pattern = cache["pattern", 0][0]  # [head, query, key]
    rendered = cv.attention.attention_patterns(tokens=tokens, attention=pattern)
    html = rendered.local_src  # what a notebook shows offline: the JavaScript is inline, nothing from a CDN
    assert "unpkg.com" not in html and "CircuitsVis.render" in html
    assert json.dumps(tokens[:3])[1:-1] in html  # the token labels travel with the pattern
    assert len(tokens) == pattern.shape[-1] == two_example_batch.input_ids.shape[1]
