"""Random checkpoints of each model family for tests, benchmarks and demos, built and saved offline.

`tiny_hf_model` makes a `transformers.Qwen2AudioForConditionalGeneration`
(or, with `family=`, an AudioFlamingo3 / Voxtral model) from a small config
with every weight random, including norm weights and biases (which default to 1 and 0
and would otherwise hide conversion bugs).
`save_checkpoint` writes it in Hugging Face format with an offline
processor, so `HookedAudioLM.from_pretrained(folder)` exercises the real
loading path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.model.family import FAMILY_BY_NAME
from lens_audio.model.hf_config import (
    audioflamingo3_config,
    musicflamingo_config,
    qwen2_audio_config,
    qwen3_omni_moe_thinker_config,
    qwen25_omni_thinker_config,
    voxtral_config,
)

CONFIG_BUILDERS = {"qwen2-audio": qwen2_audio_config, "audioflamingo3": audioflamingo3_config,
                   "voxtral": voxtral_config, "qwen2.5-omni": qwen25_omni_thinker_config,
                   "musicflamingo": musicflamingo_config, "qwen3-omni-moe": qwen3_omni_moe_thinker_config}


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Move norm weights away from 1 and biases away from 0, so a dropped or misplaced one shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or ".ln_post." in name:  # ln_post: the Omni thinkers'
                param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model


def tiny_hf_model(
    processor: Any = None, seed: int = 0, attn_implementation: str = "eager", family: str = "qwen2-audio",
    **config: Any,
) -> tuple[Any, Any]:
    """A random tiny transformers model of `family` (float32, eval mode) and its offline processor.

    `config` overrides the keywords of the family's builder in `lens_audio.model.hf_config`; `vocab_size` defaults to
    the tokenizer's (a larger one only adds rows no token reaches, useful for realistic unembedding cost in benchmarks).
    """
    import transformers

    chunk_seconds = config.get("chunk_seconds", 2)
    if processor is None:
        processor = build_offline_processor(n_mels=config.get("n_mels", 16), chunk_seconds=chunk_seconds,
                                            family=family)
    tok = processor.tokenizer
    hf_config = CONFIG_BUILDERS[family](
        vocab_size=config.pop("vocab_size", len(tok)),
        audio_token_id=processor.audio_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        **config,
    )
    hf_config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = getattr(transformers, FAMILY_BY_NAME[family].hf_class)(hf_config).eval()
    return perturb_(model, seed), processor


def save_checkpoint(model: Any, processor: Any, folder: str | Path, max_shard_size: str | None = None) -> Path:
    """Save model and processor in Hugging Face format (safetensors; sharded if `max_shard_size`)."""
    folder = Path(folder)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(folder, **kwargs)
    if hasattr(processor, "save_pretrained"):  # VoxtralPromptProcessor has no files to save
        processor.save_pretrained(folder)
    return folder


# Voxtral's special tokens by rank: mistral-common's instruct tokens in its order
# (`Tekkenizer.DEPRECATED_SPECIAL_TOKENS`, then [ARGS], [CALL_ID]), [AUDIO] at 24 (transformers' VoxtralProcessor
# takes it to be id 24) and [BEGIN_AUDIO] at 25; mistral-common fills the ranks after these with <SPECIAL_i>.
VOXTRAL_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                          "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
                          "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                          "[TOOL_CONTENT]", "[ARGS]", "[CALL_ID]", "<SPECIAL_22>", "<SPECIAL_23>", "[AUDIO]",
                          "[BEGIN_AUDIO]", "[TRANSCRIBE]")

def save_tekken(folder: str | Path, n_mels: int = 16, chunk_seconds: int = 2, n_vocab: int = 400,
                n_special: int = 40, version: str = "v7") -> Path:
    """Write a small `tekken.json` (mistral-common's Tekken format) and Voxtral's feature-extractor config to `folder`.

    The vocabulary is the first `n_vocab` byte-level BPE ranks of the Tekken vocabulary that mistral-common ships
    (the 256 bytes, then its first merges), after `n_special` special tokens laid out as Voxtral's; the audio
    section is Voxtral's (16 kHz, 12.5 audio tokens a second, padded to whole chunks) with `n_mels` mel bins and
    `chunk_seconds` chunks. The model's vocabulary is `n_special + n_vocab` tokens. Needs mistral-common.
    """
    import json

    import mistral_common
    from transformers import WhisperFeatureExtractor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shipped = json.loads((Path(mistral_common.__file__).parent / "data" / "tekken_240911.json").read_text())
    specials = [{"rank": rank, "token_str": name, "is_control": True}
                for rank, name in enumerate(VOXTRAL_SPECIAL_TOKENS)]
    tekken = {
        "config": {"pattern": shipped["config"]["pattern"], "num_vocab_tokens": n_vocab,
                   "default_vocab_size": n_special + n_vocab, "default_num_special_tokens": n_special,
                   "version": version},
        "vocab": shipped["vocab"][:n_vocab],
        "special_tokens": specials,
        "audio": {"sampling_rate": 16_000, "frame_rate": 12.5, "chunk_length_s": float(chunk_seconds),
                  "audio_encoding_config": {"num_mel_bins": n_mels, "hop_length": 160, "window_size": 400}},
    }
    (folder / "tekken.json").write_text(json.dumps(tekken))
    WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16_000, hop_length=160, chunk_length=chunk_seconds,
                            n_fft=400).save_pretrained(folder)
    return folder
