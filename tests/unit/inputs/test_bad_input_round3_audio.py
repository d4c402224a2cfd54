"""Bad input, round 3, for inputs: audio file headers checked as arrays are, loud and cut-off files, and audio markers
written in a question or system prompt.

Each test fails on the code before this round (866792f) and checks a second computation or that the message names
the input."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import soundfile

from lens_audio import make_batch
from lens_audio.inputs.audio import AudioError, load_audio
from tests.helpers.reference import waveform


def tone(seconds: float = 0.5, rate: int = 16000, peak: float = 0.5) -> np.ndarray:
    return (peak * np.sin(np.arange(int(seconds * rate)) / 7)).astype(np.float32)


# --- headers ------------------------------------------------------------------------------------------------------
def test_a_header_rate_below_the_floor_is_refused_like_an_array(tmp_path):
    path = tmp_path / "one-hertz.wav"
    soundfile.write(path, tone(), 1)  # the header claims 1 Hz: read as such it would be resampled x16000
    with pytest.raises(AudioError) as raised:
        load_audio(path)
    message = str(raised.value)
    assert str(path) in message and "header says 1 Hz" in message and "1000 Hz" in message
    with pytest.raises(AudioError, match="at least 1000"):  # the same samples as an array are refused too
        load_audio(tone(), sampling_rate=1)


def test_too_many_channels_in_a_file_get_file_advice(tmp_path):
    path = tmp_path / "ten.wav"
    soundfile.write(path, np.stack([tone()] * 10, axis=1), 16000)
    with pytest.raises(AudioError) as raised:
        load_audio(path)
    message = str(raised.value)
    assert str(path) in message and "header says 10 channels (16000 Hz)" in message and "at most 8" in message
    assert "mix it down" in message and "[samples, channels]" not in message  # not the arrays' layout advice


def test_files_with_up_to_eight_channels_are_mixed_down(tmp_path):
    path = tmp_path / "eight.wav"
    channels = np.stack([tone(peak=0.1 * (k + 1)) for k in range(8)], axis=1)
    soundfile.write(path, channels, 16000, subtype="FLOAT")
    assert np.allclose(load_audio(path), channels.mean(axis=1), atol=1e-6)


# --- loud float files -------------------------------------------------------------------------------------------
def test_a_float_wav_peaking_at_3_warns_as_the_array_does(tmp_path):
    samples = tone(peak=3.2)
    path = tmp_path / "loud.wav"
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    with pytest.warns(UserWarning, match=re.escape(f"{path}: float samples reach 3.2, far outside [-1, 1]")):
        from_file = load_audio(path)
    with pytest.warns(UserWarning, match="float samples reach 3.2, far outside"):
        from_array = load_audio(samples, sampling_rate=16000)
    assert np.array_equal(from_file, from_array)  # kept as they are, both ways


def test_a_very_loud_float_wav_is_named_not_an_overflow(tmp_path):
    path = tmp_path / "huge.wav"
    soundfile.write(path, tone(peak=1e20), 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as raised:
        load_audio(path)
    message = str(raised.value)
    assert str(path) in message and "float samples reach 1e+20" in message and "overflow" in message
    with pytest.raises(AudioError, match="float samples reach 1e\\+20"):  # the array: the same rule
        load_audio(tone(peak=1e20), sampling_rate=16000)


def test_a_wav_cut_to_half_its_bytes_warns(tmp_path):
    full, cut = tmp_path / "full.wav", tmp_path / "cut.wav"
    soundfile.write(full, tone(1.0), 16000, subtype="PCM_16")
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = load_audio(full)  # a whole file: no warning
    with pytest.warns(UserWarning, match=re.escape(f"{cut}: the file holds")) as caught:
        half = load_audio(cut)
    assert "header declares 16000" in str(caught[0].message)
    assert np.array_equal(half, whole[: len(half)])  # what is there is read as it is


# --- audio markers in user text ----------------------------------------------------------------------------------
@pytest.mark.parametrize("marker", ["<|AUDIO|>", "<|audio_bos|>", "<sound>", "[AUDIO]"])
def test_audio_markers_in_a_question_are_refused_naming_it(processor, marker):
    questions = ["What is it?", f"Is {marker} a sound?"]
    with pytest.raises(ValueError, match=re.escape(f"question 1 contains {marker}")):
        make_batch(processor, [waveform(0.5, 1), waveform(0.5, 2)], questions, sampling_rate=16000)


def test_audio_markers_in_a_system_prompt_are_refused(processor):
    with pytest.raises(ValueError, match=re.escape("system_prompt contains <|AUDIO|>")):
        make_batch(processor, waveform(0.5, 1), "What?", system_prompt="Listen to <|AUDIO|>.", sampling_rate=16000)
    plain = make_batch(processor, waveform(0.5, 1), "What?", system_prompt="Listen to it.", sampling_rate=16000)
    assert len(plain.audio_spans[0]) == 1  # other system prompts are as before
