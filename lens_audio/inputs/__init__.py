"""Audio and prompt inputs: loading audio, building batches and their silence twins."""

from lens_audio.inputs.audio import AudioError, load_audio
from lens_audio.inputs.batch import AudioBatch, make_batch

__all__ = ["AudioBatch", "AudioError", "load_audio", "make_batch"]
