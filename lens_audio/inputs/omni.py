"""The Qwen Omni thinkers' processors, audio and text only (no image or video processor, so no torchvision).

transformers' `Qwen2_5OmniProcessor` and `Qwen3OmniMoeProcessor` take an image and a video processor besides the
feature extractor and tokenizer; building the video processor needs torchvision. The thinker port reads audio and
text only, so `audio_only_processor(family, feature_extractor, tokenizer)` makes the same processor class with just
those two: its `__call__` (placeholder expansion, `feature_attention_mask`, padding) is transformers' own code.
`load_omni_processor(folder, family)` builds it from a checkpoint folder's tokenizer, feature extractor and chat
template when `AutoProcessor` cannot (torchvision missing, or the folder was saved by this class).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

# The special tokens transformers' Omni processors read from the tokenizer (`tokenizer.audio_token`, ...).
OMNI_TOKENS = {
    "qwen2.5-omni": dict(audio_token="<|AUDIO|>", audio_bos_token="<|audio_bos|>", audio_eos_token="<|audio_eos|>",
                         image_token="<|IMAGE|>", video_token="<|VIDEO|>", vision_bos_token="<|vision_bos|>",
                         vision_eos_token="<|vision_eos|>"),
    "qwen3-omni-moe": dict(audio_token="<|audio_pad|>", audio_bos_token="<|audio_start|>",
                           audio_eos_token="<|audio_end|>", image_token="<|image_pad|>", video_token="<|video_pad|>",
                           vision_bos_token="<|vision_start|>", vision_eos_token="<|vision_end|>"),
}
_PROCESSOR = {"qwen2.5-omni": "Qwen2_5OmniProcessor", "qwen3-omni-moe": "Qwen3OmniMoeProcessor"}


@functools.cache
def _audio_only_class(family: str) -> type:
    import transformers

    base = getattr(transformers, _PROCESSOR[family])

    def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None):  # noqa: N807
        super(base, self).__init__(feature_extractor, tokenizer, chat_template=chat_template)
        for name in (*OMNI_TOKENS[family], "image_token_id", "audio_token_id", "video_token_id"):
            setattr(self, name, getattr(tokenizer, name))  # as base.__init__ does

    def refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"{base.__name__} without an image/video processor: HookedAudioLM's thinker port takes "
                         "audio and text only (video-interleaved audio, use_audio_in_video, is not implemented).")

    # ProcessorMixin reads a processor's parts from its __init__ signature: feature_extractor and tokenizer only.
    return type(f"{base.__name__}AudioOnly", (base,), {"__init__": __init__, "_process_videos": refuse,
                                                        "_process_images": refuse})


def audio_only_processor(family: str, feature_extractor: Any, tokenizer: Any, chat_template: str | None = None) -> Any:
    """transformers' Omni processor of `family` ("qwen2.5-omni" or "qwen3-omni-moe") without image/video parts."""
    cls = _audio_only_class(family)
    return cls(feature_extractor, tokenizer, chat_template)


def load_omni_processor(folder: Path, family: str) -> Any:
    """The audio-only processor from a checkpoint folder's tokenizer, Whisper feature extractor and chat template."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    for name, token in OMNI_TOKENS[family].items():  # released tokenizers name them in tokenizer_config.json
        if getattr(tokenizer, name, None) is None:
            setattr(tokenizer, name, token)
    features = WhisperFeatureExtractor.from_pretrained(folder)
    return audio_only_processor(family, features, tokenizer, _chat_template(folder, tokenizer))


def _chat_template(folder: Path, tokenizer: Any) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text()).get("chat_template")
    return getattr(tokenizer, "chat_template", None)
