"""lens_audio: a TransformerLens workbench for audio-language models (Qwen2-Audio)."""

from lens_audio.inputs import AudioBatch, AudioError, load_audio, make_batch
from lens_audio.model import AudioLMConfig, HookedAudioLM, KVCache
from lens_audio.model.hook_point import audio_only, decoder_only

# TransformerLens 4 has no `transformer_lens.utils`; get_act_name lives in transformer_lens.utilities.
from transformer_lens.utilities import get_act_name

__version__ = "0.1.0"
__all__ = [
    "AudioBatch", "AudioError", "AudioLMConfig", "HookedAudioLM", "KVCache",
    "audio_only", "decoder_only", "get_act_name", "load_audio", "make_batch",
]
