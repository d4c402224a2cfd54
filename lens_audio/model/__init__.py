"""The hooked port of Qwen2-Audio, AudioFlamingo3 and Voxtral (`family`), its loading and its placement."""

from lens_audio.model.config import AudioEncoderConfig, AudioLMConfig
from lens_audio.model.hook_table import HOOK_TABLE
from lens_audio.model.hooked_audio_lm import HookedAudioLM
from lens_audio.model.kv_cache import KVCache
from lens_audio.model.registry import ModelEntry, model_card, register_model

__all__ = [
    "HOOK_TABLE", "AudioEncoderConfig", "AudioLMConfig", "HookedAudioLM", "KVCache", "ModelEntry", "model_card",
    "register_model",
]
