"""Workshop results: accuracy per hint condition and domain, the text-dominance gap, and hint following.

Scoring goes through the general runner (`lens_audio.benchmark.runner`) in
choice mode with the workshop prompt; this module only adds the
hint-specific summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lens_audio.benchmark.report import accuracy_with_ci, grouped_accuracy
from lens_audio.benchmark.runner import SteeringFn, run_benchmark
from lens_audio.organisms.task import format_question
from lens_audio.paper.profile import ExperimentProfile

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

# The workshop model's experiment: its own prompt, choice scoring (every option is one token).
PROFILE = ExperimentProfile(prompt=format_question, mode="choice")


def score_items(
    model: "HookedAudioLM", items: list[dict[str, Any]], silence: bool = False, steering: SteeringFn | None = None,
    batch_size: int = 16, progress: bool = True,
) -> list[dict[str, Any]]:
    """Choice-scored records of workshop items (with `silence`, each clip replaced by its silence twin)."""
    records = run_benchmark(
        model,
        items,
        None,
        template=PROFILE.prompt,
        mode=PROFILE.mode,
        steering=steering,
        batch_size=batch_size,
        listening=False,
        progress=progress,
        description="scoring" + (" (silence)" if silence else ""),
        silence=silence,
    )
    for record in records:
        record["followed_hint"] = (
            record.get("hinted_choice") is not None and record["extracted"] == record["hinted_choice"]
        )
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (percent, with bootstrap CI) per hint condition and domain, plus the text-dominance measures."""
    by_hint_task = grouped_accuracy(records, lambda r: (r["hint"], r["task"]))
    by_hint = grouped_accuracy(records, lambda r: r["hint"])
    accuracy: dict[str, dict[str, Any]] = {}
    for (hint, task), result in by_hint_task.items():
        accuracy.setdefault(hint, {})[task] = result["accuracy"]
    for hint, result in by_hint.items():
        accuracy[hint]["all"] = result["accuracy"]
    summary: dict[str, Any] = {
        "accuracy": accuracy,
        "ci": {h: r["ci"] for h, r in by_hint.items()},
        "n_items": len(records),
    }
    if "none" in accuracy and "conflicting" in accuracy:
        summary["text_dominance_gap"] = round(accuracy["none"]["all"] - accuracy["conflicting"]["all"], 2)
        conflicting = [r for r in records if r["hint"] == "conflicting"]
        summary["follows_conflicting_hint"] = accuracy_with_ci([r["followed_hint"] for r in conflicting])["accuracy"]
    return summary
