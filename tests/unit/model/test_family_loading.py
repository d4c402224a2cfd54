"""Loading AudioFlamingo3 and Voxtral checkpoints the tests save themselves: folders, shards, the Hugging Face
cache by Hub id (offline), Voxtral's Mistral-native file, and refusals."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import huggingface_hub.constants
import pytest
import torch

from lens_audio import HookedAudioLM, make_batch
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.testing import save_checkpoint, tiny_hf_model
from tests.helpers.reference import CHUNK_SECONDS, N_MELS, waveform


@pytest.fixture(scope="module", params=["audioflamingo3", "voxtral", "musicflamingo"])
def saved(request, tmp_path_factory):
    family = request.param
    processor = build_offline_processor(n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS, family=family)
    hf, _ = tiny_hf_model(processor, seed=5, family=family, n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS)
    folder = save_checkpoint(hf, processor, tmp_path_factory.mktemp(family) / "tiny", max_shard_size="100KB")
    batch = make_batch(processor, [waveform(1.5, 1), waveform(0.4, 2)], ["What is it?", "Music?"],
                       sampling_rate=16000)
    return family, hf, processor, folder, batch


def logits_of(model, batch):
    with torch.no_grad():
        return model(batch)


def load(folder_or_id, family):
    if family == "voxtral":  # its processor needs mistral-common: loading warns and leaves model.processor unset
        with pytest.warns(UserWarning, match="processor"):
            return HookedAudioLM.from_pretrained(folder_or_id)
    return HookedAudioLM.from_pretrained(folder_or_id)


def test_sharded_folder_round_trips(saved):
    family, hf, processor, folder, batch = saved
    assert (folder / "model.safetensors.index.json").is_file(), "the test must exercise shards"
    loaded = load(folder, family)
    assert loaded.cfg.family == family
    assert torch.equal(logits_of(loaded, batch), logits_of(HookedAudioLM.from_hf_model(hf, processor), batch))
    if family in ("audioflamingo3", "musicflamingo"):
        again = make_batch(loaded.processor, [waveform(1.5, 1), waveform(0.4, 2)], ["What is it?", "Music?"],
                           sampling_rate=16000)
        assert torch.equal(again.input_ids, batch.input_ids) and torch.equal(again.input_features, batch.input_features)
    else:
        assert loaded.processor is None


def test_hub_id_from_the_cache_offline(saved, tmp_path, monkeypatch):
    """A Hub id resolves to its snapshot in the Hugging Face cache without the network."""
    family, _, _, folder, batch = saved
    repo = {"audioflamingo3": "nvidia/audio-flamingo-3-hf", "voxtral": "mistralai/Voxtral-Mini-3B-2507",
            "musicflamingo": "nvidia/music-flamingo-2601-hf"}[family]
    entry = tmp_path / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, entry / "snapshots" / "0123abc")
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert torch.equal(logits_of(load(repo, family), batch), logits_of(load(folder, family), batch))


def test_voxtral_mistral_native_file_is_never_read(saved, tmp_path):
    family, _, _, folder, batch = saved
    if family != "voxtral":
        pytest.skip("Voxtral only: its Hub repositories alone ship a Mistral-native consolidated.safetensors")
    shutil.copytree(folder, tmp_path / "both")
    (tmp_path / "both" / "consolidated.safetensors").write_bytes(b"not read")
    assert torch.equal(logits_of(load(tmp_path / "both", family), batch), logits_of(load(folder, family), batch))
    native = tmp_path / "native"
    native.mkdir()
    (native / "config.json").write_text((folder / "config.json").read_text())
    (native / "consolidated.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="only Mistral's native consolidated.safetensors"):
        HookedAudioLM.from_pretrained(native)


def test_a_family_with_another_decoder_is_refused(saved, tmp_path):
    family, _, _, folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["model_type"] = "gemma"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'gemma' decoder"):
        HookedAudioLM.from_pretrained(tmp_path)


def test_bfloat16_is_as_close_as_transformers_own(saved):
    """In bfloat16 the error against float32 logits is bounded by 1.5x that of the family's transformers model loaded
    from the same folder in bfloat16; Voxtral keeps its encoder positions in float32, as transformers does."""
    import transformers

    from lens_audio.model.family import FAMILY_BY_NAME
    from tests.helpers.reference import reference_run

    family, _, _, folder, batch = saved
    high = logits_of(load(folder, family), batch)
    if family == "voxtral":
        with pytest.warns(UserWarning, match="processor"):
            model = HookedAudioLM.from_pretrained(folder, dtype="bfloat16")
        assert model.audio.W_pos.dtype == torch.float32
    else:
        model = HookedAudioLM.from_pretrained(folder, dtype="bfloat16")
    valid = batch.attention_mask.bool()
    ours = (logits_of(model, batch).float() - high)[valid].abs()
    cls = getattr(transformers, FAMILY_BY_NAME[family].hf_class)
    hf_low = cls.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation="eager").eval()
    low_batch = replace(batch, input_features=batch.input_features.to(torch.bfloat16))  # AF3 does not cast them
    theirs = (reference_run(hf_low, low_batch)[0].float() - high)[valid].abs()
    assert theirs.mean() > 0
    assert ours.mean() <= 1.5 * theirs.mean() and ours.max() <= 1.5 * theirs.max(), (ours.mean(), theirs.mean())
