"""`report.html`: the experiment's results as HTML tables with captions, its settings, provenance and figures.

One page that works offline: the figures are the PNGs next to it (or, when static export could not run,
the interactive HTML figures in frames, which load the folder's local `plotly.min.js`). Everything stays
inside a 900 px column: wide tables scroll inside their own box, images shrink to the column.

`provenance_section(result)` is the one place that renders what made the run (the run manifest, when the
result carries one).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lens_audio.paper.results import head_label

if TYPE_CHECKING:
    from lens_audio.paper.results import ExperimentResult

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 900px; margin: auto; padding: 0 12px; color: #222; }
.scroll { overflow-x: auto; max-width: 100%; margin: 12px 0 20px; }
table { border-collapse: collapse; font-size: 14px; min-width: 520px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 6px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
figure { margin: 24px 0; } figure img, figure iframe { max-width: 100%; height: auto; }
figure iframe { aspect-ratio: 780 / 540; width: 100%; border: 0; }
figcaption { font-size: 14px; color: #444; }
code { overflow-wrap: anywhere; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def html_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """A captioned table in its own horizontal scroll box; columns from `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i >= numeric_from else ''}>{_e(v)}</td>" for i, v in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<div class='scroll'><table><caption>{_e(caption)}</caption><tr>{head}</tr>{body}</table></div>"


def _accuracy(v: Mapping[str, Any]) -> str:
    if v.get("accuracy") is None:
        return "n/a"
    return f"{v['accuracy']:.1f} [{v['ci'][0]:.1f}, {v['ci'][1]:.1f}]"


def results_tables(result: "ExperimentResult") -> str:
    """The numbers of `format_table`, as tables: accuracy by condition, the heads, paired tests and controls."""
    runs = list(result.test)
    first = result.test[runs[0]]
    keys = [("total", "all items")] + [("task", k) for k in first.get("task", {})]
    if "hint" in first:
        keys += [("hint", k) for k in first["hint"]] + [("hint_by_task", k) for k in first.get("hint_by_task", {})]
    rows = []
    for table, key in keys:
        cells = [result.test[run]["total"] if table == "total" else result.test[run][table][key] for run in runs]
        label = {"total": key, "hint_by_task": f"hint / task: {key.replace('/', ' / ')}"}.get(table, f"{table}: {key}")
        rows.append([label, cells[0].get("n", ""), *map(_accuracy, cells)])
    parts = [html_table(f"Test accuracy (%) with 95% bootstrap CI; steering beta {result.beta} (chosen on dev)",
                        ["items", "n", *runs], rows)]
    selection = result.head_selection
    heads = []
    for h in selection.specialists:
        d = selection.describe(h)
        heads.append([head_label(h), f"{d['r']:.3f}", f"[{d['ci'][0]:.2f}, {d['ci'][1]:.2f}]",
                      f"[{d['fisher_ci'][0]:.2f}, {d['fisher_ci'][1]:.2f}]", f"{d['p_adjusted']:.3f}"])
    null = selection.null
    significant = ", ".join(map(head_label, null.significant())) or "none"
    parts.append(html_table(
        f"Specialist heads, chosen on the calibration split (max |r| = {null.observed_max:.3f}, permutation p = "
        f"{null.p_max:.3f} over {null.n_permutations} shuffles; significant family-wise at 0.05: {significant}; "
        f"random control heads: {', '.join(map(head_label, selection.control))})",
        ["head", "r", "bootstrap CI", "Fisher-z CI", "permutation-adjusted p"], heads))
    paired = [[name, f"{v.accuracy_a:.1f}", f"{v.accuracy_b:.1f}", f"{v.difference:+.1f}",
               f"[{v.ci[0]:+.1f}, {v.ci[1]:+.1f}]", f"{v.a_only} / {v.b_only}", f"{v.p_value:.3g}", v.n]
              for name, v in result.paired.items()]
    parts.append(html_table("Paired comparisons on the test split (exact McNemar; bootstrap CI clustered by clip)",
                            ["comparison", "a (%)", "b (%)", "a - b", "95% CI", "gained / lost", "p", "n"], paired))
    controls = []
    for c in (result.control, result.layer_matched_control):
        if c is not None:
            kind = "layer-matched random heads" if c.layer_matched else "random heads"
            rank = "cannot differ (same layers)" if control_cannot_differ(result, c) else f"{c.percentile:.0f}"
            controls.append([kind, c.items, len(c.draws), f"{c.specialists_accuracy:.1f}", f"{c.median:.1f}",
                             f"{c.q05:.1f}-{c.q95:.1f}", rank])
    if controls:
        parts.append(html_table(
            "Specialists against random-head draws (steered accuracy, %); a layer-matched draw with the residual "
            "steering source uses the specialists' own layers, so its direction, and its accuracy, are the "
            "specialists' by construction",
            ["control", "items", "draws", "specialists", "median draw", "5-95%", "specialists' percentile"],
            controls))
    if result.validity:
        validity = [[f"{split} / {c}", f"{v.r:.2f}", f"[{v.ci[0]:.2f}, {v.ci[1]:.2f}]", f"{v.p_value:.3g}", v.n]
                    for split, d in result.validity.items() for c, v in d.items()]
        parts.append(html_table("Listening signal (the specialists' mean audio mass) against correctness, held out",
                                ["split / condition", "r", "Fisher-z CI", "p", "n"], validity))
    if result.layer_spread is not None:
        s = result.layer_spread
        parts.append(html_table(
            f"Steering from one layer at a time, dev {s.items} items (beta {s.beta}): accuracy (%); spread "
            f"{s.spread:.1f} points", ["", *(f"L{k}" for k in s.accuracy_by_layer)],
            [["accuracy (%)", *(f"{v:.1f}" for v in s.accuracy_by_layer.values())]]))
    if result.options:
        betas = list(dict.fromkeys(b for by_beta in result.options.values() for b in by_beta))
        parts.append(html_table(
            "Method options: dev focus accuracy (%) by beta", ["option", *(f"beta {b}" for b in betas)],
            [[name, *(f"{by_beta[b]:.1f}" if b in by_beta else "" for b in betas)]
             for name, by_beta in result.options.items()]))
    if result.notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in result.notes) + "</ul>")
    return "".join(parts)


def control_cannot_differ(result: "ExperimentResult", matched) -> bool:
    """A layer-matched control under the residual steering source: the direction is the mean audio-minus-silence
    residual over the heads' layers, the same layers as the specialists', so every draw steers exactly as they do.
    (Checked against the numbers too: a draw that differs means the premise is wrong, and it is drawn.)"""
    same_source = result.profile.steering_source == "residual" and matched.layer_matched
    return same_source and bool(np.all(np.asarray(matched.accuracies) == matched.specialists_accuracy))


def provenance_section(result: "ExperimentResult") -> str:
    """What made these numbers, as HTML: the run manifest when the result carries one (empty otherwise)."""
    if result.manifest is None:  # results saved before runs recorded their manifest
        return ""
    table = f"<div class='scroll'>{result.manifest.html_table()}</div>"
    return f"<h2>What made these numbers</h2>{table}"


def report_html(result: "ExperimentResult", figures: Mapping[str, str], static: bool = True) -> str:
    """The whole report; `figures` maps each figure's file stem to its caption."""
    settings = [[k, v] for k, v in result.profile.to_json().items()]
    gallery = "".join(
        f"<figure>{_embed(name, static)}<figcaption>{_e(caption)} "
        f"(<a href='{_e(name)}.html'>interactive</a>)</figcaption></figure>"
        for name, caption in figures.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>lens_audio report</title><style>{STYLE}</style></head><body>"
        "<h1>lens_audio: are audio-language models listening?</h1>"
        f"<p>Model: <code>{_e(result.model)}</code></p>"
        f"<h2>Results</h2>{results_tables(result)}"
        f"<h2>Settings</h2>{html_table('Experiment profile', ['setting', 'value'], settings, numeric_from=99)}"
        f"{provenance_section(result)}"
        f"<h2>Figures</h2>{gallery}</body></html>"
    )


def _embed(name: str, static: bool) -> str:
    """The PNG when static export ran, else the interactive HTML figure in a frame."""
    if static:
        return f"<img src='{_e(name)}.png' alt='{_e(name)}' width='760'>"
    return f"<iframe src='{_e(name)}.html' width='780' height='540' title='{_e(name)}'></iframe>"
