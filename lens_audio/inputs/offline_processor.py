"""Processors built with no downloads: a small byte-level BPE tokenizer plus a Whisper feature extractor.

Used for random test checkpoints and for the workshop model. Each family's processor has that family's
special tokens and prompt layout, so prompts render as for the released checkpoints; only the vocabulary is
small:

- Qwen2-Audio: transformers' `Qwen2AudioProcessor` (`<|audio_bos|><|AUDIO|><|audio_eos|>` per clip).
- AudioFlamingo3: transformers' `AudioFlamingo3Processor` with its chat layout (`<sound>` before the text of
  the user turn), one clip per prompt as that processor requires.
- Qwen2.5-Omni thinker: transformers' `Qwen2_5OmniProcessor` without its image/video parts
  (`lens_audio.inputs.omni`), `<|audio_bos|><|AUDIO|><|audio_eos|>` per clip in the user turn.
- Qwen3-Omni-MoE thinker: transformers' `Qwen3OmniMoeProcessor` without its image/video parts, the same layout with
  `<|audio_start|><|audio_pad|><|audio_end|>`.
- Music Flamingo: transformers' `MusicFlamingoProcessor`, AudioFlamingo3's layout with each clip's `<sound>`
  tokens between `<|sound_bos|>` and `<|sound_eos|>`.
- Voxtral: `VoxtralPromptProcessor` below, since transformers' `VoxtralProcessor` needs `mistral-common` and
  the Tekken tokenizer files; it lays prompts out as mistral-common does
  (`<s>[INST][BEGIN_AUDIO][AUDIO]*n ... text[/INST]`, 375 `[AUDIO]` per started 30 s of audio).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
FAMILY_SPECIAL_TOKENS = {
    "qwen2-audio": SPECIAL_TOKENS,
    "audioflamingo3": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>"),
    "voxtral": ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AUDIO]", "[BEGIN_AUDIO]"),
    "musicflamingo": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<sound>", "<|sound_bos|>", "<|sound_eos|>"),
    "qwen2.5-omni": (*SPECIAL_TOKENS, "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"),
    "qwen3-omni-moe": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_pad|>", "<|audio_start|>",
                       "<|audio_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"),
}
DEFAULT_CORPUS = (
    "system user assistant You are a helpful assistant. Audio 1: Audio 2: "
    "What is the sound? Which instrument is playing? Choose the answer from the options. "
    "A. B. C. D. yes no dog cat bird speech music noise tone chirp"
)
# AudioFlamingo3's layout (as transformers' tests pin it for nvidia/audio-flamingo-3-hf): default system turn,
# then each audio's `<sound>` before the user's text.
AF3_CHAT_TEMPLATE = (
    r"{% for message in messages %}"
    r"{% if loop.first and message['role'] != 'system' %}"
    r"{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    r"{{ '<|im_start|>' + message['role'] + '\n' }}"
    r"{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    r"{% for c in message['content'] %}{% if c['type'] == 'audio' %}{{ '<sound>' }}{% endif %}{% endfor %}"
    r"{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    r"{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Voxtral's instruct layout (mistral-common): no system turn; audio chunks first, then the text.
VOXTRAL_CHAT_TEMPLATE = (
    r"{{ '<s>' }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST]' }}"
    r"{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    r"{% for c in message['content'] %}{% if c['type'] == 'audio' %}{{ '[BEGIN_AUDIO][AUDIO]' }}{% endif %}{% endfor %}"
    r"{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    r"{% endif %}{{ '[/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + '</s>' }}"
    r"{% endif %}{% endfor %}"
)

# Qwen2.5-Omni's layout (its released chat template, audio and text parts): default system turn, then the user's
# parts in order, each audio as `<|audio_bos|><|AUDIO|><|audio_eos|>`.
OMNI_CHAT_TEMPLATE = (
    r"{% for message in messages %}"
    r"{% if loop.first and message['role'] != 'system' %}"
    r"{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    r"{{ '<|im_start|>' + message['role'] + '\n' }}"
    r"{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    r"{% for c in message['content'] %}{% if c['type'] == 'audio' %}{{ '<|audio_bos|><|AUDIO|><|audio_eos|>' }}"
    r"{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    r"{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# Qwen3-Omni's: the same layout with its own audio tokens.
OMNI3_CHAT_TEMPLATE = OMNI_CHAT_TEMPLATE.replace("<|audio_bos|><|AUDIO|><|audio_eos|>",
                                                 "<|audio_start|><|audio_pad|><|audio_end|>")


def build_offline_processor(
    corpus: Iterable[str] = (DEFAULT_CORPUS,),
    vocab_size: int = 400,
    n_mels: int = 128,
    chunk_seconds: int = 30,
    family: str = "qwen2-audio",
):
    """Train a tiny BPE tokenizer on `corpus` and pair it with a Whisper feature extractor, for `family`.

    `chunk_seconds` is the audio window: the processor pads every clip to
    `chunk_seconds * 100` mel frames, which must equal twice the audio
    encoder's `max_source_positions` (the released models: 30 s, 3000 frames, 1500).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, WhisperFeatureExtractor

    if family not in FAMILY_SPECIAL_TOKENS:
        raise ValueError(f"family must be one of {sorted(FAMILY_SPECIAL_TOKENS)}, not {family!r}.")
    specials = FAMILY_SPECIAL_TOKENS[family]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    eos, pad = {"voxtral": ("</s>", "<unk>")}.get(family, ("<|im_end|>", "<|endoftext|>"))
    from lens_audio.inputs.omni import OMNI_TOKENS

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=eos, pad_token=pad, additional_special_tokens=list(specials[1:]),
        **({"extra_special_tokens": OMNI_TOKENS[family]} if family in OMNI_TOKENS else {}),
    )
    features = WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=16_000, hop_length=160, chunk_length=chunk_seconds, n_fft=400
    )
    if family == "audioflamingo3":
        from transformers import AudioFlamingo3Processor

        return AudioFlamingo3Processor(features, fast, chat_template=AF3_CHAT_TEMPLATE)
    if family == "musicflamingo":  # AudioFlamingo3's layout, each clip's tokens between <|sound_bos|> and <|sound_eos|>
        from transformers import MusicFlamingoProcessor

        return MusicFlamingoProcessor(features, fast, chat_template=AF3_CHAT_TEMPLATE)
    if family in OMNI_TOKENS:
        from lens_audio.inputs.omni import audio_only_processor

        template = OMNI_CHAT_TEMPLATE if family == "qwen2.5-omni" else OMNI3_CHAT_TEMPLATE
        return audio_only_processor(family, features, fast, template)
    if family == "voxtral":
        fast.chat_template = VOXTRAL_CHAT_TEMPLATE
        return VoxtralPromptProcessor(features, fast)
    from transformers import Qwen2AudioProcessor

    return Qwen2AudioProcessor(feature_extractor=features, tokenizer=fast)


