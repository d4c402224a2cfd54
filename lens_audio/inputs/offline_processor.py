"""A `Qwen2AudioProcessor` built with no downloads: a small byte-level BPE tokenizer plus a Whisper feature extractor.

Used for random test checkpoints and for the workshop model. It has the
Qwen2-Audio special tokens and chat template, so prompts render exactly as
for Qwen2-Audio-7B-Instruct; only the vocabulary is small.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
DEFAULT_CORPUS = (
    "system user assistant You are a helpful assistant. Audio 1: Audio 2: "
    "What is the sound? Which instrument is playing? Choose the answer from the options. "
    "A. B. C. D. yes no dog cat bird speech music noise tone chirp"
)


def build_offline_processor(
    corpus: Iterable[str] = (DEFAULT_CORPUS,),
    vocab_size: int = 400,
    n_mels: int = 128,
    chunk_seconds: int = 30,
):
    """Train a tiny BPE tokenizer on `corpus` and pair it with a Whisper feature extractor.

    `chunk_seconds` is the audio window: the processor pads every clip to
    `chunk_seconds * 100` mel frames, which must equal twice the audio
    encoder's `max_source_positions` (Qwen2-Audio: 30 s, 3000 frames, 1500).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2AudioProcessor, WhisperFeatureExtractor

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    features = WhisperFeatureExtractor(
        feature_size=n_mels, sampling_rate=16_000, hop_length=160, chunk_length=chunk_seconds, n_fft=400
    )
    return Qwen2AudioProcessor(feature_extractor=features, tokenizer=fast)
