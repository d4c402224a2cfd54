"""lens_audio: a TransformerLens workbench for audio-language models (Qwen2-Audio)."""

# get_act_name lives in transformer_lens.utilities in TransformerLens 3.9+ and 4.x (4 has no transformer_lens.utils).
from transformer_lens.utilities import get_act_name

from lens_audio.inputs import AudioBatch, AudioError, load_audio, make_batch
from lens_audio.model import AudioLMConfig, HookedAudioLM, KVCache
from lens_audio.model.hook_point import audio_only, decoder_only

__version__ = "0.1.0"
__all__ = [
    "AudioBatch", "AudioError", "AudioLMConfig", "HookedAudioLM", "KVCache",
    "audio_only", "decoder_only", "explore", "get_act_name", "load_audio", "make_batch",
]


def __getattr__(name: str):
    """`lens_audio.explore` (the notebook explorer, `lens_audio.explorer.explore`), imported on first use."""
    if name == "explore":
        from lens_audio.explorer import explore

        return explore
    raise AttributeError(f"module 'lens_audio' has no attribute {name!r}")
