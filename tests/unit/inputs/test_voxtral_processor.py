"""Voxtral prompts through the released processor: a tiny checkpoint with its own `tekken.json` (mistral-common's
Tekken format) loads with transformers' `VoxtralProcessor`, `make_batch` gives exactly what that processor gives,
and the port's logits match transformers on it; without mistral-common the error names the install command."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile
import torch

from lens_audio import HookedAudioLM
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.model.hf_config import voxtral_config
from lens_audio.testing import perturb_, save_tekken
from tests.helpers.reference import CHUNK_SECONDS, N_MELS, assert_matches, hf_inputs, waveform

pytest.importorskip("mistral_common", reason='Voxtral prompts need mistral-common: pip install -e ".[voxtral]"')

N_SPECIAL, N_VOCAB = 40, 400
QUESTIONS = ["What is the sound?", "Which clip is louder?"]


@pytest.fixture(scope="module")
def tekken_checkpoint(tmp_path_factory):
    """(folder, transformers model, HookedAudioLM loaded from the folder, clip paths) of a random tiny Voxtral."""
    import transformers

    folder = save_tekken(tmp_path_factory.mktemp("voxtral") / "tiny", n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS,
                         n_vocab=N_VOCAB, n_special=N_SPECIAL)
    config = voxtral_config(N_SPECIAL + N_VOCAB, 24, pad_token_id=11, eos_token_id=2, n_mels=N_MELS,
                            chunk_seconds=CHUNK_SECONDS)
    config._attn_implementation = "eager"
    torch.manual_seed(3)
    hf = perturb_(transformers.VoxtralForConditionalGeneration(config).eval(), seed=3)
    hf.save_pretrained(folder)
    clips = []
    for i, (seconds, seed) in enumerate([(1.5, 1), (1.9, 2), (0.6, 3)]):  # make_batch cuts clips at one 2 s window
        path = folder.parent / f"clip{i}.wav"
        # 16-bit PCM: transformers re-encodes a clip given by path as 16-bit WAV, which is then lossless
        soundfile.write(path, waveform(seconds, seed), 16000, subtype="PCM_16")
        clips.append(str(path))
    return folder, hf, HookedAudioLM.from_pretrained(folder), clips


def official(processor, conversations):
    """What a user of the released model runs: the processor's chat template on clips given by path."""
    return processor.apply_chat_template(
        conversations, tokenize=True, return_dict=True,
        processor_kwargs={"audio_kwargs": {"pad_to_multiple_of": CHUNK_SECONDS * 16000,
                                           "max_source_positions": CHUNK_SECONDS * 100}})


def test_the_checkpoint_loads_the_released_processor(tekken_checkpoint):
    _, _, model, _ = tekken_checkpoint
    assert type(model.processor).__name__ == "VoxtralProcessor"
    assert type(model.tokenizer).__name__ == "MistralCommonBackend"
    assert model.processor.audio_token == "[AUDIO]" and model.processor.audio_token_id == 24


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_equals_the_processors_and_logits_match(tekken_checkpoint, padding_side):
    _, hf, model, clips = tekken_checkpoint
    batch = model.to_batch([clips[0], [clips[1], clips[2]]], QUESTIONS, padding_side=padding_side)
    conversations = [
        [{"role": "user", "content": [{"type": "audio", "path": clips[0]}, {"type": "text", "text": QUESTIONS[0]}]}],
        [{"role": "user", "content": [{"type": "audio", "path": clips[1]}, {"type": "audio", "path": clips[2]},
                                      {"type": "text", "text": QUESTIONS[1]}]}],
    ]
    tokenizer = model.processor.tokenizer
    previous, tokenizer.padding_side = tokenizer.padding_side, padding_side
    try:
        ref = official(model.processor, conversations)
    finally:
        tokenizer.padding_side = previous
    assert torch.equal(batch.input_ids, ref["input_ids"])
    assert torch.equal(batch.attention_mask, ref["attention_mask"])
    assert torch.equal(batch.input_features, ref["input_features"])
    assert batch.input_features.shape == (3, N_MELS, CHUNK_SECONDS * 100)  # one 2 s chunk per clip
    # mistral-common's layout: <s>[INST], then per clip [BEGIN_AUDIO] and 25 [AUDIO] per started 2 s chunk.
    assert [[e - s for s, e in spans] for spans in batch.audio_spans] == [[25], [25, 25]]
    for row, spans in enumerate(batch.audio_spans):
        for start, _ in spans:
            assert batch.input_ids[row, start - 1] == 25  # [BEGIN_AUDIO]
    assert batch.texts[0] == "<s>[INST][BEGIN_AUDIO][AUDIO]What is the sound?[/INST]"
    assert batch.texts[1] == "<s>[INST][BEGIN_AUDIO][AUDIO][BEGIN_AUDIO][AUDIO]Which clip is louder?[/INST]"
    pad_column = 0 if padding_side == "left" else -1
    assert batch.attention_mask[0, pad_column] == 0
    # The features also equal the offline processor's (its own implementation of Voxtral's chunking).
    offline = build_offline_processor(n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS, family="voxtral")
    mine = offline([offline.audio_token] * 3, audio=[w for clips_ in batch.waveforms for w in clips_])
    assert (mine["input_features"] - batch.input_features).abs().max() < 1e-6
    assert_matches(model, hf, batch)


