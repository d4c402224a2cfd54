"""Scoring the workshop model on workshop-format items: which option does it prefer, and does it follow the hint?

Each option of a workshop item is one token, so the model's answer is the
option whose token has the highest logit at the final prompt position
(choice scoring); `top_is_choice` records whether the unrestricted argmax is
an option at all.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable

import torch
from tqdm.auto import tqdm

from lens_audio.workshop.task import HINT_CONDITIONS, format_question

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


def choice_token_ids(tokenizer: Any, choices: Iterable[str]) -> list[int]:
    """The single token of each option (as it starts the answer); refuses multi-token options."""
    ids = []
    for choice in choices:
        tokens = tokenizer.encode(choice, add_special_tokens=False)
        if len(tokens) != 1:
            raise ValueError(f"option {choice!r} is {len(tokens)} tokens; choice scoring needs one token per option.")
        ids.append(tokens[0])
    return ids


@torch.no_grad()
def score_items(
    model: "HookedAudioLM", items: list[dict[str, Any]], batch_size: int = 16, silence: bool = False, progress: bool = True
) -> list[dict[str, Any]]:
    """One record per item: prediction, correctness, whether it followed the hint."""
    records = []
    for start in tqdm(range(0, len(items), batch_size), desc="scoring" + (" (silence)" if silence else ""), disable=not progress):
        chunk = items[start : start + batch_size]
        batch = model.to_batch([item["audio_path"] for item in chunk], [format_question(item) for item in chunk])
        if silence:
            batch = batch.silence_twin()
        final_logits = model(batch)[:, -1]
        for row, item in enumerate(chunk):
            ids = choice_token_ids(model.tokenizer, item["choices"])
            prediction = item["choices"][int(final_logits[row, ids].argmax())]
            records.append({
                "id": item["id"],
                "task": item["task"],
                "hint": item.get("hint", "none"),
                "prediction": prediction,
                "correct": prediction == item["answer"],
                "followed_hint": item.get("hinted_choice") is not None and prediction == item["hinted_choice"],
                "top_is_choice": int(final_logits[row].argmax()) in ids,
            })
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (percent) per hint condition and domain, the text-dominance gap and the hint-following rate."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["hint"], r["task"])].append(r)
        groups[(r["hint"], "all")].append(r)
    percent = lambda rs, key: round(100 * sum(r[key] for r in rs) / len(rs), 2) if rs else None
    accuracy = {hint: {task: percent(rs, "correct") for (h, task), rs in sorted(groups.items()) if h == hint} for hint in HINT_CONDITIONS}
    accuracy = {hint: by_task for hint, by_task in accuracy.items() if by_task}
    summary: dict[str, Any] = {"accuracy": accuracy, "n_items": len(records), "top_token_is_a_choice": percent(records, "top_is_choice")}
    if "none" in accuracy and "conflicting" in accuracy:
        summary["text_dominance_gap"] = round(accuracy["none"]["all"] - accuracy["conflicting"]["all"], 2)
        summary["follows_conflicting_hint"] = percent(groups[("conflicting", "all")], "followed_hint")
    return summary
