"""Loading checkpoints the tests save themselves: local folders, shards, Hub layout, dtypes, and clear refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lens_audio import HookedAudioLM
from lens_audio.testing import save_checkpoint, tiny_hf_model
from tests.helpers.reference import reference_run


@pytest.fixture(scope="module")
def saved(tmp_path_factory, processor):
    hf, _ = tiny_hf_model(processor, seed=3, n_heads=4, n_kv_heads=2)
    folder = save_checkpoint(hf, processor, tmp_path_factory.mktemp("ckpt") / "tiny", max_shard_size="100KB")
    return hf, folder


def logits_of(model, batch):
    with torch.no_grad():
        return model(batch)


def test_sharded_checkpoint_round_trips(saved, two_example_batch, processor):
    hf, folder = saved
    assert (folder / "model.safetensors.index.json").is_file(), "the test must exercise shards"
    loaded = HookedAudioLM.from_pretrained(folder)
    reference = HookedAudioLM.from_hf_model(hf, processor)
    assert torch.equal(logits_of(loaded, two_example_batch), logits_of(reference, two_example_batch))
    assert loaded.processor is not None and loaded.processor.audio_token_id == processor.audio_token_id
    assert not any(p.is_meta for p in loaded.parameters())


def test_loads_in_bfloat16(saved, two_example_batch):
    """bfloat16 loses no more than transformers' own bfloat16 does: the error against float32 logits is bounded
    by 1.5x that of `Qwen2AudioForConditionalGeneration` loaded from the same folder in bfloat16 (mean and max)."""
    from transformers import Qwen2AudioForConditionalGeneration

    hf, folder = saved
    model = HookedAudioLM.from_pretrained(folder, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    valid = two_example_batch.attention_mask.bool()
    high = logits_of(HookedAudioLM.from_pretrained(folder), two_example_batch)[valid]
    ours = (logits_of(model, two_example_batch).float()[valid] - high).abs()
    hf_low = Qwen2AudioForConditionalGeneration.from_pretrained(
        folder, dtype=torch.bfloat16, attn_implementation="eager"
    )
    theirs = (reference_run(hf_low.eval(), two_example_batch)[0].float()[valid] - high).abs()
    assert theirs.mean() > 0  # bfloat16 really rounds
    assert ours.mean() <= 1.5 * theirs.mean() and ours.max() <= 1.5 * theirs.max(), (ours.mean(), theirs.mean())


def test_both_key_layouts_are_understood(saved, tmp_path, two_example_batch):
    """save_pretrained writes the Hub layout (`language_model.model.*`, `audio_tower.*`); the in-memory
    layout of transformers 5 (`model.language_model.*`, `model.audio_tower.*`) must load too."""
    _, folder = saved
    current = tmp_path / "current"
    current.mkdir()
    tensors = {}
    for shard in folder.glob("*.safetensors"):
        tensors.update(load_file(shard))
    hub_prefixes = {"language_model.model.": "model.language_model.", "audio_tower.": "model.audio_tower.",
                    "multi_modal_projector.": "model.multi_modal_projector.", "language_model.lm_head.": "lm_head."}
    renamed = {}
    for key, value in tensors.items():
        prefix = next(p for p in hub_prefixes if key.startswith(p))
        renamed[hub_prefixes[prefix] + key[len(prefix):]] = value.contiguous()
    save_file(renamed, current / "model.safetensors")
    for f in folder.iterdir():
        if f.suffix != ".safetensors" and f.name != "model.safetensors.index.json":
            (current / f.name).write_bytes(f.read_bytes())
    a, b = HookedAudioLM.from_pretrained(current), HookedAudioLM.from_pretrained(folder)
    assert torch.equal(logits_of(a, two_example_batch), logits_of(b, two_example_batch))


def test_tie_word_embeddings_is_ignored_as_transformers_does(processor, tmp_path, two_example_batch):
    """Qwen2AudioForConditionalGeneration keeps a separate lm_head even when text_config asks to tie."""
    hf, _ = tiny_hf_model(processor, seed=4, tie_word_embeddings=True)
    folder = save_checkpoint(hf, processor, tmp_path / "tied")
    model = HookedAudioLM.from_pretrained(folder)
    assert model.unembed.weight is not model.embed.weight
    expected, _ = reference_run(hf, two_example_batch)
    valid = two_example_batch.attention_mask.bool()
    assert (logits_of(model, two_example_batch) - expected)[valid].abs().max() < 1e-4


def test_unknown_name_says_what_it_accepts(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hugging Face Hub id"):
        HookedAudioLM.from_pretrained(str(tmp_path / "nope" / "deeper" / "still"))


def test_hub_id_not_in_cache_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Qwen/Qwen2-Audio-7B-Instruct.*local Hugging Face cache"):
        HookedAudioLM.from_pretrained("Qwen/Qwen2-Audio-7B-Instruct")


def test_another_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="'llama' checkpoint"):
        HookedAudioLM.from_pretrained(tmp_path)


def test_pickle_weights_are_refused(saved, tmp_path):
    _, folder = saved
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        HookedAudioLM.from_pretrained(tmp_path)


def test_missing_shard_and_missing_config(saved, tmp_path):
    _, folder = saved
    with pytest.raises(FileNotFoundError, match="config.json"):
        HookedAudioLM.from_pretrained(tmp_path)
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    next(tmp_path.glob("model-*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        HookedAudioLM.from_pretrained(tmp_path)


def test_config_that_disagrees_with_weights(saved, tmp_path):
    _, folder = saved
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["text_config"]["intermediate_size"] += 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json implies"):
        HookedAudioLM.from_pretrained(tmp_path)
