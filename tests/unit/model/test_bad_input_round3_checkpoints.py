"""Bad input, round 3, for checkpoints: integer (quantized) weights, a tokenizer larger than the embedding, a
truncated tokenizer.json, and a checkpoint without a chat template of its own.

Each test fails on the code before this round (866792f) and checks that the message names the file, the tensor or
the sizes."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from lens_audio import HookedAudioLM
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.testing import save_checkpoint, tiny_hf_model
from tests.helpers.reference import CHUNK_SECONDS, N_MELS, waveform


@pytest.fixture(scope="module")
def tiny(processor):
    return tiny_hf_model(processor, seed=3, n_heads=4, n_kv_heads=2, n_layers=2, n_mels=N_MELS,
                         chunk_seconds=CHUNK_SECONDS)[0]


@pytest.fixture(scope="module")
def checkpoint(tiny, processor, tmp_path_factory):
    return save_checkpoint(tiny, processor, tmp_path_factory.mktemp("ckpt") / "tiny")


def copy_of(checkpoint, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(checkpoint, folder)
    return folder


def test_int8_weights_are_refused_naming_the_tensor(checkpoint, tmp_path):
    folder = copy_of(checkpoint, tmp_path)
    shard = next(folder.glob("*.safetensors"))
    tensors = load_file(str(shard))
    key = next(k for k in sorted(tensors) if k.endswith("q_proj.weight") and "audio" not in k)
    tensors[key] = tensors[key].round().to(torch.int8)
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(ValueError) as raised:
        HookedAudioLM.from_pretrained(str(folder))
    message = str(raised.value)
    assert str(folder) in message and f"weight {key!r} is stored as int8" in message
    assert "float32, float16 or bfloat16" in message and "dequantized" in message


def test_a_tokenizer_larger_than_the_embedding_is_refused_naming_both_sizes(tiny, checkpoint, tmp_path):
    processor = build_offline_processor(n_mels=N_MELS, chunk_seconds=CHUNK_SECONDS)
    rows = tiny.get_input_embeddings().weight.shape[0]
    processor.tokenizer.add_tokens(["<extra-one>", "<extra-two>"])
    size = len(processor.tokenizer)
    assert size == rows + 2  # ids rows, rows + 1 would have no embedding
    with pytest.raises(ValueError, match=re.escape(f"the tokenizer has {size} tokens but the model's embedding has "
                                                   f"{rows} rows")):
        HookedAudioLM.from_hf_model(tiny, processor)
    folder = save_checkpoint(tiny, processor, tmp_path / "bigger-tokenizer")
    with pytest.raises(ValueError) as raised:
        HookedAudioLM.from_pretrained(str(folder))
    assert str(folder) in str(raised.value) and f"token ids {rows}-{size - 1} have no embedding" in str(raised.value)


def test_a_truncated_tokenizer_json_is_named(checkpoint, tmp_path):
    folder = copy_of(checkpoint, tmp_path)
    tokenizer = folder / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[: tokenizer.stat().st_size // 2])
    with pytest.warns(UserWarning, match=re.escape(f"{tokenizer} is not valid JSON")):
        model = HookedAudioLM.from_pretrained(str(folder))
    with pytest.raises(ValueError, match=re.escape(f"{tokenizer} is not valid JSON")) as raised:
        model.to_batch([waveform(0.5, 1)], ["What?"], sampling_rate=16000)
    assert "truncated or damaged" in str(raised.value)


def test_a_checkpoint_without_a_chat_template_warns(checkpoint, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HookedAudioLM.from_pretrained(str(checkpoint))  # its own template: no warning
    folder = copy_of(checkpoint, tmp_path)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    for name in ("tokenizer_config.json", "processor_config.json"):
        path = folder / name
        if path.exists():
            config = json.loads(path.read_text())
            config.pop("chat_template", None)
            path.write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=re.escape(f"{folder} has no chat template of its own")):
        model = HookedAudioLM.from_pretrained(str(folder))
    batch = model.to_batch([waveform(0.5, 1)], ["What?"], sampling_rate=16000)
    assert batch.texts[0].endswith("What?<|im_end|>\n<|im_start|>assistant\n")  # the processor's default, as warned
