"""The workshop task: multiple-choice questions about synthetic clips, with a text hint that may mislead.

Each clip is asked about three times, in MMAU's JSON format, differing only in
the question's context sentence:

- `congruent`: the sentence names the right choice;
- `conflicting`: it names a wrong choice (the test of text dominance);
- `none`: no sentence (the audio alone decides).

The hint condition is stored in MMAU's `sub-category` (so the official
per-sub-category report breaks results down by it) and in extra keys
`hint`, `hinted_choice` and `snr_db`, which MMAU tools ignore. Difficulty
follows the signal-to-noise ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lens_audio.organisms.sounds import CLASS_DOMAIN, DOMAINS, mix_noise, synthesize

HINT_CONDITIONS = ("congruent", "conflicting", "none")
SUB_CATEGORY = {"congruent": "congruent hint", "conflicting": "conflicting hint", "none": "no hint"}
HINT_TEMPLATES = (
    "A listener says this is {}.",
    "The caption reads: {}.",
    "Someone labelled this clip {}.",
    "The notes say it is {}.",
)
QUESTIONS = {
    "sound": "What is the main sound in the clip?",
    "music": "What kind of music is playing?",
    "speech": "What kind of voice is this?",
}
CLASSES = tuple(CLASS_DOMAIN)
DATASET = "lens_audio-workshop"


@dataclass(frozen=True)
class Clip:
    """A synthetic clip, reproducible from its own seed."""

    id: str
    class_name: str
    seconds: float
    snr_db: float
    seed: int

    @property
    def domain(self) -> str:
        return CLASS_DOMAIN[self.class_name]

    def waveform(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return mix_noise(synthesize(self.class_name, rng, self.seconds), self.snr_db, rng)


def draw_clips(
    rng: np.random.Generator, n: int, prefix: str, snr_range: tuple[float, float], seconds_range=(1.0, 1.6)
) -> list[Clip]:
    """`n` clips with classes balanced (each class `n / 12` times, in random order)."""
    classes = [CLASSES[i % len(CLASSES)] for i in range(n)]
    rng.shuffle(classes)
    return [
        Clip(
            id=f"{prefix}-{i:05d}",
            class_name=name,
            seconds=round(float(rng.uniform(*seconds_range)), 3),
            snr_db=round(float(rng.uniform(*snr_range)), 2),
            seed=int(rng.integers(2**31)),
        )
        for i, name in enumerate(classes)
    ]


def make_item(clip: Clip, hint: str, rng: np.random.Generator, audio_id: str, split: str) -> dict[str, Any]:
    """One MMAU-format question about `clip` under hint condition `hint`."""
    if hint not in HINT_CONDITIONS:
        raise ValueError(f"hint must be one of {HINT_CONDITIONS}, not {hint!r}.")
    choices = list(DOMAINS[clip.domain])
    rng.shuffle(choices)
    wrong = [c for c in choices if c != clip.class_name]
    hinted = {"congruent": clip.class_name, "conflicting": str(rng.choice(wrong)), "none": None}[hint]
    question = QUESTIONS[clip.domain]
    if hinted is not None:
        question = HINT_TEMPLATES[int(rng.integers(len(HINT_TEMPLATES)))].format(hinted) + " " + question
    return mmau_item(f"{clip.id}-{hint}", audio_id, question, choices, clip, hint, hinted, split)


def mmau_item(item_id: str, audio_id: Any, question: str, choices: list[str], clip: Clip, hint: str,
              hinted: str | None, split: str) -> dict[str, Any]:
    """An item in MMAU's keys plus the workshop's (`hint`, `hinted_choice`, `snr_db`); `clip` is the one asked about."""
    return {
        "id": item_id,
        "audio_id": audio_id,
        "question": question,
        "choices": choices,
        "answer": clip.class_name,
        "dataset": DATASET,
        "task": clip.domain,
        "split": split,
        "category": "sound identification",
        "sub-category": SUB_CATEGORY[hint],
        "difficulty": "easy" if clip.snr_db >= 12 else ("medium" if clip.snr_db >= 6 else "hard"),
        "hint": hint,
        "hinted_choice": hinted,
        "snr_db": clip.snr_db,
    }


def format_question(item: dict[str, Any]) -> str:
    """The user text the workshop model was trained on: question, options, instruction."""
    return f"{item['question']}\nOptions: {', '.join(item['choices'])}.\nAnswer with one option."


def tokenizer_corpus() -> list[str]:
    """Text covering every word the workshop prompts and answers use, for training the tokenizer."""
    lines = [
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: Audio 2: \n",
        "Options: . Answer with one option.",
    ]
    for domain, classes in DOMAINS.items():
        names = list(classes)
        for template in HINT_TEMPLATES:
            for name in names:
                lines.append(
                    f"{template.format(name)} {QUESTIONS[domain]}\nOptions: {', '.join(names)}.\nAnswer with one "
                    f"option.\n{name}"
                )
        lines += [f"\n{name}<|im_end|>" for name in names] * 10  # answers: each must end up one token
    return lines * 20
