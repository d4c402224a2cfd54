"""Is the listening signal a listening signal? The experiment's validity controls, its noise sweep and the
calibration scores of the selection rules other than the paper's r.

Functions over an `Experiment` (its splits, run files and profile); the statistics and model-side pieces are in
`lens_audio.analysis.validity`. `Experiment.validity_controls`, `Experiment.noise_sweep` and
`Experiment.select_heads` call these.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from lens_audio.analysis.heads import HeadCorrelation, pad_options, undefined_reason
from lens_audio.analysis.statistics import pearson_columns
from lens_audio.analysis.validity import (
    NoisePoint,
    NoiseSweep,
    SignalCheck,
    ValidityControls,
    answer_margins,
    asked_clip_share,
    clustered_r,
    rank_correlation,
    silence_output_attribution,
    silence_output_effects,
    within_stratum_r,
)
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.benchmark.run_result import RunResult
from lens_audio.benchmark.scoring import asks_for_letters, scored_options
from lens_audio.benchmark.splits import clip_group
from lens_audio.checks import UserNote
from lens_audio.paper.results import head_label

if TYPE_CHECKING:
    from lens_audio.paper.experiment import Experiment


class HeadEffects(NamedTuple):
    """Over a list of items: each head's silence-output effect by attribution (`[layer, head]`), each item's margin
    (`kept`: the index of the items measured; the others' options share a first token, `skipped` their ids)."""

    attribution: np.ndarray
    margins: np.ndarray
    kept: np.ndarray
    skipped: list


def option_texts(item: dict[str, Any], prompt: Any) -> list[str]:
    """What the answer margin compares for `item`: the first tokens of its options, or of its letters under the
    `letters` template (`benchmark.scoring.scored_options`, as choice mode scores them)."""
    return scored_options(item, asks_for_letters(prompt))


def distinct_first_tokens(experiment: "Experiment", rows: Sequence[dict[str, Any]]) -> tuple[np.ndarray, list]:
    """The index of `rows` whose options have distinct first tokens (an answer margin over first tokens is defined),
    and the ids of the others (skipped, and said so)."""
    tok, prompt, keep, skipped = experiment.model.tokenizer, experiment.profile.prompt, [], []
    for i, item in enumerate(rows):
        firsts = {tuple(tok.encode(c, add_special_tokens=False)[:1]) for c in option_texts(item, prompt)}
        if len(firsts) == len(item["choices"]):
            keep.append(i)
        else:
            skipped.append(item["id"])
    return np.array(keep, dtype=int), skipped


def skipped_note(skipped: Sequence[Any], n: int, what: str) -> str:
    """One line: how many of `n` items `what` skipped because their options share a first token."""
    ids = ", ".join(map(repr, skipped[:3])) + (", ..." if len(skipped) > 3 else "")
    return (f"{what}: {len(skipped)} of {n} items skipped, their options share a first token ({ids}); the answer "
            "margin compares first tokens")


STRATA = ("task", "sub-category")
STRATUM_SETS = {"task": ("task",), "sub-category": ("sub-category",), "task x sub-category": STRATA}



cluster_of = clip_group  # an item's clip group (`benchmark.splits.clip_group`): bootstrap resamples whole groups

def stratum_sets(extra: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """The validity controls' strata: task, sub-category, both, and each field of `extra` on its own (e.g. the hinted
    class, `hinted_choice`: the profile's `validity_strata`)."""
    return {**STRATUM_SETS, **{f: (f,) for f in extra if f not in STRATUM_SETS}}


def strata_of(records: Sequence[dict[str, Any]], fields: Sequence[str]) -> list[str]:
    """Each record's stratum: its values of `fields` joined (a missing field counts as one value)."""
    return ["/".join(str(r.get(f)) for f in fields) for r in records]


def top_heads(scores: np.ndarray, k: int, correlation: HeadCorrelation | None = None) -> list[tuple[int, int]]:
    """The `k` heads of highest score (NaN never chosen: `analysis.heads.top_heads` says so, or refuses, with the
    reason read off the calibration `correlation` where it explains it: every item right or every item wrong)."""
    from lens_audio.analysis.heads import top_heads as ranked

    reason = None
    if correlation is not None and correlation.n_correct in (0, correlation.n_examples):
        reason = undefined_reason(correlation.n_correct, correlation.n_examples)
    return ranked(scores, k, "the selection score", reason)


def selection_scores(experiment: "Experiment", run: RunResult) -> np.ndarray | None:
    """`[layer, head]` calibration score of the profile's selection rule (None for "r": the correlation's r)."""
    rule, rows = experiment.profile.selection_rule, experiment.split("calibration")
    shape = run.listening.shape[1:]
    flat = run.listening.reshape(len(run), -1)
    if rule == "r":
        return None
    if rule == "within_stratum_r":
        return within_stratum_r(flat, run.correct, strata_of(run.records, STRATA)).reshape(shape)
    effects = head_effects(experiment, rows)
    if effects.skipped:
        warnings.warn(UserNote(skipped_note(effects.skipped, len(rows), f"selection rule {rule!r}")), stacklevel=2)
    if rule == "margin_r":
        return pearson_columns(flat[effects.kept], effects.margins).reshape(shape)
    return effects.attribution  # "causal"


def batches(experiment: "Experiment", rows: Sequence[dict[str, Any]]):
    """`(batch, option_ids, answer_index)` per profile-sized chunk of `rows`: each option by the first token of its
    text, or of its letter under the `letters` template (in generate mode the margin is over these first tokens,
    not the whole generated answer); ragged option lists padded (`analysis.heads.pad_options`). Rows whose options
    share a first token are refused (`distinct_first_tokens` finds them first, to skip)."""
    tok, p = experiment.model.tokenizer, experiment.profile
    for start in range(0, len(rows), p.batch_size):
        chunk = rows[start : start + p.batch_size]
        firsts = [[tok.encode(c, add_special_tokens=False)[0] for c in option_texts(item, p.prompt)] for item in chunk]
        clash = [item["id"] for item, ids in zip(chunk, firsts) if len(set(ids)) < len(ids)]
        if clash:
            raise ValueError(
                f"items {clash[:3]} have options that share their first token; the answer margin (and so the causal "
                "control) needs options with distinct first tokens."
            )
        answer = [item["choices"].index(item["answer"]) for item in chunk]
        padded = pad_options(firsts, answer)
        batch = experiment.model.to_batch([i["audio_path"] for i in chunk], [render_prompt(i, p.prompt) for i in chunk])
        yield batch, padded, answer


def head_effects(experiment: "Experiment", rows: Sequence[dict[str, Any]]) -> HeadEffects:
    """Answer margins of `rows` and each head's silence-output effect on them, by attribution (mean over items);
    items whose options share a first token are skipped (`kept`, `skipped`). No measurable item: a ValueError."""
    kept, skipped = distinct_first_tokens(experiment, rows)
    if not len(kept):
        raise ValueError(f"every one of the {len(rows)} items has options that share a first token; the answer "
                         "margin compares first tokens")
    rows = [rows[i] for i in kept]
    attribution, margins = 0.0, []
    for batch, options, answer in batches(experiment, rows):
        effect = silence_output_attribution(experiment.model, batch, options, answer).numpy()
        attribution = attribution + batch.batch_size * effect
        margins.append(answer_margins(experiment.model, batch, options, answer).numpy())
    return HeadEffects(np.asarray(attribution, dtype=float) / len(rows), np.concatenate(margins).astype(float),
                       kept, skipped)


def exact_effects(
    experiment: "Experiment", rows: Sequence[dict[str, Any]], heads: Sequence[tuple[int, int]]
) -> dict[str, float]:
    """Each of `heads`' silence-output effect on `rows`, exactly (one patched pass per head; mean over items)."""
    total = torch.zeros(len(heads))
    for batch, options, answer in batches(experiment, rows):
        total += batch.batch_size * silence_output_effects(experiment.model, batch, options, answer, heads).cpu()
    return {head_label(h): float(v) / len(rows) for h, v in zip(heads, total)}


def validity_controls(experiment: "Experiment", split: str, n_exact: int = 8) -> ValidityControls:
    """The controls of `lens_audio.analysis.validity` on `split`'s focus items: each head's r with the real and the
    silence twin's mass (a `{split}-silence` run), within-stratum r (task, sub-category, both), its causal effect
    (attribution; the specialists and the top `n_exact` exactly) and its rank correlation with r, the share on the
    asked clip (prompts with several clips and a `target_clip`), and the specialists' summary with clustered CIs."""
    p, specialists = experiment.profile, experiment.select_heads().specialists
    run = experiment.listen(split)
    silent = experiment.silence_run(split)
    index, name = experiment.focus(run)
    items, all_clusters = experiment.split(split), experiment.clusters(split)
    rows, clusters = [items[i] for i in index], [all_clusters[i] for i in index]
    records = [run.records[i] for i in index]
    correct = run.correct[index]
    audio, silence = run.listening[index], silent.listening[index]
    n, shape = len(index), audio.shape[1:]
    strata = {f: strata_of(records, fs) for f, fs in stratum_sets(p.validity_strata).items()
              if all(k in r for r in records for k in fs)}
    per_head = lambda mass: pearson_columns(mass.reshape(n, -1), correct).reshape(shape)  # noqa: E731
    ours = lambda mass: specialist_mass(RunResult(records, mass), specialists)  # noqa: E731
    common = {"clusters": clusters, "n_bootstrap": p.n_bootstrap, "seed": p.seed}
    signal = SignalCheck(
        clustered_r(ours(audio), correct, **common),
        clustered_r(ours(silence), correct, **common),
        {f: clustered_r(ours(audio), correct, strata=s, **common) for f, s in strata.items()},
        {f: clustered_r(ours(audio), correct, strata=s, between=True, **common) for f, s in strata.items()},
        {f: len(set(s)) for f, s in strata.items()},
        float(ours(audio).mean()),
        float(ours(silence).mean()),
    )
    notes, skipped = [], []
    try:
        effects = head_effects(experiment, rows)  # items whose options share a first token: skipped, and counted
        causal, skipped = effects.attribution, effects.skipped
        exact = list(dict.fromkeys(list(specialists) + top_heads(causal, n_exact)))
        causal_exact = exact_effects(experiment, [rows[i] for i in effects.kept], exact)
    except ValueError as exc:  # every item's options share a first token: no answer margin
        causal, causal_exact = None, {}
        notes.append(f"causal effect not measured: {exc}")
    if skipped:
        notes.append(skipped_note(skipped, len(rows), "causal effect"))
    share = None
    if all(isinstance(i.get("audio_path"), (list, tuple)) and "target_clip" in i for i in rows):
        parts = []
        for batch, _, _ in batches(experiment, rows):
            start = sum(len(x) for x in parts)
            targets = [int(i["target_clip"]) - 1 for i in rows[start : start + batch.batch_size]]
            parts.append(asked_clip_share(experiment.model, batch, targets).numpy())
        share = np.concatenate(parts).mean(0)
    return ValidityControls(
        split=split,
        items=name,
        n=n,
        n_clusters=len(set(clusters)),
        specialists=list(specialists),
        signal=signal,
        r_audio=per_head(audio),
        r_silence=per_head(silence),
        r_within={f: within_stratum_r(audio.reshape(n, -1), correct, s).reshape(shape) for f, s in strata.items()},
        causal=causal,
        causal_exact=causal_exact,
        causal_rank_r=float("nan") if causal is None else rank_correlation(causal, per_head(audio)),
        mass_audio=audio.mean(0),
        mass_silence=silence.mean(0),
        clip_share=share,
        notes=notes,
        causal_skipped=len(skipped),
    )


def noise_sweep(
    experiment: "Experiment", snrs: Sequence[float] = (20.0, 10.0, 0.0, -10.0), split: str = "test"
) -> NoiseSweep:
    """Accuracy and the specialists' listening signal with seeded white noise added to every clip at each SNR.

    Each level is a resumable run file (`{split}-noise{snr}dB.jsonl`); the clean level is the split's baseline.
    """
    specialists = experiment.select_heads().specialists
    clean = experiment.listen(split)
    index, name = experiment.focus(clean)
    all_clusters = experiment.clusters(split)
    clusters = [all_clusters[i] for i in index]
    points = []
    for snr in (None, *snrs):
        run = (
            clean
            if snr is None
            else experiment.run(
                experiment.split(split), f"{split}-noise{snr:g}dB", listening=True, noise_snr_db=float(snr)
            )
        )
        mass, correct, conditions = specialist_mass(run, specialists), run.correct, np.array(run.conditions)
        accuracy = {"all": float(100 * correct.mean())}
        if len(set(conditions)) > 1:
            accuracy.update({c: float(100 * correct[conditions == c].mean()) for c in sorted(set(conditions))})
        flipped, kept = clean.correct & ~correct, clean.correct & correct
        points.append(
            NoisePoint(
                None if snr is None else float(snr),
                accuracy,
                float(mass.mean()),
                _mean(mass, correct),
                _mean(mass, ~correct),
                clustered_r(
                    mass[index],
                    correct[index],
                    clusters,
                    n_bootstrap=experiment.profile.n_bootstrap,
                    seed=experiment.profile.seed,
                ),
                int(flipped.sum()),
                _mean(mass, flipped),
                _mean(mass, kept),
            )
        )
    return NoiseSweep(split, name, list(specialists), points)


def specialist_mass(run: RunResult, heads: Sequence[tuple[int, int]]) -> np.ndarray:
    """`[item]` mean final-token audio mass of `heads` (the listening signal the method reads)."""
    return np.mean([run.listening[:, layer, head] for layer, head in heads], axis=0)


def _mean(values: np.ndarray, rows: np.ndarray) -> float:
    return float(values[rows].mean()) if rows.any() else float("nan")
