"""AudioFlamingo3, Voxtral and Music Flamingo: the same port matches transformers on random tiny configs (float32), and
the family-agnostic analyses (silence twin, listening signal, steering) run on them unchanged."""

from __future__ import annotations

import pytest
import torch

from lens_audio import HookedAudioLM, make_batch
from lens_audio.analysis.steering import adaptive_direction
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.testing import tiny_hf_model
from tests.helpers.family_checks import (
    assert_rival_interventions,
    assert_silence_twin_listening_and_steering,
    padded_batch,
)
from tests.helpers.reference import CHUNK_SECONDS, N_MELS, assert_matches, hf_inputs, reference_run, waveform

FAMILIES = ("audioflamingo3", "voxtral", "musicflamingo")
CONFIGS = {
    "audioflamingo3": dict(n_heads=4, n_kv_heads=2),
    "musicflamingo": dict(n_heads=4, n_kv_heads=2),
    "voxtral": dict(n_heads=4, n_kv_heads=2, d_head=24),  # d_head * n_heads != d_model, as in Voxtral Mini
}


@pytest.fixture(scope="module")
def family_processor():
    made = {}

    def make(family):
        if family not in made:
            made[family] = build_offline_processor(n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS, family=family)
        return made[family]

    return make


@pytest.fixture(scope="module")
def family_pair(family_processor):
    """Factory: (transformers model, HookedAudioLM sharing its weights, processor) for a family."""
    made = {}

    def make(family, attn_implementation="eager", **overrides):
        key = (family, attn_implementation, tuple(sorted(overrides.items())))
        if key not in made:
            processor = family_processor(family)
            config = {**CONFIGS[family], **overrides}
            hf, _ = tiny_hf_model(processor, seed=1, attn_implementation=attn_implementation, family=family,
                                  n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS, **config)
            made[key] = (hf, HookedAudioLM.from_hf_model(hf, processor), processor)
        return made[key]

    return make


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_padded_batch_matches_transformers(family_pair, family, padding_side):
    hf, model, processor = family_pair(family)
    batch = padded_batch(processor, padding_side)
    pad_column = 0 if padding_side == "left" else -1
    assert batch.attention_mask[1, pad_column] == 0 or batch.attention_mask[0, pad_column] == 0
    assert model.cfg.family == family and model.cfg.original_architecture == type(hf).__name__
    assert_matches(model, hf, batch)


def test_layouts_are_the_families(family_pair):
    """AudioFlamingo3: one token per 2 valid conv frames of the clip; Voxtral: all 25 tokens of each 2 s chunk."""
    _, _, af3 = family_pair("audioflamingo3")
    _, _, vox = family_pair("voxtral")
    a, v = padded_batch(af3), padded_batch(vox)
    assert [e - s for spans in a.audio_spans for s, e in spans] == [37, 10]  # 150 and 40 mel frames
    assert [e - s for spans in v.audio_spans for s, e in spans] == [25, 25]
    assert v.feature_attention_mask is None and a.feature_attention_mask is not None
    assert "<|im_start|>user\n<sound>What is the sound?<|im_end|>" in a.texts[0]
    assert v.texts[0] == "<s>[INST][BEGIN_AUDIO][AUDIO]What is the sound?[/INST]"


def test_voxtral_several_clips_and_a_long_clip(family_pair):
    """Several clips in one prompt, and a clip longer than one window (two chunks, one run of 50 tokens)."""
    hf, model, processor = family_pair("voxtral")
    batch = make_batch(processor, [[waveform(0.7, 5), waveform(1.2, 6)], waveform(0.5, 7)],
                       ["Which clip is louder?", "What is this?"], sampling_rate=16000)
    assert [len(s) for s in batch.audio_spans] == [2, 1]
    assert_matches(model, hf, batch)
    long = processor([processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Long?"}]}], tokenize=False)],
        audio=[waveform(3.0, 8)])
    assert long["input_features"].shape[0] == 2 and int((long["input_ids"] == processor.audio_token_id).sum()) == 50
    with torch.no_grad():
        ours = model(long["input_ids"], long["attention_mask"], long["input_features"])
        ref = hf(**long).logits
    assert (ours - ref).abs().max() < 1e-4


def test_audioflamingo3_long_clip_over_two_windows(family_pair):
    """A 3 s clip through transformers' processor: two 2 s windows, one run of tokens spliced in order."""
    hf, model, processor = family_pair("audioflamingo3")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Long?"}]}], tokenize=False,
        add_generation_prompt=True)
    long = processor(text=[text], audio=[waveform(3.0, 8)])
    assert long["input_features"].shape[0] == 2
    assert int((long["input_ids"] == processor.audio_token_id).sum()) == 50 + 25  # 200 + 100 valid frames
    with torch.no_grad():
        ours = model(long["input_ids"], long["attention_mask"], long["input_features"],
                     input_features_mask=long["input_features_mask"])
        ref = hf(**long).logits
    assert (ours - ref).abs().max() < 1e-4