class VoxtralPromptProcessor:
    """Voxtral's prompt layout and features without mistral-common: the interface `make_batch` uses.

    Each `[BEGIN_AUDIO][AUDIO]` of a rendered prompt takes one clip; its `[AUDIO]` becomes
    `tokens_per_chunk` tokens per started window (`chunk_seconds`), and its features are those of the clip
    zero-padded to whole windows, cut into `[mels, 2 * n_ctx]` chunks, as transformers' `VoxtralProcessor` does.
    """

    audio_token = "[AUDIO]"

    def __init__(self, feature_extractor: Any, tokenizer: Any, frames_per_token: int = 8) -> None:
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer
        self.audio_token_id = tokenizer.convert_tokens_to_ids(self.audio_token)
        self.tokens_per_chunk = int(feature_extractor.nb_max_frames) // frames_per_token  # conv stride 2, stack 4

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        if any(m["role"] == "system" for m in messages):
            raise ValueError("Voxtral's instruct template has no system turn; leave system_prompt out.")
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, text: list[str], audio: list[np.ndarray] | None = None,
                 text_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """Expand placeholders and extract features; `text_kwargs` may set `padding_side` (left or right)."""
        padding_side = (text_kwargs or {}).get("padding_side")
        audio = list(audio or [])
        window = int(self.feature_extractor.n_samples)
        expanded, features, clip = [], [], 0
        for prompt in text:
            pieces = prompt.split(self.audio_token)
            out = pieces[0]
            for piece in pieces[1:]:
                if clip >= len(audio):
                    raise ValueError(f"the prompts hold more {self.audio_token} than the {len(audio)} clips.")
                n_chunks = max(1, -(-len(audio[clip]) // window))
                padded = np.zeros(n_chunks * window, dtype=np.float32)
                padded[: len(audio[clip])] = audio[clip]
                mel = self.feature_extractor(
                    padded, sampling_rate=16_000, return_tensors="pt", padding=False, truncation=False
                )
                mels = mel["input_features"][0]  # [mels, n_chunks * frames]
                features.append(mels.reshape(mels.shape[0], n_chunks, -1).transpose(0, 1))
                out += self.audio_token * (n_chunks * self.tokens_per_chunk) + piece
                clip += 1
            expanded.append(out)
        if clip != len(audio):
            raise ValueError(f"{len(audio)} clips but {clip} {self.audio_token} placeholders in the prompts.")
        encoded = self.tokenizer(expanded, return_tensors="pt", padding=True, add_special_tokens=False,
                                 **({"padding_side": padding_side} if padding_side else {}))
        result = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if features:
            result["input_features"] = torch.cat(features)
        return result
