"""Twelve synthetic sound classes in three domains, made with numpy from a random generator.

What stands for what (MMAU's domains are sound, music and speech):

- sound:  `siren` (a tone whose pitch swings slowly), `clicks` (a regular train of
  short clicks), `static` (bursts of band-passed noise), `engine` (a low buzzing
  harmonic drone with a throb);
- music:  `chord` (three notes of a triad held together), `melody` (a run of
  single notes from a pentatonic scale), `drums` (kick-drum thumps with hi-hats on
  a tempo), `bell` (struck inharmonic partials that ring out);
- speech-like: `vowel` (a steady voiced vowel, glottal pulses through two
  formants), `syllables` (voiced sounds whose formants jump every syllable at a
  speaking rhythm), `whisper` (noise through formants with a syllable rhythm, no
  pitch), `shout` (a high, harsh, loud voiced vowel).

Every parameter (pitch, rate, tempo, formants, ...) is drawn per clip, so a
class is a family of sounds, not one waveform. `mix_noise` adds white noise at
a chosen signal-to-noise ratio.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 16_000
SoundFamily = Callable[[np.random.Generator, float], np.ndarray]  # rng, seconds -> 16 kHz waveform


def _time(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _envelope(n: int, attack: float = 0.02, release: float = 0.05) -> np.ndarray:
    env = np.ones(n)
    a, r = max(1, int(attack * SAMPLE_RATE)), max(1, int(release * SAMPLE_RATE))
    env[:a] = np.linspace(0, 1, min(a, n))[: min(a, n)]
    env[-r:] *= np.linspace(1, 0, min(r, n))[-min(r, n):]
    return env


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float) -> np.ndarray:
    """A two-pole resonator (a formant) at `frequency` Hz."""
    radius = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    theta = 2 * np.pi * frequency / SAMPLE_RATE
    return lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius**2], signal)


def _glottal(t: np.ndarray, f0: np.ndarray | float) -> np.ndarray:
    """A pulse-like voiced source: a sawtooth at the (possibly varying) pitch `f0`."""
    phase = np.cumsum(np.broadcast_to(f0, t.shape)) / SAMPLE_RATE
    return 2 * (phase % 1.0) - 1


def _formants(source: np.ndarray, formants: list[tuple[float, float]]) -> np.ndarray:
    return sum(_resonate(source, f, bw) for f, bw in formants)


VOWELS = [
    [(730, 90), (1090, 110)],
    [(270, 60), (2290, 150)],
    [(300, 70), (870, 90)],
    [(530, 80), (1840, 120)],
    [(570, 80), (840, 100)],
]


def siren(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = _time(seconds)
    center, depth, rate = rng.uniform(600, 1200), rng.uniform(200, 450), rng.uniform(0.6, 2.5)
    frequency = center + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return np.sin(2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE) * _envelope(t.size)


def clicks(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    period = int(SAMPLE_RATE / rng.uniform(5, 18))
    click = rng.standard_normal(40) * np.exp(-np.arange(40) / 6)
    for start in range(int(rng.uniform(0, period)), n - 40, period):
        out[start : start + 40] += click
    return out


def static(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    for _ in range(rng.integers(3, 8)):
        length = int(rng.uniform(0.05, 0.2) * SAMPLE_RATE)
        start = rng.integers(0, max(1, n - length))
        burst = _resonate(rng.standard_normal(length), rng.uniform(1500, 5000), rng.uniform(800, 2500))
        out[start : start + length] += burst * _envelope(length, 0.005, 0.01)
    return out


def engine(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = _time(seconds)
    f0 = rng.uniform(40, 90)
    buzz = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12))
    throb = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(5, 14) * t)
    return buzz * throb * _envelope(t.size, 0.1, 0.1)


def chord(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = _time(seconds)
    root = rng.uniform(200, 450)
    third = 4 if rng.random() < 0.5 else 3
    notes = [root * 2 ** (s / 12) for s in (0, third, 7)]
    tone = sum(np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t) for f in notes)
    return tone * _envelope(t.size, 0.03, 0.2)


def melody(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    base, scale = rng.uniform(250, 450), [0, 2, 4, 7, 9, 12]
    note_length = int(rng.uniform(0.12, 0.25) * SAMPLE_RATE)
    for start in range(0, n - note_length + 1, note_length):
        f = base * 2 ** (rng.choice(scale) / 12)
        t = np.arange(note_length) / SAMPLE_RATE
        out[start : start + note_length] = (np.sin(2 * np.pi * f * t) + 0.4 * np.sin(4 * np.pi * f * t)) * _envelope(
            note_length, 0.01, 0.04
        )
    return out


def drums(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    beat = int(SAMPLE_RATE * 60 / rng.uniform(100, 200))
    kick_t = np.arange(int(0.15 * SAMPLE_RATE)) / SAMPLE_RATE
    kick_f = rng.uniform(50, 90) * (1 + 2 * np.exp(-kick_t * 30))
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / SAMPLE_RATE) * np.exp(-kick_t * 20)
    hat = rng.standard_normal(400) * np.exp(-np.arange(400) / 60) * 0.3
    for start in range(0, n - kick.size, beat):
        out[start : start + kick.size] += kick
        half = start + beat // 2
        if half + hat.size < n:
            out[half : half + hat.size] += hat
    return out


def bell(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    f0 = rng.uniform(300, 700)
    for _ in range(rng.integers(1, 4)):
        start = rng.integers(0, max(1, n // 2))
        t = np.arange(n - start) / SAMPLE_RATE
        partials = sum(a * np.sin(2 * np.pi * f0 * r * t) for r, a in ((1, 1), (2.76, 0.6), (5.4, 0.4), (8.93, 0.25)))
        out[start:] += partials * np.exp(-t * rng.uniform(2, 5))
    return out


def vowel(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = _time(seconds)
    f0 = rng.uniform(90, 160) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    formants = VOWELS[rng.integers(len(VOWELS))]
    return _formants(_glottal(t, f0), formants) * _envelope(t.size, 0.05, 0.1)


def syllables(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = _time(seconds)
    f0 = rng.uniform(100, 200) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    source = _glottal(t, f0)
    length = int(rng.uniform(0.15, 0.25) * SAMPLE_RATE)
    out = np.zeros(t.size)
    for start in range(0, t.size, length):
        piece = source[start : start + length]
        formants = VOWELS[rng.integers(len(VOWELS))]
        out[start : start + piece.size] = _formants(piece, formants) * _envelope(piece.size, 0.02, 0.06)
    return out


def whisper(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = _time(seconds)
    noise = rng.standard_normal(t.size)
    formants = VOWELS[rng.integers(len(VOWELS))]
    rhythm = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6))) ** 2
    return _formants(noise, [(f, bw * 3) for f, bw in formants]) * rhythm


def shout(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = _time(seconds)
    f0 = rng.uniform(230, 350) * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))
    voiced = np.clip(3 * _glottal(t, f0), -1, 1)
    formants = VOWELS[rng.integers(len(VOWELS))]
    return _formants(voiced, [(f * 1.15, bw) for f, bw in formants]) * _envelope(t.size, 0.01, 0.05)


DOMAINS: dict[str, dict[str, SoundFamily]] = {
    "sound": {"siren": siren, "clicks": clicks, "static": static, "engine": engine},
    "music": {"chord": chord, "melody": melody, "drums": drums, "bell": bell},
    "speech": {"vowel": vowel, "syllables": syllables, "whisper": whisper, "shout": shout},
}
CLASS_DOMAIN = {name: domain for domain, classes in DOMAINS.items() for name in classes}


def synthesize(name: str, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One clip of class `name`, peak-normalised to 0.5-0.9."""
    wave = DOMAINS[CLASS_DOMAIN[name]][name](rng, seconds).astype(np.float64)
    return wave / (np.abs(wave).max() + 1e-9) * rng.uniform(0.5, 0.9)


def mix_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white noise so that signal power / noise power = `snr_db` decibels; returns float32."""
    signal_power = np.mean(wave**2) + 1e-12
    noise = rng.standard_normal(wave.size) * np.sqrt(signal_power / 10 ** (snr_db / 10))
    mixed = wave + noise
    peak = np.abs(mixed).max()
    return (mixed / peak * 0.9 if peak > 0.99 else mixed).astype(np.float32)
