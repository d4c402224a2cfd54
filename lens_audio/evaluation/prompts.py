"""Prompts for multiple-choice audio questions: a template name, a registered model's name or a function.

The templates (`instruct`, `r1-aqa`, `letters`) live in `lens_audio.evaluation.templates`. `render_prompt`
also takes any function item -> prompt (a model's `ExperimentProfile.prompt`), and the name of a
registered model (e.g. "workshop"), which renders with that model's profile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lens_audio.evaluation.profile import PROFILES, profile_for
from lens_audio.evaluation.templates import TEMPLATES

__all__ = ["TEMPLATES", "prompt_function", "render_prompt"]


def prompt_function(template: str | Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    """A template name, a registered model's name (its profile's prompt) or a function, as a function."""
    if callable(template):
        return template
    if template in TEMPLATES:
        return TEMPLATES[template]
    if template in PROFILES:
        return prompt_function(profile_for(template).prompt)
    raise ValueError(
        f"unknown prompt template {template!r}; choose one of {sorted(TEMPLATES) + sorted(PROFILES)} or pass a "
        "function."
    )


def render_prompt(item: dict[str, Any], template: str | Callable[[dict[str, Any]], str]) -> str:
    return prompt_function(template)(item)
