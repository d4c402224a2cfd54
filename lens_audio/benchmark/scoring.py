"""MMAU's official scoring rule, and the answer extraction an evaluator must do before it.

`string_match` re-implements the official `string_match(answer, prediction,
choices)`: the prediction's word set must contain every word of the answer
and no word that only a competing choice has. Because of that rule, bare
option letters and sentences like "The answer is X." rarely score as they
stand, so `extract_answer` first takes the text inside `<answer>` tags (R1-AQA),
strips answer preambles, and maps an option letter to its choice text.

Choice mode (`lens_audio.benchmark.runner`) ranks options by their log-likelihood under one of `CHOICE_SCORINGS`
(`"mean"` per token by default, `"sum"`, `"first_token"`), over the texts `scored_options` names (the letters under
the `letters` template).

Words are read as a reader sees the text (`lens_audio.benchmark.text.reader_text`: Unicode NFC, runs of
whitespace as one), so an answer typed in NFD ("cafe" + a combining accent) scores against its NFC choice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lens_audio.benchmark.text import reader_text

_WORD = re.compile(r"\b\w+\b")
_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_PREAMBLE = re.compile(r"^\s*(?:the\s+(?:correct\s+)?answer\s+is|answer)\s*[:\-]?\s*", re.IGNORECASE)
_LONE_LETTER = re.compile(r"^\(?([A-Ha-h])\)?[.:)]?$")
_LETTER_THEN_TEXT = re.compile(r"^\(?([A-H])[.:)]\s+\S")


def _words(text: str) -> set[str]:
    return set(_WORD.findall(reader_text(text).lower()))


def string_match(answer: str, prediction: str, choices: Sequence[str]) -> bool:
    """The official MMAU rule: all answer words present, no word unique to a wrong choice present."""
    predicted, wanted = _words(prediction), _words(answer)
    if not predicted:
        return False
    competing: set[str] = set()
    for choice in choices:
        words = _words(choice)
        if words != wanted:
            competing |= words - wanted
    return wanted <= predicted and not (predicted & competing)


def extract_answer(output: str, choices: Sequence[str]) -> str:
    """The answer span of a model's output, with option letters mapped to their choice text."""
    tagged = _TAG.search(output)
    text = (tagged.group(1) if tagged else output).strip()
    text = _PREAMBLE.sub("", text).strip()
    letter = _LONE_LETTER.match(text) or _LETTER_THEN_TEXT.match(text)
    if letter:
        index = ord(letter.group(1).upper()) - ord("A")
        if index < len(choices):
            return choices[index]
    return text.rstrip(".").strip()


def score_output(output: str, answer: str, choices: Sequence[str]) -> tuple[str, bool]:
    """(extracted answer, correct under the official rule)."""
    extracted = extract_answer(output, choices)
    return extracted, string_match(answer, extracted, choices)


# --- choice mode: how options are ranked (one place) -----------------------------------------------------------------
CHOICE_SCORINGS = ("mean", "sum", "first_token")
DEFAULT_CHOICE_SCORING = "mean"  # length-normalised: the common MMAU choice; see docs/statistics-and-validity.md


def check_choice_scoring(scoring: str) -> str:
    """`scoring` if it is one of `CHOICE_SCORINGS`, else a one-line error naming the choices."""
    if scoring not in CHOICE_SCORINGS:
        raise ValueError(f"choice_scoring must be one of {list(CHOICE_SCORINGS)}, not {scoring!r} ('mean': mean "
                         "log-probability per option token, the default; 'sum': summed; 'first_token': the first "
                         "token's only).")
    return scoring


def scored_options(item: dict, letters: bool) -> list[str]:
    """The texts choice mode compares for `item`: its choices, or under the `letters` template their letters
    ("A", "B", ...), as the prompt asks the model to answer (and as the validity controls score them)."""
    return [chr(ord("A") + i) for i in range(len(item["choices"]))] if letters else list(item["choices"])


def asks_for_letters(template: Any) -> bool:
    """Whether `template` (a name, a registered model's name or a prompt function) is the `letters` template."""
    from lens_audio.benchmark.prompts import prompt_function
    from lens_audio.benchmark.templates import TEMPLATES

    return prompt_function(template) is TEMPLATES["letters"]
