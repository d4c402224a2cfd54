"""Prompt templates for multiple-choice audio questions (the user turn; the chat template wraps it).

- `instruct`: the question, then the choices as a sentence, for Qwen2-Audio-7B-Instruct;
- `r1-aqa`: R1-AQA's template, the choices as a Python list, answer in `<answer>` tags;
- `letters`: lmms-eval style, lettered options and "Answer with the option's letter ...".

`lens_audio.benchmark.prompts` turns a template name, a model's name or a function into a prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _instruct(item: dict[str, Any]) -> str:
    return f"{item['question']} Choose the answer from the following options: {', '.join(item['choices'])}."


def _r1_aqa(item: dict[str, Any]) -> str:
    return (
        f"{item['question']} Please choose the answer from the following options: {item['choices']!r}. "
        "Output the final answer in <answer> </answer>."
    )


def _letters(item: dict[str, Any]) -> str:
    options = "\n".join(f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(item["choices"]))
    return f"{item['question']}\n{options}\nAnswer with the option's letter from the given choices directly."


TEMPLATES: dict[str, Callable[[dict[str, Any]], str]] = {
    "instruct": _instruct,
    "r1-aqa": _r1_aqa,
    "letters": _letters,
}
