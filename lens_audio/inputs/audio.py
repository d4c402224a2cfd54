"""Reading and checking audio: any file librosa reads, or an array with its sample rate, to 16 kHz mono float32."""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from lens_audio.inputs.frames import mel_frames, n_audio_tokens

TARGET_SAMPLE_RATE = 16_000
AudioSource = str | Path | np.ndarray | torch.Tensor
MIN_SAMPLE_RATE = 1000  # below this a "sample rate" is almost surely something else (and resampling would explode)
MAX_CHANNELS = 8  # more channels than this: refused (an array's layout would be ambiguous; a file is mixed first)
FLOAT_PEAK_WARNING = 2.0  # float audio peaking above this is probably unscaled integer PCM
FLOAT_PEAK_LIMIT = 1e15  # float audio peaking above this overflows the audio features in float32: refused
_SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


class AudioError(ValueError):
    """An audio input that cannot be used; the message names the input and the fix."""


def load_audio(
    source: AudioSource,
    sampling_rate: int | None = None,
    *,
    name: str | None = None,
) -> Float[np.ndarray, " samples"]:
    """Return `source` as a 16 kHz mono float32 waveform.

    Args:
        source: a path to an audio file, or an array shaped `[samples]`,
            `[channels, samples]` (librosa's layout) or `[samples, channels]`
            (soundfile's layout; recognised when it has at most 8 columns).
        sampling_rate: the array's sample rate; required for arrays, ignored
            for files (their header says it).
        name: how to call this input in error messages (defaults to the path).
    """
    import librosa

    label = name or (str(source) if isinstance(source, (str, Path)) else "audio array")
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            raise AudioError(f"{label} is a folder, not an audio file; give the path of a file inside it.")
        if not path.is_file():
            raise AudioError(f"{label}: no such audio file.")
        waveform, rate = _read_file(path, label)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        if sampling_rate is None:
            raise AudioError(f"{label}: an array needs its sampling_rate (e.g. sampling_rate=44100).")
        array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
        waveform, rate = pcm_to_float(array, label), check_sampling_rate(sampling_rate, label)
    elif is_number_list(source):
        raise AudioError(
            f"{label}: a Python list of numbers is not a clip (a list means several clips); pass the samples as a "
            "numpy array, np.asarray(samples, dtype=np.float32), with their sampling_rate."
        )
    else:
        raise AudioError(f"{label}: expected a file path or a numpy array, got {type(source).__name__}.")
    waveform = _to_mono(np.asarray(waveform), label)
    if waveform.size == 0:
        raise AudioError(f"{label}: the audio is empty (0 samples).")
    if not np.all(np.isfinite(waveform)):
        raise AudioError(f"{label}: the audio holds NaN or infinite samples; clean or re-encode it.")
    waveform = waveform.astype(np.float32, copy=False)
    if rate != TARGET_SAMPLE_RATE:
        waveform = librosa.resample(waveform, orig_sr=rate, target_sr=TARGET_SAMPLE_RATE)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def check_sampling_rate(sampling_rate: object, label: str) -> int:
    """A whole number of samples per second, at least MIN_SAMPLE_RATE, else an AudioError naming the input."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, numbers.Real) or not (
        math.isfinite(sampling_rate) and sampling_rate == int(sampling_rate) and sampling_rate >= MIN_SAMPLE_RATE
    ):
        raise AudioError(
            f"{label}: sampling_rate must be a whole number of samples per second, at least {MIN_SAMPLE_RATE} "
            f"(e.g. 16000 or 44100), not {sampling_rate!r}."
        )
    return int(sampling_rate)


def is_number_list(value: object) -> bool:
    """A (nested) Python list or tuple of plain numbers: samples typed as a list rather than an array."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    return all(isinstance(v, numbers.Number) or is_number_list(v) for v in value)


