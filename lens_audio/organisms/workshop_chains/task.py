"""The third workshop task: four clips per prompt, found by their number or by their neighbour's content.

Why a third task. On the clip-set model (three clips, "what is in Audio k?")
the named clip's class reaches the final position after decoder block 1, so
every later layer carries the same direction and no choice of heads can
matter. Here a prompt holds four clips of one domain, one of each of the
domain's four classes, and the question, after the audio, names the clip to
answer about in one of three ways:

    Audio 1: <audio> Audio 2: <audio> Audio 3: <audio> Audio 4: <audio>
    [hint] What is in the clip after the drums one?
    Options: bell, chord, drums, melody.
    Answer with one option.

- `direct` ("What is in Audio 3?", `DIRECT_SHARE` of the items): the clip's number;
- `after` ("... the clip after the drums one?"): the clip following the one of
  that class. The model must first find a clip by its *content*, then read its
  neighbour;
- `before` ("... the clip before the drums one?"): the clip preceding it.

The options are the domain's four classes, all of which are in the prompt, so
reading the wrong clip gives a wrong answer. Hints name the asked-about clip
the way the question does ("A listener says the clip after the drums
one is bell."). Since every set holds each class of its domain once, the
named class identifies one clip; the answer is never the named class itself.

Training can also use a fourth, training-only kind of question, `lookup`
("Which clip is the drums one?", options "1, 2, 3, 4", answered with the
clip's number): the first hop of `after` and `before` on its own, with its own
answer supervision (`make_lookup_item`). The benchmark never asks it.

Items keep MMAU's keys; `audio_id` lists the four clips in order, `clip_id`
names the set, `target_clip` is the 1-based clip whose class is the answer
(`snr_db` is its SNR), `named_clip` the 1-based clip the question names
(the same as `target_clip` for `direct`), and `relation` is the kind of
question.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lens_audio.organisms.sounds import DOMAINS
from lens_audio.organisms.task import HINT_CONDITIONS, mmau_item
from lens_audio.organisms.workshop.task import ClipSet, draw_clip_sets

CHAIN_SIZE = 4
RELATIONS = ("direct", "after", "before")
DIRECT_SHARE = 0.3
OFFSET = {"direct": 0, "after": 1, "before": -1}  # target clip = named clip + offset
HINT_TEMPLATES = (
    "A listener says {ref} is {choice}.",
    "The caption of {ref} reads: {choice}.",
    "Someone labelled {ref} {choice}.",
    "The notes say {ref} is {choice}.",
)


def draw_chain_sets(rng: np.random.Generator, n: int, prefix: str, snr_range: tuple[float, float]) -> list[ClipSet]:
    """`n` sets of four clips, each set one domain's four classes in random order (domains balanced)."""
    return draw_clip_sets(rng, n, prefix, snr_range, size=CHAIN_SIZE)


def relations_for(target: int, n_clips: int = CHAIN_SIZE) -> list[str]:
    """The question kinds that can ask about clip `target` (0-based): no clip after the last or before the first."""
    return ["direct"] + (["after"] if target > 0 else []) + (["before"] if target < n_clips - 1 else [])


def reference(clip_set: ClipSet, target: int, relation: str) -> tuple[str, int]:
    """How the question names clip `target` (0-based) under `relation`, and the (0-based) clip it names."""
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, not {relation!r}.")
    if relation not in relations_for(target, len(clip_set.clips)):
        raise ValueError(f"clip {target + 1} of {len(clip_set.clips)} cannot be asked about as {relation!r}; "
                         f"use one of {relations_for(target, len(clip_set.clips))}.")
    named = target - OFFSET[relation]
    if relation == "direct":
        return f"Audio {target + 1}", named
    return f"the clip {relation} the {clip_set.clips[named].class_name} one", named


def make_chain_item(clip_set: ClipSet, target: int, relation: str, hint: str, rng: np.random.Generator,
                    audio_ids: list[str], split: str) -> dict[str, Any]:
    """One MMAU-format question whose answer is clip `target`'s (0-based) class, asked as `relation`."""
    if hint not in HINT_CONDITIONS:
        raise ValueError(f"hint must be one of {HINT_CONDITIONS}, not {hint!r}.")
    if not 0 <= target < len(clip_set.clips):
        raise ValueError(f"target must index one of the set's {len(clip_set.clips)} clips, not {target}.")
    ref, named = reference(clip_set, target, relation)
    clip = clip_set.clips[target]
    choices = list(DOMAINS[clip_set.domain])
    rng.shuffle(choices)
    wrong = [c for c in choices if c != clip.class_name]
    hinted = {"congruent": clip.class_name, "conflicting": str(rng.choice(wrong)), "none": None}[hint]
    question = f"What is in {ref}?"
    if hinted is not None:
        template = HINT_TEMPLATES[int(rng.integers(len(HINT_TEMPLATES)))]
        sentence = template.format(ref=ref, choice=hinted)
        question = sentence[0].upper() + sentence[1:] + " " + question
    item = mmau_item(f"{clip_set.id}-{relation}{target + 1}-{hint}", list(audio_ids), question, choices, clip, hint,
                     hinted, split)
    return {**item, "clip_id": clip_set.id, "target_clip": target + 1, "named_clip": named + 1, "relation": relation}


def draw_relation(rng: np.random.Generator, target: int, n_clips: int = CHAIN_SIZE,
                  direct_share: float = DIRECT_SHARE) -> str:
    """`direct` with probability `direct_share`, else one of the relations possible for `target`, evenly (`direct`
    for a lone clip)."""
    relations = relations_for(target, n_clips)[1:]
    if rng.random() < direct_share or not relations:
        return "direct"
    return str(rng.choice(relations))


def make_lookup_item(clip_set: ClipSet, named: int, split: str) -> dict[str, Any]:
    """The training-only question "Which clip is the <class> one?" about clip `named` (0-based), whose answer is
    the clip's number (options "1" .. the set's size); `relation` is `lookup`, with no hint."""
    if not 0 <= named < len(clip_set.clips):
        raise ValueError(f"named must index one of the set's {len(clip_set.clips)} clips, not {named}.")
    clip = clip_set.clips[named]
    choices = [str(k + 1) for k in range(len(clip_set.clips))]
    item = mmau_item(f"{clip_set.id}-lookup{named + 1}", [], f"Which clip is the {clip.class_name} one?", choices,
                     clip, "none", None, split)
    return {**item, "answer": str(named + 1), "clip_id": clip_set.id, "target_clip": named + 1,
            "named_clip": named + 1, "relation": "lookup"}
