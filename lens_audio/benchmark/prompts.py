"""Prompts for multiple-choice audio questions: a template name, a registered model's name or a function.

The templates (`instruct`, `r1-aqa`, `letters`) live in `lens_audio.benchmark.templates`. `render_prompt`
also takes any function item -> prompt (a model's `ExperimentProfile.prompt`), and the name of a
registered model (e.g. "workshop"), which renders with that model's profile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lens_audio.benchmark.templates import TEMPLATES
from lens_audio.model.registry import model_entry, registered_names, resolve

__all__ = ["TEMPLATES", "prompt_function", "render_prompt"]


def prompt_function(template: str | Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    """A template name, a registered model's name (its profile's prompt) or a function, as a function."""
    if callable(template):
        return template
    if template in TEMPLATES:
        return TEMPLATES[template]
    entry = model_entry(template)
    if entry is not None and entry.profile is not None:  # a registered model's name: its profile's prompt
        return prompt_function(resolve(entry.profile).prompt)
    named = [n for n in registered_names() if model_entry(n).profile is not None]
    raise ValueError(
        f"unknown prompt template {template!r}; choose one of {sorted(TEMPLATES) + named} or pass a function."
    )


def render_prompt(item: dict[str, Any], template: str | Callable[[dict[str, Any]], str]) -> str:
    return prompt_function(template)(item)
