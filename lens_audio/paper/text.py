"""The experiment's result as text: the table `lens-audio experiment` prints, and its validity controls."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lens_audio.paper.results import ExperimentResult, accuracy_cell, accuracy_rows, head_label

SCORING_WORDS = {"mean": "mean log-probability per option token (length-normalised)",
                 "sum": "summed log-likelihood of the option's tokens (favours short options)",
                 "first_token": "log-probability of the option's first token"}


def scoring_line(profile) -> str:
    """One line saying how answers were scored: generation and MMAU's string match, or choice mode's rule (and
    that the letters are compared under the `letters` template)."""
    if profile.mode == "generate":
        if profile.answer_embedder is not None:
            return (f"scoring: generated answers, each matched to the option whose {profile.answer_embedder} "
                    "embedding is nearest (MMAU-Pro's closed-ended rule)")
        return "scoring: generated answers, MMAU's string match"
    letters = " of the option letters (A, B, ...: the letters template)" if profile.prompt == "letters" else ""
    return f"scoring: choice mode, options ranked by {SCORING_WORDS[profile.choice_scoring]}{letters}"


def format_table(result: ExperimentResult) -> str:
    """The results as text: test accuracy by condition for each run, the heads, the paired statistics and the
    controls."""
    runs = list(result.test)
    first = result.test[runs[0]]
    rows = accuracy_rows(first)
    cell = lambda v: "n/a" if v["accuracy"] is None else f"{v['accuracy']:6.2f} [{v['ci'][0]:.1f}, {v['ci'][1]:.1f}]"
    unit = first["total"].get("ci_unit", "item")
    width = max(24, *(len(label) + 2 for _, _, label in rows))
    lines = [scoring_line(result.profile),
             f"95% bootstrap CIs resample {'clips (clip sets)' if unit == 'clip' else 'items'}"]
    lines += [f"{'test split':{width}s}" + "".join(f"{name:>26s}" for name in runs)]
    for table, key, label in rows:
        values = [accuracy_cell(result.test[name], table, key) for name in runs]
        lines.append(f"{label:{width}s}" + "".join(f"{cell(v):>26s}" for v in values))
    heads = result.head_selection
    detail = lambda h: heads.describe(h)
    significant = set(heads.null.significant())
    lines += ["", f"specialist heads (calibration; {chosen_by(heads)}; r, bootstrap CI resampling clips, Fisher-z CI, "
              "max-|r| permutation-adjusted p):"]
    lines += [
        f"  {head_label(h)}: r={d['r']:.3f} [{d['ci'][0]:.2f}, {d['ci'][1]:.2f}] Fisher [{d['fisher_ci'][0]:.2f}, "
        f"{d['fisher_ci'][1]:.2f}] "
        f"p_adj={d['p_adjusted']:.3f}" + ("" if tuple(h) in significant else " (not significant family-wise)")
        for h, d in ((h, detail(h)) for h in heads.specialists)
    ]
    lines.append(
        f"  max |r| = {heads.null.observed_max:.3f}, permutation p = {heads.null.p_max:.3f} "
        f"({heads.null.n_permutations} shuffles, "
        f"{heads.n_errors} calibration errors); heads significant family-wise at 0.05 (by |r|): "
        + significant_heads(heads)
    )
    lines += [
        f"random control heads (seeded draw): {', '.join(map(head_label, heads.control))}",
        f"beta (chosen on dev): {result.beta}",
        "",
        "paired comparisons (test; exact McNemar, bootstrap CI clustered by clip):",
    ]
    lines += [f"  {name}: {v.describe()}" for name, v in result.paired.items()]
    if result.controls:
        lines.append("is it the heads or the depth? the specialists against random-head controls (test):")
    for control in result.controls.values():
        basis = control_basis(result, control)
        lines.append(f"  {control.kind}: " + control.describe() + (f" [{basis}]" if basis else ""))
    if result.audio_arrival is not None:
        lines.append(result.audio_arrival.describe())
    if result.conflict:
        lines.append("text dominance on test (ALME's ratio over conflicting items; flips: conflicting vs no hint on "
                     "the same audio, audio vs silence on the same text; CIs resample clips):")
        lines += [f"  {run}: {measures.describe()}" for run, measures in result.conflict.items()]
    if result.rivals is not None:
        lines.append(f"rival interventions (lens-audio rivals, saved in the run folder; test {result.rivals.focus} "
                     "items, paired):")
        lines += [f"  {line}" for line in result.rivals.verdicts()]
    if result.validity:
        lines.append(
            "listening signal (specialists' mean mass) vs correctness, held out: "
            + "; ".join(
                f"{split}/{c} r={v.r:.2f} [{v.ci[0]:.2f}, {v.ci[1]:.2f}] n={v.n}"
                for split, d in result.validity.items()
                for c, v in d.items()
            )
        )
    if result.layer_spread is not None:
        s = result.layer_spread
        lines.append(
            f"single-layer steering on dev {s.items} items (beta {s.beta}): "
            + ", ".join(f"L{k} {v:.1f}" for k, v in s.accuracy_by_layer.items())
            + f"; spread {s.spread:.1f} points"
        )
    for name, by_beta in result.options.items():
        lines.append(f"dev option {name}: " + ", ".join(f"beta {b}: {v:.1f}" for b, v in by_beta.items()))
    lines += format_controls(result)
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def depth_mismatch(specialists: Sequence[Sequence[int]], layers: Sequence[int]) -> str | None:
    """One line when some specialists sit outside the depth-matched draws' layers (None when all sit inside)."""
    low, high = min(layers), max(layers)
    outside = [layer for layer, _ in specialists if not low <= layer <= high]
    if not outside:
        return None
    found = sorted(set(outside))
    where = " and ".join(side for side, hit in (("below", found[0] < low), ("above", found[-1] > high)) if hit)
    return (f"{len(outside)} of the {len(specialists)} specialists sit in layer{'s' * (len(found) > 1)} "
            f"{', '.join(map(str, found))}, {where} the draws' range {low}-{high}: this control does not match "
            "their depth")


