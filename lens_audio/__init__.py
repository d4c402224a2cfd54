"""lens_audio: a TransformerLens workbench for audio-language models (Qwen2-Audio)."""

from lens_audio.inputs import AudioBatch, AudioError, load_audio, make_batch
from lens_audio.model import AudioLMConfig, HookedAudioLM, KVCache

__version__ = "0.1.0"
__all__ = ["AudioBatch", "AudioError", "AudioLMConfig", "HookedAudioLM", "KVCache", "load_audio", "make_batch"]
