"""Audio loading, batch building, silence twins, and the errors users see for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from lens_audio import AudioError, load_audio, make_batch
from lens_audio.inputs.frames import n_audio_tokens
from tests.helpers.reference import waveform


def test_stereo_44k_file_becomes_16k_mono(tmp_path):
    t = np.arange(44100) / 44100
    left, right = np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t + 0.5)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1).astype(np.float32), 44100)
    audio = load_audio(tmp_path / "stereo.wav")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - 16000) <= 1
    expected = (left + right) / 2
    assert abs(np.abs(audio).max() - np.abs(expected).max()) < 0.05


def test_array_layouts_and_sample_rate():
    x = np.ones((2, 8000), dtype=np.float32)
    assert load_audio(x, 8000).shape == (16000,)
    assert load_audio(x.T, 8000).shape == (16000,)
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio(x)


@pytest.mark.parametrize(
    "source, message",
    [
        ("missing.wav", "no such audio file"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.array([0.0, np.nan], dtype=np.float32), "NaN"),
        (np.zeros((20, 30), dtype=np.float32), "cannot tell channels"),
    ],
)
def test_bad_audio_is_named(source, message):
    with pytest.raises(AudioError, match=message):
        load_audio(source, 16000)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(AudioError, match="notes.wav: could not read"):
        load_audio(bad)


def test_batch_layout(processor):
    batch = make_batch(
        processor, [waveform(1.0, 1), waveform(0.5, 2)], ["What is it?", "And this?"], sampling_rate=16000
    )
    frames = batch.feature_attention_mask.sum(-1)
    assert frames.tolist() == [100, 50]
    spans = [s for per_example in batch.audio_spans for s in per_example]
    assert [end - start for start, end in spans] == n_audio_tokens(frames).tolist()
    assert batch.final_position.tolist() == [batch.input_ids.shape[1] - 1] * 2
    assert batch.attention_mask[1, 0] == 0  # left padded
    assert batch.audio_mask.sum() == n_audio_tokens(frames).sum()
    assert (
        "You are a helpful assistant." in batch.texts[0]
        and "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>" in batch.texts[0]
    )


def test_right_padding_final_position(processor):
    batch = make_batch(
        processor,
        [waveform(1.0, 1), waveform(0.5, 2)],
        ["What is it?", "And this?"],
        sampling_rate=16000,
        padding_side="right",
    )
    assert batch.final_position[1] == batch.attention_mask[1].sum() - 1


def test_system_prompt_and_raw_prompt(processor):
    chat = make_batch(processor, waveform(0.5, 1), "Q?", system_prompt="Listen carefully.", sampling_rate=16000)
    assert chat.texts[0].startswith("<|im_start|>system\nListen carefully.<|im_end|>")
    raw = make_batch(
        processor, waveform(0.5, 1), prompt="<|audio_bos|><|AUDIO|><|audio_eos|>Caption:", sampling_rate=16000
    )
    assert len(raw.audio_spans[0]) == 1


def test_placeholder_mismatches_are_refused(processor):
    with pytest.raises(ValueError, match="prompt 0 holds 1 <\\|AUDIO\\|> placeholder\\(s\\) but has 2 clip"):
        make_batch(processor, [[waveform(0.3, 1), waveform(0.3, 2)]], prompt=["<|AUDIO|> hi"], sampling_rate=16000)
    with pytest.raises(ValueError, match="question 0 contains <\\|AUDIO\\|>"):  # parsed, it would add a slot
        make_batch(processor, waveform(0.3, 1), "What is <|AUDIO|>?", sampling_rate=16000, parse_special_tokens=True)
    with pytest.raises(ValueError, match="2 questions/prompts need a list of 2 audio"):
        make_batch(processor, [waveform(0.3, 1)], ["a?", "b?"], sampling_rate=16000)


def test_long_clip_truncated_with_warning_or_refused(processor):
    long = waveform(3.0, 1)  # the test processor's window is 2 s
    with pytest.warns(UserWarning, match="longer than the model's 2 s window"):
        batch = make_batch(processor, long, "Q?", sampling_rate=16000)
    assert batch.waveforms[0][0].shape[0] == 32000
    with pytest.raises(AudioError, match="longer than the model's 2 s audio window"):
        make_batch(processor, long, "Q?", sampling_rate=16000, on_long="error")


def test_silence_twin_keeps_layout_and_zeroes_audio(processor):
    batch = make_batch(
        processor, [[waveform(0.8, 1), waveform(0.3, 2)], waveform(1.1, 3)], ["Two?", "One?"], sampling_rate=16000
    )
    twin = batch.silence_twin()
    assert torch.equal(twin.input_ids, batch.input_ids)
    assert torch.equal(twin.feature_attention_mask, batch.feature_attention_mask)
    assert twin.audio_spans == batch.audio_spans
    assert all(not w.any() for clips in twin.waveforms for w in clips)
    assert not torch.equal(twin.input_features, batch.input_features)
    assert twin.input_features.std() < 1e-6  # silence: one constant log-mel value


def test_model_errors_for_inconsistent_inputs(tiny_pair, two_example_batch):
    _, model = tiny_pair(n_heads=4, n_kv_heads=2)
    with pytest.raises(ValueError, match="no input_features were given"):
        model(two_example_batch.input_ids, two_example_batch.attention_mask)
    with pytest.raises(ValueError, match=r"holds \d+ <\|AUDIO\|> tokens but the 2 clip\(s\) give"):
        model(two_example_batch.input_ids[:, 1:], two_example_batch.attention_mask[:, 1:],
              two_example_batch.input_features, two_example_batch.feature_attention_mask[:, [1, 0]] * 0 + 1)
    with pytest.raises(ValueError, match="expects \\[clips, 16 mel bins, 200 frames\\]"):
        model(two_example_batch.input_ids, two_example_batch.attention_mask,
              two_example_batch.input_features[:, :, :100], two_example_batch.feature_attention_mask[:, :100])