def test_audioflamingo3_takes_one_clip_per_prompt(family_pair):
    _, _, processor = family_pair("audioflamingo3")
    with pytest.raises(ValueError, match="1:1"):
        make_batch(processor, [[waveform(0.7, 5), waveform(1.2, 6)]], ["Which clip is louder?"], sampling_rate=16000)


@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_paths_match_the_sdpa_reference(family_pair, family):
    hf_sdpa, _, processor = family_pair(family, attn_implementation="sdpa")
    _, model, _ = family_pair(family)
    batch = padded_batch(processor)
    valid = batch.attention_mask.bool()
    ref, _ = reference_run(hf_sdpa, batch)
    for implementation in ("sdpa", "auto"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            assert (model(batch) - ref)[valid].abs().max() < 1e-4
    model.set_attn_implementation("auto")


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_matches_transformers_for_20_tokens(family_pair, family):
    hf, model, processor = family_pair(family)
    batch = padded_batch(processor)
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        expected = hf.generate(**hf_inputs(hf, batch), max_new_tokens=20, do_sample=False)
    ours = model.generate(batch, max_new_tokens=20, eos_token_id=[], do_sample=False)
    assert ours.shape == expected.shape == (2, batch.input_ids.shape[1] + 20)
    assert torch.equal(ours, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_silence_twin_listening_and_steering(family_pair, family):
    _, model, processor = family_pair(family)
    assert_silence_twin_listening_and_steering(model, processor, padded_batch(processor))
    assert_rival_interventions(model, padded_batch(processor))


def test_voxtral_shared_silence_prefix_equals_the_full_silence_pass(family_pair):
    """Voxtral batches carry no frame mask: rows whose clips give the same chunks share one silence prefix."""
    from lens_audio.analysis.steering import final_residuals
    from lens_audio.analysis.steering.silence_prefix import shared_silence_residuals

    _, model, processor = family_pair("voxtral")
    batch = make_batch(processor, [waveform(0.8, 1), waveform(1.5, 2), [waveform(0.5, 3), waveform(0.6, 4)]],
                       ["What is the sound?", "Is this music or a voice?", "Which clip is louder?"],
                       sampling_rate=16000)
    assert batch.feature_attention_mask is None
    full = final_residuals(model, batch.silence_twin(), [0, 1])
    shared = shared_silence_residuals(model, batch, [0, 1])
    assert shared is not None and torch.allclose(shared, full, atol=1e-5)
    assert torch.allclose(adaptive_direction(model, batch, [0, 1]),
                          (final_residuals(model, batch, [0, 1]) - full).mean(1), atol=1e-5)


def test_musicflamingo_rotates_by_time_across_windows_of_long_clips(family_pair):
    """Two long clips (2 and 3 windows): each window's rows turn by its index within its clip, as transformers'."""
    hf, model, processor = family_pair("musicflamingo")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Long?"}]}], tokenize=False,
        add_generation_prompt=True)
    long = processor(text=[text, text], audio=[waveform(3.0, 8), waveform(4.5, 9)])
    assert long["input_features"].shape[0] == 5
    assert "<|sound_bos|><sound><sound>" in processor.tokenizer.decode(long["input_ids"][0])
    inputs = (long["input_ids"], long["attention_mask"], long["input_features"])
    with torch.no_grad():
        ours, cache = model.run_with_cache(*inputs, input_features_mask=long["input_features_mask"])
        ref = hf(**long).logits
        unrotated = model.run_with_hooks(*inputs, input_features_mask=long["input_features_mask"], fwd_hooks=[
            ("audio.hook_time_rotated", lambda x, hook: model.audio.ln_post(cache["audio.hook_pooled"]))])
    valid = long["attention_mask"].bool()
    assert (ours - ref)[valid].abs().max() < 1e-4
    assert (unrotated - ref)[valid].abs().max() > 1e-3  # the rotation matters
