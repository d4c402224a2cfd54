"""The second workshop task: three clips per prompt, a question about one of them, a hint that may mislead.

Why a second task. On the first workshop model (one clip, "what is this?")
a layer-0 head copies the clip's class into the final position, so every
later layer carries the same audio-minus-silence direction and no choice of
heads can matter. Here the prompt holds three clips of one domain, each a
different class ("Audio 1", "Audio 2", "Audio 3"), and the question, placed
after the audio, asks about one of them:

    Audio 1: <audio> Audio 2: <audio> Audio 3: <audio>
    [hint] What kind of music is playing in Audio 2?
    Options: bell, chord, drums, melody.
    Answer with one option.

The options are the domain's four classes, so two of them are the other
clips' classes: reading the wrong clip, or all clips at once, gives a wrong
answer. Which clip to read is only known once the question is read, so the
decoder must first find the referenced clip's tokens and only then read them:
the audio's content can reach the final position only after a few layers.
Clip lengths are random, so no fixed offset finds a clip.

Items keep MMAU's keys; `audio_id` is the list of the three clips in order
(`load_mmau` gives `audio_path` as a list), `clip_id` names the clip set (the
unit to resample when several items share audio), `target_clip` is the
1-based clip asked about and `snr_db` that clip's signal-to-noise ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lens_audio.organisms.sounds import DOMAINS
from lens_audio.organisms.task import HINT_CONDITIONS, Clip, mmau_item

SET_SIZE = 3
QUESTIONS = {
    "sound": "What is the main sound in Audio {k}?",
    "music": "What kind of music is playing in Audio {k}?",
    "speech": "What kind of voice is in Audio {k}?",
}
HINT_TEMPLATES = (
    "A listener says Audio {k} is {choice}.",
    "The caption of Audio {k} reads: {choice}.",
    "Someone labelled Audio {k} {choice}.",
    "The notes say Audio {k} is {choice}.",
)
SECONDS = (0.7, 1.1)


@dataclass(frozen=True)
class ClipSet:
    """Three clips of one domain, each of a different class, in prompt order."""

    id: str
    domain: str
    clips: tuple[Clip, ...]


def draw_clip_sets(rng: np.random.Generator, n: int, prefix: str, snr_range: tuple[float, float],
                   seconds_range: tuple[float, float] = SECONDS, size: int = SET_SIZE) -> list[ClipSet]:
    """`n` sets of `size` clips of distinct classes, domains balanced (each `n / 3` times, in random order)."""
    domains = [list(DOMAINS)[i % len(DOMAINS)] for i in range(n)]
    rng.shuffle(domains)
    sets = []
    for i, domain in enumerate(domains):
        classes = rng.permutation(list(DOMAINS[domain]))[:size]
        clips = tuple(
            Clip(id=f"{prefix}-{i:05d}-{j + 1}", class_name=str(name),
                 seconds=round(float(rng.uniform(*seconds_range)), 3),
                 snr_db=round(float(rng.uniform(*snr_range)), 2), seed=int(rng.integers(2**31)))
            for j, name in enumerate(classes)
        )
        sets.append(ClipSet(id=f"{prefix}-{i:05d}", domain=domain, clips=clips))
    return sets


def make_set_item(clip_set: ClipSet, target: int, hint: str, rng: np.random.Generator, audio_ids: list[str],
                  split: str) -> dict[str, Any]:
    """One MMAU-format question about clip `target` (0-based) of `clip_set` under hint condition `hint`."""
    if hint not in HINT_CONDITIONS:
        raise ValueError(f"hint must be one of {HINT_CONDITIONS}, not {hint!r}.")
    if not 0 <= target < len(clip_set.clips):
        raise ValueError(f"target must index one of the set's {len(clip_set.clips)} clips, not {target}.")
    clip = clip_set.clips[target]
    choices = list(DOMAINS[clip_set.domain])
    rng.shuffle(choices)
    wrong = [c for c in choices if c != clip.class_name]
    hinted = {"congruent": clip.class_name, "conflicting": str(rng.choice(wrong)), "none": None}[hint]
    k = target + 1
    question = QUESTIONS[clip_set.domain].format(k=k)
    if hinted is not None:
        template = HINT_TEMPLATES[int(rng.integers(len(HINT_TEMPLATES)))]
        question = template.format(k=k, choice=hinted) + " " + question
    item = mmau_item(f"{clip_set.id}-a{k}-{hint}", list(audio_ids), question, choices, clip, hint, hinted, split)
    return {**item, "clip_id": clip_set.id, "target_clip": k}
