"""`report.html`: the experiment's results as HTML tables with captions, its settings, provenance and figures.

One page that works offline: each figure is shown from a file that was written next to it (its PNG, else its SVG,
else the interactive HTML figure in a frame, which loads the folder's local `plotly.min.js`, else a link to its
PDF), and links only to files written. Everything stays inside a column of at most 1,240 px (at 1,280 px every figure
but the patching map shows whole, title and colour bar included): wide tables and figures wider than the column
scroll inside their own box; images are shown at their natural size (the width of the file shown).

`provenance_section(result)` is the one place that renders what made the run (the run manifest, when the
result carries one).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lens_audio.files import escape_html
from lens_audio.paper.results import accuracy_cell, accuracy_rows, head_label
from lens_audio.paper.text import causal_versus_r, chosen_by, control_basis, significant_heads
from lens_audio.plots.export import PNG_SCALE

if TYPE_CHECKING:
    from lens_audio.paper.results import ExperimentResult
    from lens_audio.paper.rival_results import RivalComparison

STYLE = """
body { font-family: system-ui, sans-serif; box-sizing: border-box; max-width: min(100%, 1264px); margin: auto;
  padding: 0 12px; color: #222; }
.scroll { overflow-x: auto; max-width: 100%; margin: 12px 0 20px; }
table { border-collapse: collapse; font-size: 14px; min-width: 520px; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 6px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
figure { margin: 24px 0; } figure .scroll { margin: 0 0 6px; } figure img { max-width: 100%; height: auto; }
figure img.wide { max-width: none; }
figure iframe { aspect-ratio: 780 / 540; width: 100%; border: 0; }
.about { background: #f4f6f8; border-left: 4px solid #8aa; padding: 8px 12px; }
figcaption { font-size: 14px; color: #444; }
code { overflow-wrap: anywhere; }
"""


_e = escape_html  # the one escaping of every page (lens_audio.files)


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
    rows = []
    for table, key, _ in accuracy_rows(first):
        cells = [accuracy_cell(result.test[run], table, key) for run in runs]
        label = {"total": "all items", "hint_by_task": f"hint / task: {key.replace('/', ' / ')}"}.get(
            table, f"{table}: {key}")
        rows.append([label, cells[0].get("n", ""), *map(_accuracy, cells)])
    parts = [html_table(f"Test accuracy (%) with 95% bootstrap CI; steering beta {result.beta} (chosen on dev)",
                        ["items", "n", *runs], rows)]
    selection = result.head_selection
    heads = []
    flagged = set(selection.null.significant())
    for h in selection.specialists:
        d = selection.describe(h)
        heads.append([head_label(h), f"{d['r']:.3f}", f"[{d['ci'][0]:.2f}, {d['ci'][1]:.2f}]",
                      f"[{d['fisher_ci'][0]:.2f}, {d['fisher_ci'][1]:.2f}]", f"{d['p_adjusted']:.3f}",
                      "yes" if tuple(h) in flagged else "no (not significant)"])
    null = selection.null
    parts.append(html_table(
        f"Specialist heads, chosen on the calibration split ({chosen_by(selection)}; max |r| = "
        f"{null.observed_max:.3f}, permutation p = {null.p_max:.3f} over {null.n_permutations} shuffles; significant "
        f"family-wise at 0.05 (by |r|): {significant_heads(selection)}; "
        f"random control heads: {', '.join(map(head_label, selection.control))})",
        ["head", "r", "bootstrap CI", "Fisher-z CI", "permutation-adjusted p", "significant (family-wise 0.05)"],
        heads))
    paired = [[name, f"{v.accuracy_a:.1f}", f"{v.accuracy_b:.1f}", f"{v.difference:+.1f}",
               f"[{v.ci[0]:+.1f}, {v.ci[1]:+.1f}]", f"{v.a_only} / {v.b_only}", f"{v.p_value:.3g}", v.n]
              for name, v in result.paired.items()]
    parts.append(html_table("Paired comparisons on the test split (exact McNemar; bootstrap CI clustered by clip)",
                            ["comparison", "a (%)", "b (%)", "a - b", "95% CI", "gained / lost", "p", "n"], paired))
    controls = []
    for c in result.controls.values():
        rank = "cannot differ (same layers)" if control_cannot_differ(result, c) else f"{c.percentile:.0f}"
        v = c.versus_median
        controls.append([c.kind, f"{c.specialists_accuracy:.1f}", f"{c.median:.1f} ({c.q05:.1f}-{c.q95:.1f})", rank,
                         f"{v.difference:+.1f} [{v.ci[0]:+.1f}, {v.ci[1]:+.1f}]", f"{v.a_only} / {v.b_only}",
                         f"{v.p_value:.3g}", f"{c.detectable:.1f}"])
    if controls:
        first = next(iter(result.controls.values()))
        parts.append(html_table(
            f"Is it the heads or the depth? Specialists against {len(first.draws)} random-head draws per control, "
            f"{first.items} test items (steered accuracy, %; against the median draw: difference with its paired "
            "bootstrap CI clustered by clip, exact McNemar p, and the smallest difference these items can show at "
            "p < 0.05). A layer-matched draw with the residual steering source uses the specialists' own layers, "
            "so its direction, and its accuracy, are the specialists' by construction",
            ["control", "specialists", "median draw (5-95%)", "percentile", "vs median", "gained / lost", "p",
             "detectable"], controls))
        parts.append("<ul>" + "".join(f"<li>{_e(c.kind)}: {_e(control_basis(result, c))}</li>"
                                      for c in result.controls.values() if control_basis(result, c)) + "</ul>")
    if result.audio_arrival is not None and result.audio_arrival.by_layer:
        a = result.audio_arrival
        probe = a.probe or []
        parts.append(html_table(
            f"Where the audio arrives ({a.split} {a.items} items, n = {a.n}; audio {a.audio:.1f}%, silence "
            f"{a.silence:.1f}%): accuracy (%) with the final-position residual after layer L (resid_post; the patching "
            "map's rows are the stream entering layer L) patched from the audio run into the silence run, and a "
            f"linear probe of the answer's class there (chance {(a.probe_chance or 0):.1f}%); "
            + (f"arrived from layer {a.arrival} on, so the depth-matched draws use layers {a.layers[0]}-{a.layers[-1]}"
               if a.layers else "arrival undefined: the depth-matched draws use the specialists' depth range"),
            ["", *(f"L{k}" for k in range(len(a.by_layer)))],
            [["patched (%)", *(f"{v:.1f}" for v in a.by_layer)], ["restored share", *(f"{v:.2f}" for v in a.restored)]]
            + ([["probe (%)", *(f"{v:.1f}" for v in probe[1:])]] if probe else [])))
        if a.notes:  # which items it was measured on, and what that lets the probe read
            parts.append("<ul>" + "".join(f"<li>note: {_e(n)}</li>" for n in a.notes) + "</ul>")
    if result.conflict:
        parts.append(conflict_table(result))
    if result.rivals is not None:
        parts.append(rivals_table(result.rivals))
    for split, c in result.validity_controls.items():
        g = c.signal
        rows = [["r with correctness (audio)", g.audio.describe()],
                ["r of the silence twin's mass", g.silence.describe()]]
        rows += [[f"r within {name} ({g.n_strata[name]} strata)", g.within[name].describe()] for name in g.within]
        rows += [["causal effect vs r (Spearman, all heads)", f"{c.causal_rank_r:.2f}"]]
        rows += [["causal vs r", line[len("causal vs r: "):]] for line in causal_versus_r(c)]
        parts.append(html_table(
            f"Is it listening? The specialists' signal on {split} {c.items} items (n = {c.n}, {c.n_clusters} clips): "
            "r within each stratum (task, sub-category, and fields such as the hinted class) and whether the heads "
            "that move the answer are the r-selected ones", ["check", "value"], rows, numeric_from=99))
    if result.validity:
        validity = [[f"{split} / {c}", *(_validity_cells(v)), v.n]
                    for split, d in result.validity.items() for c, v in d.items()]
        undefined = any(row[1] == NO_R for row in validity)
        parts.append(html_table("Listening signal (the specialists' mean audio mass) against correctness, held out"
                                + (f"; {NO_R}: {NO_R_WHY}" if undefined else ""),
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


NO_R = "undefined*"  # a NaN r, in a table cell; the caption gives NO_R_WHY
NO_R_WHY = ("the specialists' mass or correctness does not vary over those items (e.g. every item answered right), so "
            "r, its CI and p have no value")


def conflict_table(result: "ExperimentResult") -> str:
    """Text dominance and flip rates of each test run, overall and by breakdown (`benchmark.conflict`)."""
    from lens_audio.benchmark.conflict import RATES

    rows = []
    for run, m in result.conflict.items():
        rows.append([run, "all", *(_accuracy(m.overall[r]) if m.overall.get(r) else "n/a" for r in RATES)])
        rows += [[run, f"{name}: {value}", *(_accuracy(rates[r]) if rates.get(r) else "n/a" for r in RATES)]
                 for name, by_value in m.by_field.items() for value, rates in by_value.items()]
    return html_table(
        "Text dominance on the test split (%, 95% bootstrap CI resampling clips): ALME's text-dominance ratio over "
        "conflicting items (answers that followed the text / those that followed the text or the audio), the "
        "same-audio flip rate (conflicting against no hint, same audio and question) and the silence flip rate (audio "
        "against its silence twin, same text; baseline only)",
        ["run", "items", "text-dominance ratio", "same-audio flip", "silence flip"], rows, numeric_from=2)


def rivals_table(comparison: "RivalComparison") -> str:
    """`lens-audio rivals`' comparison: each method's setting, cost, accuracy by hint condition, text dominance, its
    paired difference from the baseline on the focus items and on the others, and the verdicts."""
    from lens_audio.paper.rival_results import VERDICT_RULE, verdict

    focus = comparison.focus
    conditions = list(comparison.methods[0].test.get("hint", {}))
    rows = []
    for m in comparison.methods:
        cells = [_accuracy(m.test["total"]), *(_accuracy(m.test["hint"].get(c, {})) for c in conditions)]
        rates = [m.conflict.overall.get(r) if m.conflict else None for r in ("text_dominance", "same_audio_flip")]
        paired = [m.versus(other, subset)
                  for other, subset in (("baseline", focus), ("baseline", "other"), ("adaptive steering", focus))]
        rows.append([m.method, m.setting or "-", m.forwards, *cells, *(_accuracy(r) if r else "n/a" for r in rates),
                     *("-" if v is None else f"{v.difference:+.1f} [{v.ci[0]:+.1f}, {v.ci[1]:+.1f}]"
                       for v in paired[:2]),
                     "-" if paired[0] is None else verdict(paired[0]),
                     "-" if paired[2] is None else verdict(paired[2])])
    notes = "".join(f"<li>note: {_e(n)}</li>" for n in comparison.notes)
    return html_table(
        f"Rival interventions on the test split (lens-audio rivals; each setting chosen on dev {focus} items, read "
        "once on test): accuracy (%, 95% bootstrap CI resampling clips) overall and by hint condition, the "
        f"text-dominance ratio, the paired difference from the baseline (points) on {focus} items and on the other "
        f"items, and the verdicts on {focus} items against the baseline and against adaptive steering ({VERDICT_RULE}; "
        "exact McNemar)",
        ["method", "setting", "fwd/item", "all", *conditions, "text-dominance ratio", "same-audio flip",
         f"vs baseline ({focus})",
         "vs baseline (other)", "against the baseline", "against adaptive steering"],
        rows, numeric_from=2) + (f"<ul>{notes}</ul>" if notes else "")


def _validity_cells(v) -> list[str]:
    """r, its CI and p; a NaN r says why instead of printing `nan [nan, nan]`."""
    if not np.isfinite(v.r):
        return [NO_R, "-", "-"]
    return [f"{v.r:.2f}", f"[{v.ci[0]:.2f}, {v.ci[1]:.2f}]", f"{v.p_value:.3g}"]


def about_section(result: "ExperimentResult", folder: str | Path = ".") -> str:
    """What made the numbers, in one paragraph: the model (for a shipped organism: a small model trained on
    synthetic audio, with a link to its model card, relative to `folder`, where the report is written, so the link
    works in any clone and on GitHub) and the benchmark (items and where they came from)."""
    from lens_audio.model.registry import model_card

    r = np.asarray(result.head_selection.correlation.r)
    size = f"{r.shape[0]} layers x {r.shape[1]} heads"
    card = model_card(result.model)
    if card is not None:
        model = (f"<code>{_e(result.model)}</code>, a shipped model organism: a small model ({size}) trained in this "
                 "package on synthetic audio, not a real audio-language model; see its "
                 f"<a href='{_e(relative_link(card, folder))}'>model card</a>")
    else:
        model = f"<code>{_e(result.model)}</code> ({size})"
    m = result.manifest
    bench = "" if m is None or m.benchmark is None else f" <code>{_e(m.benchmark)}</code>"
    count = "" if m is None or m.n_items is None else f" ({m.n_items} items: calibration, dev and test splits)"
    synthetic = " of synthetic clips and questions" if card is not None else ""
    return (f"<p class='about'>These numbers come from the model {model}, on the benchmark{bench}{count}{synthetic}. "
            "Heads are chosen on calibration, beta on dev, and every accuracy below is on test unless a caption "
            "says otherwise.</p>")


def relative_link(target: str | Path, folder: str | Path) -> str:
    """`target` as a link from a page written in `folder` (a relative POSIX path: it works in any clone)."""
    return Path(os.path.relpath(Path(target).resolve(), Path(folder).resolve())).as_posix()


def control_cannot_differ(result: "ExperimentResult", matched) -> bool:
    """A layer-matched control under the residual steering source: the direction is the mean audio-minus-silence
    residual over the heads' layers, the same layers as the specialists', so every draw steers exactly as they do.
    (Checked against the numbers too: a draw that differs means the premise is wrong, and it is drawn.)"""
    same_source = result.profile.steering_source == "residual" and matched.kind == "layer-matched"
    return same_source and bool(np.all(np.asarray(matched.accuracies) == matched.specialists_accuracy))


def provenance_section(result: "ExperimentResult") -> str:
    """What made these numbers, as HTML: the run manifest when the result carries one (empty otherwise)."""
    if result.manifest is None:  # results saved before runs recorded their manifest
        return ""
    table = f"<div class='scroll'>{result.manifest.html_table()}</div>"
    return f"<h2>What made these numbers</h2>{table}"


def report_html(result: "ExperimentResult", figures: Mapping[str, str], static: bool = True,
                written: Mapping[str, Sequence[str]] | None = None, widths: Mapping[str, int] | None = None,
                folder: str | Path = ".") -> str:
    """The whole report, to be written into `folder` (its links are relative to it); `figures` maps each figure's
    file stem to its caption, `written` each stem to the formats written (default: PNG and HTML, or HTML only when
    not `static`). Each image is shown at the natural width of the file shown (`shown_width`, read from `folder`);
    `widths` (CSS px by stem) is used only where that file cannot be read."""
    settings = [[k, v] for k, v in result.profile.to_json().items()]
    default = ("png", "html") if static else ("html",)
    gallery = "".join(
        _figure(name, caption, formats, shown_width(folder, name, formats) or (widths or {}).get(name))
        for name, caption in figures.items() for formats in [(written or {}).get(name, default)]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>lens_audio report</title><style>{STYLE}</style></head><body>"
        "<h1>lens_audio: are audio-language models listening?</h1>"
        f"{about_section(result, folder)}"
        f"<h2>Results</h2>{results_tables(result)}"
        f"<h2>Settings</h2>{html_table('Experiment profile', ['setting', 'value'], settings, numeric_from=99)}"
        f"{provenance_section(result)}"
        f"<h2>Figures</h2>{gallery}</body></html>"
    )


COLUMN = 1240  # the column's width: the body's max-width less its padding (narrower on a small screen)
LINKS = {"html": "interactive", "png": "PNG", "svg": "SVG", "pdf": "PDF"}


def shown_format(formats: Sequence[str]) -> str | None:
    """The image format a figure is shown from: its PNG, else its SVG, else none (the HTML in a frame)."""
    return next((fmt for fmt in ("png", "svg") if fmt in formats), None)


def shown_width(folder: str | Path, name: str, formats: Sequence[str]) -> int | None:
    """The natural width (CSS px) of the image file the report shows for `name`: an SVG's `width` attribute (a wide
    figure's print layout is narrower than its HTML, `plots.paper`), a PNG's pixel width over its scale; None when
    there is no such file or it cannot be read."""
    fmt = shown_format(formats)
    path = Path(folder) / f"{name}.{fmt}"
    if fmt is None or not path.is_file():
        return None
    head = path.read_bytes()[:4096]
    if fmt == "png":
        return round(int.from_bytes(head[16:20], "big") / PNG_SCALE) if head[:8] == b"\x89PNG\r\n\x1a\n" else None
    found = re.search(rb"<svg\b[^>]*?\swidth=\"([\d.]+)", head)
    return round(float(found[1])) if found else None


def _figure(name: str, caption: str, formats: Sequence[str], width: int | None) -> str:
    """One figure, shown from a file that was written (PNG, else SVG, else the HTML in a frame, else none), at
    `width`, the shown file's natural width (scrolling inside its box when wider than the column), with links to
    every file written."""
    shown = shown_format(formats)
    size = f" width='{int(width)}'" if width else ""
    size += " class='wide'" if width and width > COLUMN else ""  # wider than the column: scrolls, never shrinks
    if shown is not None:
        body = f"<div class='scroll'><img src='{_e(name)}.{shown}' alt='{_e(name)}'{size}></div>"
    elif "html" in formats:
        body = f"<iframe src='{_e(name)}.html' width='780' height='540' title='{_e(name)}'></iframe>"
    else:
        body = ""
    links = " · ".join(f"<a href='{_e(name)}.{fmt}'>{LINKS[fmt]}</a>" for fmt in LINKS if fmt in formats)
    return f"<figure>{body}<figcaption>{_e(caption)} ({links})</figcaption></figure>"
