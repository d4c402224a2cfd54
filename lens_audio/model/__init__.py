"""The hooked port of Qwen2-Audio, AudioFlamingo3 and Voxtral (`family`), its loading and its placement."""

from lens_audio.model.config import AudioEncoderConfig, AudioLMConfig
from lens_audio.model.hooked_audio_lm import HookedAudioLM
from lens_audio.model.kv_cache import KVCache

__all__ = ["AudioEncoderConfig", "AudioLMConfig", "HookedAudioLM", "KVCache"]
