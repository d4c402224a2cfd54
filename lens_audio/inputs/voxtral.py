"""Voxtral prompts through the released processor: transformers' `VoxtralProcessor` over mistral-common's Tekken.

A Voxtral checkpoint ships its tokenizer as `tekken.json`, which only mistral-common reads (the optional extra
`pip install -e ".[voxtral]"`). Its chat template is not a Jinja string but mistral-common's instruct encoder: each
clip becomes an `AudioChunk` whose tokens (`[BEGIN_AUDIO]` and one `[AUDIO]` per 80 ms of the clip zero-padded to
whole 30 s chunks) mistral-common lays out itself, and the processor computes each chunk's log-mel features.
`make_batch` hands it every clip as a float32 WAV (lossless) through `VoxtralProcessor.apply_chat_template`,
exactly as a user of the released model would, so prompts, audio positions and features are the official ones.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lens_audio.inputs.audio import TARGET_SAMPLE_RATE

INSTALL_HINT = 'pip install -e ".[voxtral]"'
MISSING_MESSAGE = (
    "Voxtral's tokenizer is mistral-common's Tekken (tekken.json), which needs the mistral-common package: "
    f"run `{INSTALL_HINT}` (or `pip install mistral-common`) and load the model again."
)


def has_tekken(folder: Path) -> bool:
    return (folder / "tekken.json").is_file()


def mistral_common_missing() -> str | None:
    """None when mistral-common can be imported, else the message that says how to install it."""
    try:
        import mistral_common  # noqa: F401
    except ImportError:
        return MISSING_MESSAGE
    return None


def is_tekken_processor(processor: Any) -> bool:
    """True for a processor whose tokenizer is transformers' mistral-common backend (Voxtral's released one)."""
    return type(getattr(processor, "tokenizer", None)).__name__ == "MistralCommonBackend"


def _wav_base64(waveform: np.ndarray) -> str:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(waveform, dtype=np.float32), TARGET_SAMPLE_RATE, format="WAV", subtype="FLOAT")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def conversation(question: str, clips: Sequence[np.ndarray], system_prompt: str | None = None) -> list[dict]:
    """One user turn: every clip (as base64 float32 WAV), then the question; a system turn first if given."""
    content = [{"type": "audio", "base64": _wav_base64(w)} for w in clips] + [{"type": "text", "text": question}]
    turns = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return turns + [{"role": "user", "content": content}]


def encode(
    processor: Any, questions: Sequence[str], waveforms: Sequence[Sequence[np.ndarray]], system_prompt: str | None
) -> tuple[dict[str, Any], list[str]]:
    """`VoxtralProcessor.apply_chat_template` on each (question, clips): the padded inputs (the tokenizer's
    padding side) and each prompt's text with every run of `[AUDIO]` shown as one placeholder."""
    audio_token = processor.audio_token
    for i, question in enumerate(questions):
        if audio_token in question:
            raise ValueError(f"question {i} contains {audio_token}; the chat template adds the audio tokens itself.")
    extractor = processor.feature_extractor
    # Each clip's features are cut into windows of the feature extractor's length (the released model: 30 s, 3000
    # frames, the processor's defaults); a checkpoint with shorter windows (the tests' tiny ones) keeps its own.
    audio_kwargs = {"pad_to_multiple_of": int(extractor.n_samples),
                    "max_source_positions": int(extractor.nb_max_frames)}
    encoded = processor.apply_chat_template(
        [conversation(q, w, system_prompt) for q, w in zip(questions, waveforms)],
        tokenize=True, return_dict=True, processor_kwargs={"audio_kwargs": audio_kwargs},
    )
    pattern = re.compile(f"(?:{re.escape(audio_token)})+")
    texts = [
        pattern.sub(audio_token, processor.tokenizer.decode(row[mask.bool()].tolist(), skip_special_tokens=False))
        for row, mask in zip(encoded["input_ids"], encoded["attention_mask"])
    ]
    return dict(encoded), texts