def add_white_noise(
    waveform: Float[np.ndarray, " samples"], snr_db: float, seed: int | Sequence[int] = 0
) -> Float[np.ndarray, " samples"]:
    """`waveform` plus seeded Gaussian white noise at `snr_db` (the clip's mean power over the noise's, in dB)."""
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be a finite number of dB, not {snr_db!r}.")
    x = np.asarray(waveform, dtype=np.float32)
    power = float(np.mean(x.astype(np.float64) ** 2))
    noise = np.random.default_rng(seed).standard_normal(x.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def pcm_to_float(waveform: np.ndarray, label: str) -> np.ndarray:
    """Integer PCM scaled to [-1, 1) by its dtype's range (as soundfile and librosa do); floats pass through.

    Float audio far outside [-1, 1] is kept but warned about: it is usually integer PCM cast without scaling.
    """
    if waveform.dtype.kind == "b" or waveform.dtype.kind not in "iuf":
        raise AudioError(f"{label}: audio of dtype {waveform.dtype} is not a waveform; give float or integer PCM.")
    if waveform.dtype.kind == "i":
        return waveform.astype(np.float32) / float(2 ** (8 * waveform.dtype.itemsize - 1))
    if waveform.dtype.kind == "u":
        half = float(2 ** (8 * waveform.dtype.itemsize - 1))
        return (waveform.astype(np.float32) - half) / half
    check_float_peak(waveform, label, "pass the integer array itself (it is scaled by its dtype) or divide by 32768 "
                     "(16-bit)")
    return waveform


def check_float_peak(waveform: np.ndarray, label: str, fix: str) -> None:
    """Warn (naming `label`) about float samples far outside [-1, 1]; refuse ones so large the features overflow.

    The same rule for arrays and for float audio files (a WAV of 32-bit floats is not scaled when read).
    """
    peak = float(np.abs(waveform).max()) if waveform.size and np.all(np.isfinite(waveform)) else 0.0
    if peak > FLOAT_PEAK_LIMIT:
        raise AudioError(
            f"{label}: float samples reach {peak:.3g}, so large that the audio features overflow (the limit is "
            f"{FLOAT_PEAK_LIMIT:.0e}); the samples are not audio as stored: {fix}."
        )
    if peak > FLOAT_PEAK_WARNING:
        warnings.warn(
            f"{label}: float samples reach {peak:.3g}, far outside [-1, 1]; they are used as they are (not rescaled). "
            f"If they are integer PCM stored as floats, {fix}.",
            stacklevel=4,
        )


def _read_file(path: Path, label: str) -> tuple[np.ndarray, int]:
    """soundfile for what libsndfile reads (wav, flac, ogg, mp3); librosa's other backends for the rest.

    The file's header is checked as an array's arguments are (`file_header`): a sample rate under
    `MIN_SAMPLE_RATE` or more than `MAX_CHANNELS` channels is refused naming the file and the header's values. Float
    samples get the arrays' loudness rule (`check_float_peak`), and a WAV shorter than its header says warns.
    """
    import librosa
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception:
        info = None
    if info is not None:
        check_header(label, info.samplerate, info.channels)
        try:
            data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioError(f"{label}: its header reads but its samples do not ({type(exc).__name__}: {exc}); "
                             "re-encode the file.") from exc
        warn_if_truncated(path, label, data.shape[0], info)
        waveform, rate = data.mean(axis=1), int(rate)  # a file's layout is known: [frames, channels]
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                waveform, rate = librosa.load(path, sr=None, mono=False)
        except Exception as exc:
            raise AudioError(
                f"{label}: could not read it as audio ({type(exc).__name__}: {exc}). Use wav, flac, ogg or mp3."
            ) from exc
        check_header(label, rate, 1 if waveform.ndim == 1 else waveform.shape[0])
        waveform = waveform if waveform.ndim == 1 else waveform.mean(axis=0)  # librosa's layout: [channels, samples]
    check_float_peak(waveform, label, "rescale the file to [-1, 1] or save it as integer PCM")
    return waveform, int(rate)


def check_header(label: str, sample_rate: int, channels: int) -> None:
    """A file's sample rate and channel count, checked as an array's are; the error names the file and the values."""
    if sample_rate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{label}: the file's header says {sample_rate} Hz ({channels} channel(s)); a sample rate under "
            f"{MIN_SAMPLE_RATE} Hz is not audio the model can hear (resampling it to 16 kHz would invent the clip). "
            "If the header is wrong, write the file again with its true sample rate."
        )
    if channels > MAX_CHANNELS:
        raise AudioError(
            f"{label}: the file's header says {channels} channels ({sample_rate} Hz); at most {MAX_CHANNELS} are "
            "accepted, and which of them the model should hear is yours to choose: mix it down or pick a channel "
            "first (e.g. `sox in.wav -c 1 out.wav` or `ffmpeg -i in.wav -ac 1 out.wav`), or read it yourself and "
            "pass the chosen [samples] array with its sampling_rate."
        )