def control_basis(result: ExperimentResult, control) -> str:
    """A control's basis, with the depth-matched draws' mismatch to the specialists' layers where there is one."""
    outside = depth_mismatch(result.head_selection.specialists, control.layers) if control.layers else None
    return "; ".join(part for part in (control.basis, outside) if part)


def chosen_by(heads) -> str:
    """How the specialists were chosen: the top k by signed r (a strongly negative head is never one), or the rule."""
    rule = "signed r" if heads.rule == "r" else f"selection rule {heads.rule!r}"
    return f"specialists: the top {len(heads.specialists)} by {rule}"


def significant_heads(heads) -> str:
    """The heads significant family-wise at 0.05 (max-|r| null, so either sign), negative ones marked "(r < 0)"."""
    r = heads.correlation.r
    return ", ".join(head_label(h) + (" (r < 0)" if r[h] < 0 else "") for h in heads.null.significant()) or "none"


def format_controls(result: ExperimentResult, n_causal: int = 4) -> list[str]:
    """The validity controls as text: the specialists' signal and each specialist's and top causal head's row."""
    lines = []
    for split, c in result.validity_controls.items():
        g = c.signal
        lines += [
            "",
            f"is it listening? {split} {c.items} items (n = {c.n}, {c.n_clusters} clips; specialists' mean mass, CIs "
            f"resample {g.audio.ci_unit}s): mass {g.mass_audio:.3f} with audio, {g.mass_silence:.3f} with silence; "
            f"r with correctness {g.audio.describe()}, with the silence twin's mass {g.silence.describe()}",
        ]
        lines += [
            f"  {name} ({g.n_strata[name]} strata): within-stratum r {g.within[name].describe()}, stratum average "
            f"alone {g.between[name].describe()}"
            if g.n_strata[name] > 1
            else f"  {name}: one stratum on these items (within-stratum r is the plain r)"
            for name in g.within
        ]
        stratum = "task x sub-category" if "task x sub-category" in c.r_within else next(iter(c.r_within), "")
        lines.append(
            f"  per head (r with audio / with silence / within {stratum} / causal: margin drop with the head's "
            "final-position output from the silence run, exact / share of audio attention on the asked clip):"
        )
        shown = list(dict.fromkeys(list(c.specialists) + c.top_causal(n_causal)))
        for head in shown:
            row = c.head_row(head, stratum)
            fmt = lambda v, spec=".2f": "n/a" if v is None or not np.isfinite(v) else format(v, spec)  # noqa: E731
            kind = "specialist" if tuple(head) in map(tuple, c.specialists) else "top causal"
            lines.append(
                f"    {head_label(head)} ({kind}): {fmt(row['r_audio'])} / {fmt(row['r_silence'])} / "
                f"{fmt(row['r_within'])} / {fmt(row['causal'], '.3f')} / {fmt(row['clip_share'])}"
            )
        lines.append(f"  rank correlation (Spearman) of causal effect with r over all heads: {c.causal_rank_r:.2f}")
        lines += [f"  {line}" for line in causal_versus_r(c, n_causal)]
        lines += [f"  note: {n}" for n in c.notes]
    return lines


def causal_versus_r(controls, k: int = 4) -> list[str]:
    """One line: are the heads whose silence-run output moves the answer most the r-selected specialists?"""
    if controls.causal is None:
        return []
    top, specialists = controls.top_causal(k), [tuple(h) for h in controls.specialists]
    effect = lambda h: controls.head_row(h, "")["causal"]  # noqa: E731
    shared = [h for h in top if tuple(h) in specialists]
    verdict = (f"{len(shared)} of them {'is a specialist' if len(shared) == 1 else 'are specialists'}" if shared
               else "none of them is a specialist")
    return [
        f"causal vs r: the {k} heads whose silence-run output moves the answer most (exact margin drop in logits, "
        "positive = the margin drops; ranked by it among the heads measured exactly: the top by attribution "
        "estimate and the specialists) are "
        + ", ".join(f"{head_label(h)} ({effect(h):.3f})" for h in top)
        + f"; {verdict}; the specialists' effects: "
        + ", ".join(f"{head_label(h)} {effect(h):.3f}" for h in specialists)
    ]