def test_greedy_generation_and_silence_twin(tekken_checkpoint):
    _, hf, model, clips = tekken_checkpoint
    batch = model.to_batch(clips[:2], QUESTIONS)
    silent = batch.silence_twin()
    assert torch.equal(silent.input_ids, batch.input_ids)
    assert not torch.equal(silent.input_features, batch.input_features)
    quiet = model.to_batch([np.zeros(24000, np.float32), np.zeros(30400, np.float32)], QUESTIONS, sampling_rate=16000)
    assert torch.equal(silent.input_features, quiet.input_features)  # the twin is the processor's own silence
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        theirs = hf.generate(**hf_inputs(hf, batch), max_new_tokens=8, do_sample=False)
    ours = model.generate(batch, max_new_tokens=8, eos_token_id=[], do_sample=False)
    assert ours.shape == (2, batch.input_ids.shape[1] + 8) and torch.equal(ours, theirs)
    assert isinstance(model.to_string(ours[0, -8:]), str)


def test_raw_prompts_are_refused_with_the_reason(tekken_checkpoint):
    _, _, model, clips = tekken_checkpoint
    with pytest.raises(ValueError, match="question="):
        model.to_batch(clips[0], prompt="<s>[INST][BEGIN_AUDIO][AUDIO]What?[/INST]")
    with pytest.raises(ValueError, match="contains"):
        model.to_batch(clips[0], "What is [AUDIO]?")


def test_without_mistral_common_the_error_names_the_extra(tekken_checkpoint, monkeypatch):
    folder, _, _, clips = tekken_checkpoint
    monkeypatch.setitem(sys.modules, "mistral_common", None)  # `import mistral_common` now raises ImportError
    with pytest.warns(UserWarning, match=r'pip install -e "\.\[voxtral\]"'):
        model = HookedAudioLM.from_pretrained(folder)
    assert model.processor is None
    with pytest.raises(ValueError, match=r'pip install -e "\.\[voxtral\]"'):
        model.to_batch(clips[0], QUESTIONS[0])
    with pytest.raises(ValueError, match="mistral-common"):
        model.to_tokens("hello")


def test_the_experiment_cli_runs_on_the_checkpoint(tekken_checkpoint, tmp_path):
    """`lens-audio listen` (the experiment's first stage) on a Voxtral checkpoint folder with its tekken.json."""
    import json

    from lens_audio import cli
    from lens_audio.organisms import benchmark_for

    folder, _, _, _ = tekken_checkpoint
    bench = json.loads(benchmark_for("workshop").read_text())
    root = benchmark_for("workshop").parent
    items = [dict(i, audio_id=[str(root / a) for a in i["audio_id"]]) for i in bench if i["split"] == "calibration"][:3]
    (tmp_path / "bench.json").write_text(json.dumps(items))
    assert cli.main(["listen", "--model", str(folder), "--benchmark", str(tmp_path / "bench.json"), "--split",
                     "calibration", "--template", "instruct", "--out", str(tmp_path / "run"), "--allow-outside-audio",
                     "--json", str(tmp_path / "listen.json")]) == 0
    result = json.loads((tmp_path / "listen.json").read_text())
    mass = np.array(result["mean_audio_mass"])
    assert result["split"] == "calibration" and 0.0 <= result["accuracy"] <= 1.0
    assert mass.shape == (2, 4) and ((mass > 0) & (mass < 1)).all()  # the three clips' audio tokens were found