def warn_if_truncated(path: Path, label: str, frames: int, info: Any) -> None:
    """Warn when a WAV file holds fewer frames than its header's data chunk declares (a cut-off copy).

    libsndfile reads what is there without a word; a benchmark clip cut in half would be heard as half a clip.
    """
    declared = _wav_data_bytes(path)
    width = _SAMPLE_BYTES.get(info.subtype)
    if declared is None or width is None:
        return
    expected = declared // (width * info.channels)
    if frames < expected:
        warnings.warn(
            f"{label}: the file holds {frames} frames ({frames / info.samplerate:.2f} s) but its header declares "
            f"{expected} ({expected / info.samplerate:.2f} s): it looks cut off (an interrupted copy or download), "
            "and only what is there is used. Copy the file again to hear the whole clip.",
            stacklevel=4,
        )


def _wav_data_bytes(path: Path) -> int | None:
    """The size a RIFF/WAVE file's `data` chunk declares (None for other files or unreadable headers)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return None
                size = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"data":
                    return None if size == 0xFFFFFFFF else size  # 0xFFFFFFFF: a streamed WAV, size unknown
                handle.seek(size + (size & 1), 1)
    except OSError:
        return None


def _to_mono(waveform: np.ndarray, label: str) -> np.ndarray:
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim == 2:
        if waveform.shape[0] <= 8 and waveform.shape[0] < waveform.shape[1]:
            return waveform.mean(axis=0)
        if waveform.shape[1] <= 8:
            return waveform.mean(axis=1)
    raise AudioError(
        f"{label}: cannot tell channels from samples in shape {waveform.shape}; "
        "give [samples], [channels, samples] or [samples, channels] with at most 8 channels."
    )


_CUTS: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("lens_audio_cuts", default=None)


@contextlib.contextmanager
def recording_cuts() -> Iterator[list[float]]:
    """Within the block, every clip `fit_to_window` sees is listed in order with the seconds the model's window cut
    from it (0.0 for a clip that fits): what a run records per item (`truncated_s`), beyond the once-per-process
    warning."""
    cuts: list[float] = []
    token = _CUTS.set(cuts)
    try:
        yield cuts
    finally:
        _CUTS.reset(token)


def fit_to_window(
    waveform: Float[np.ndarray, " samples"], max_samples: int, label: str, on_long: str = "truncate"
) -> Float[np.ndarray, " samples"]:
    """Apply the model's audio window: the encoder sees at most `max_samples` (30 s for Qwen2-Audio).

    `on_long="truncate"` keeps the first window and warns (what the
    processor would do silently); `"error"` refuses the clip. Inside `recording_cuts()` the seconds cut are
    also listed (a benchmark run records them per item).
    """
    cuts = _CUTS.get()
    if cuts is not None:
        cuts.append(max(0, waveform.shape[0] - max_samples) / TARGET_SAMPLE_RATE)
    if waveform.shape[0] <= max_samples:
        return waveform
    seconds, limit = waveform.shape[0] / TARGET_SAMPLE_RATE, max_samples / TARGET_SAMPLE_RATE
    if on_long == "error":
        raise AudioError(
            f"{label}: {seconds:.1f} s is longer than the model's {limit:.0f} s audio window; cut it first."
        )
    if on_long != "truncate":
        raise ValueError(f"on_long must be 'truncate' or 'error', not {on_long!r}.")
    warnings.warn(
        f"{label}: {seconds:.1f} s is longer than the model's {limit:.0f} s window; only the first {limit:.0f} s are "
        "used.",
        stacklevel=3,
    )
    return waveform[:max_samples]


def refuse_too_short(
    waveform: Float[np.ndarray, " samples"], hop_length: int, label: str
) -> Float[np.ndarray, " samples"]:
    """Refuse a clip too short to give the model even one audio token (it would silently hold no audio)."""
    if _audio_tokens(waveform.shape[0], hop_length) >= 1:
        return waveform
    minimum = next(n for n in range(1, 64 * hop_length) if _audio_tokens(n, hop_length) >= 1)
    raise AudioError(
        f"{label}: {1000 * waveform.shape[0] / TARGET_SAMPLE_RATE:.1f} ms is too short for one audio token; the model "
        f"needs at least {1000 * minimum / TARGET_SAMPLE_RATE:.1f} ms ({minimum} samples at 16 kHz); pad or lengthen "
        "it."
    )


def _audio_tokens(n_samples: int, hop_length: int) -> int:
    """Audio tokens for a clip of `n_samples` 16 kHz samples: one mel frame per started hop, then the encoder's rule."""
    return n_audio_tokens(mel_frames(n_samples, hop_length))
