"""`lens-audio figures`: run the paper's experiment and write every figure plus `report.html`.

Stages (each with a progress bar; the experiment's run files under `runs_dir` are reused on
reruns unless `fresh`): the experiment (calibration heads, dev beta, test baseline / steered /
random control), then figures from its results and from analyses of one test clip whose question
carries a misleading hint (attention over audio time, residual patching audio vs silence, logit
lens) and of up to 16 test items (head-ablation scan: the no-hint ones where items carry hint conditions; ragged
choice lists, MMAU's 2-8 choices, are padded, and items whose options share a first token are skipped and counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lens_audio import plots
from lens_audio.figure_inputs import FILE as FIGURE_INPUTS
from lens_audio.figure_inputs import FigureInputs
from lens_audio.files import write_atomically
from lens_audio.report_page import control_cannot_differ, report_html

if TYPE_CHECKING:
    from lens_audio.analysis.validity import NoiseSweep
    from lens_audio.benchmark.splits import BenchmarkSplit
    from lens_audio.paper.profile import ExperimentProfile
    from lens_audio.paper.results import ExperimentResult
    from lens_audio.paper.rivals import RivalComparison

FIGURES = {
    "head_correlation": "Pearson r between each head's audio attention (final prompt token) and correctness, "
    "calibration split; outlined: the specialists (highest r) and the heads whose zero-ablation lowers the answer "
    "margin most; grey cells: heads whose audio mass does not vary over the calibration items (r undefined).",
    "audio_mass": "Mean audio attention mass of each head at the final prompt token, test split (baseline); the same "
    "heads outlined.",
    "beta_sweep": "Dev accuracy of adaptive audio-minus-silence steering from the specialists' layers, by beta, and "
    "the unsteered baseline (shaded: 95% bootstrap CI); dashed line: the beta chosen on dev and used on test.",
    "steering_results": "Test accuracy by hint condition (by task where items carry no hint conditions): baseline, "
    "steered, random-head control (dots, 95% bootstrap CI whiskers; series side by side).",
    "control_distribution": "The specialists' steered accuracy (red line) against three controls of seeded head "
    "draws, test focus items: random heads (grey bars; shaded: the middle 90% of these draws), depth-matched heads "
    "from the layers the audio has reached (green) and the random draws each at its own dev-chosen beta (purple). "
    "Each bar stands at its accuracy (the series overlap, translucent), so draws that tie the specialists sit on the "
    "red line; each legend entry gives the share of its draws that tie. A control that cannot differ by construction "
    "(the layer-matched draws under the residual steering source) is named under the chart, not drawn.",
    "listening_check": "Is it listening? For each specialist and the heads whose output matters most, test focus "
    "items: r of its audio mass with correctness with the real audio, with the silence twin's mass (nothing to hear) "
    "and within task x sub-category; and the drop of the answer margin when its final-position output takes its "
    "silence-run value.",
    "audio_attention": "Attention of the final token over the audio of each clip of one item (0-1 axis; each head's "
    "total audio mass in the legend), for the top specialists (solid) and the heads whose zero-ablation lowers the "
    "answer margin most (dashed) and the heads with the most attention on the asked clip on this item (dotted), under "
    "the spectrograms; the clip the question asks about is outlined.",
    "patching": "Patching the clean (audio) residual stream into the silence run, by layer and position in prompt "
    "order, each clip's audio one column: row L is the residual stream entering layer L (hook_resid_pre; the "
    "'Where the audio arrives' table uses the stream after layer L); 0 = the silence run's answer, 1 = the audio "
    "run's (colour saturates at ±1).",
    "logit_lens": "Probability of each option across layers at the final position, for the same clip.",
    "ablation": "Change of the answer's logit margin (options by their first token) when each head is zero-ablated, "
    "mean over up to 16 test items (the no-hint ones where items carry hint conditions); the same heads outlined.",
}
OPTIONAL_FIGURES = {  # drawn when the result carries what they show
    "rivals": "The rival interventions of lens-audio rivals (saved in the run folder), test split: each method's "
    "paired accuracy change from the baseline on the focus items (the conflicting ones where items carry hint "
    "conditions; x) against that on the other items "
    "(y), in points with 95% CIs resampling clips; each method's setting was chosen on dev. Right of 0: it helps "
    "where the text conflicts; below 0: it costs where the text agrees.",
}
CAUSAL_LABEL = "largest ablation drop"  # heads whose zero-ablation lowers the answer margin most
ASKED_LABEL = "most on the asked clip"  # heads whose final-token attention on this item's asked clip is largest
N_SHOWN = 2  # heads per rule in the attention figure


def make_figures(model_name: str = "workshop", benchmark: str | Path | None = None, out_dir: str | Path = "figures",
                 runs_dir: str | Path = "runs/figures", fresh: bool = False, progress: bool = True,
                 formats: tuple[str, ...] = ("html", "png"), static_required: bool = False,
                 profile: "ExperimentProfile | None" = None, split: "BenchmarkSplit | None" = None,
                 load: dict[str, Any] | None = None, allow_outside: bool = False) -> dict[str, Any]:
    """The experiment under `profile` (default: the model's registered one) and `split` (`Experiment`'s rule without
    it), the model loaded with `load` (`from_pretrained` keywords: dtype, device, device_map ...), then the figures."""
    from lens_audio import HookedAudioLM
    from lens_audio.analysis import (
        listening_signal,
        logit_lens,
        normalized_logit_diff,
        patch_residual_by_position,
    )
    from lens_audio.benchmark import load_mmau
    from lens_audio.benchmark.prompts import render_prompt
    from lens_audio.benchmark.scoring import asks_for_letters
    from lens_audio.organisms import benchmark_for
    from lens_audio.paper.experiment import Experiment
    from lens_audio.paper.profile import profile_for

    check_formats(formats)  # before the experiment runs, not after
    out, runs = Path(out_dir), Path(runs_dir)
    profile = profile or profile_for(model_name)
    model = HookedAudioLM.from_pretrained(model_name, **(load or {}))
    benchmark = benchmark or benchmark_for(model_name)
    items = load_mmau(benchmark, allow_outside=allow_outside)
    experiment = Experiment(model, items, profile, runs, progress, benchmark=benchmark, fresh=fresh, split=split)
    result = experiment.run_all()
    specialists = result.head_selection.specialists
    test = experiment.split("test")
    tok = model.tokenizer
    scan, scanned = ablation_scan(model, test, profile.prompt)
    causal = heads_by_ablation(scan.margin_change, len(specialists))

    example = next((i for i in test if i.get("hint") == "conflicting"), test[0])
    letters = asks_for_letters(profile.prompt)  # under the letters template the options are the letters

    def first_token(choice: str) -> int:  # an option of the example item by the first token the model answers with
        text = chr(ord("A") + example["choices"].index(choice)) if letters else choice
        return tok.encode(text, add_special_tokens=False)[0]

    batch = model.to_batch(example["audio_path"], render_prompt(example, profile.prompt))
    asked = example.get("target_clip")
    label = item_label(example)
    every_head = [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]
    signal = listening_signal(model, batch, heads=every_head)
    shown = {"specialist": specialists[:N_SHOWN], CAUSAL_LABEL: causal[:N_SHOWN]}
    if asked:
        shown[ASKED_LABEL] = heads_on_clip(signal, batch.audio_spans[0][asked - 1], N_SHOWN)
    drawn = list(dict.fromkeys(tuple(h) for heads in shown.values() for h in heads))
    index = {tuple(h): i for i, h in enumerate(signal.heads)}
    option_ids = [first_token(c) for c in example["choices"]]
    wrong = example.get("hinted_choice") or next(c for c in example["choices"] if c != example["answer"])
    corrupted = batch.silence_twin()
    table, labels = None, []
    try:
        metric = normalized_logit_diff(model, batch, corrupted, [first_token(example["answer"])], [first_token(wrong)])
        table, labels = patch_residual_by_position(model, batch, corrupted, metric, group_audio="clip")
    except ValueError:  # audio and silence give the same logit difference: nothing to restore
        pass
    lens = logit_lens(model, batch, [option_ids])
    clips = batch.audio_spans[0]
    mels = [batch.input_features[j, :, : int(batch.feature_attention_mask[j].sum())].float().cpu().numpy()
            for j in range(len(clips))]
    inputs = FigureInputs(
        margin_change=np.asarray(scan.margin_change, dtype=float), ablation_items=scanned[0],
        ablation_selection=scanned[1], label=label,
        asked=asked, choices=list(example["choices"]), attention_heads=drawn,
        attention_rows=signal.rows[0, [index[h] for h in drawn]].float().cpu().numpy(),
        audio_spans=[tuple(s) for s in clips], mels=mels, shown=shown,
        patching=None if table is None else np.asarray(table, dtype=float), patching_labels=list(labels),
        lens_prob=lens.prob[:, 0].float().numpy(), lens_rank=lens.rank[:, 0].numpy(), lens_labels=list(lens.labels),
    )
    return write_figures(result, inputs, out, formats, static_required)


def item_label(item: dict[str, Any]) -> str:
    """An item as a figure names it, by its own fields: the asked clip, the answer, the hint where there is one,
    else the benchmark's task / sub-category / difficulty (MMAU's)."""
    asked = item.get("target_clip")
    fields = [str(item[k]) for k in ("task", "sub-category", "difficulty") if item.get(k) not in (None, "", [])]
    return (f"Audio {asked}: " if asked else "") + f"answer {item['answer']}" + (
        f", hint {item['hinted_choice']}" if item.get("hinted_choice") else
        (f" ({' / '.join(fields)})" if fields else ""))


def ablation_scan(model, test: list[dict[str, Any]], prompt: Any, limit: int = 16):
    """The head-ablation scan of the figures on up to `limit` test items (the no-hint ones where items carry hint
    conditions, else the first), options by their first token (the letters under the `letters` template), ragged
    choice lists padded (`analysis.heads.pad_options`), items whose options share a first token skipped.

    Returns `(scan, (n_items, which items in words: "no-hint items", "items", and how many were skipped)))`."""
    from lens_audio.analysis import scan_heads
    from lens_audio.analysis.heads import pad_options
    from lens_audio.benchmark.prompts import render_prompt
    from lens_audio.benchmark.scoring import asks_for_letters, scored_options

    hinted = any("hint" in i for i in test)
    pool = [i for i in test if i.get("hint", "none") == "none"] if hinted else list(test)
    letters, tok = asks_for_letters(prompt), model.tokenizer
    rows, options, skipped = [], [], 0
    for item in pool:
        firsts = [tok.encode(c, add_special_tokens=False)[0] for c in scored_options(item, letters)]
        if len(set(firsts)) < len(firsts):
            skipped += 1
            continue
        rows.append(item)
        options.append(firsts)
        if len(rows) == limit:
            break
    if not rows:
        raise ValueError(f"no test item for the head-ablation scan: {skipped} items' options share a first token.")
    answers = [i["choices"].index(i["answer"]) for i in rows]
    batch = model.to_batch([i["audio_path"] for i in rows], [render_prompt(i, prompt) for i in rows])
    scan = scan_heads(model, batch, pad_options(options, answers), answers, kind="zero", heads_per_pass=4)
    which = ("no-hint items" if hinted else "items") + (
        f", {skipped} skipped (options sharing a first token)" if skipped else "")
    return scan, (len(rows), which)


def check_formats(formats: tuple[str, ...]) -> None:
    unknown = [fmt for fmt in formats if fmt not in plots.FORMATS]
    if unknown:
        raise ValueError(f"unknown figure format {unknown[0]!r} in --formats; use {', '.join(plots.FORMATS)}.")


def figures_from(source: str | Path, out_dir: str | Path | None = None, formats: tuple[str, ...] = ("html", "png"),
                 static_required: bool = False) -> dict[str, Any]:
    """Every figure and the report from a saved result (`results.json`, or the folder holding it and
    `figure_inputs.json`), with no model and no forward pass; written to `out_dir` (default: the source folder).

    Without `figure_inputs.json` (results saved by `lens-audio experiment`) only the figures of the result itself
    are drawn, and the return value's "skipped" names the others.
    """
    from lens_audio.paper.results import ExperimentResult

    check_formats(formats)
    source = Path(source)
    path = source / "results.json" if source.is_dir() else source
    if not path.is_file():
        raise FileNotFoundError(f"--from {source}: no saved result there; pass the results.json that "
                                "`lens-audio figures` or `lens-audio experiment --json` wrote, or its folder.")
    result = ExperimentResult.load(path)
    extra = path.parent / FIGURE_INPUTS
    inputs = FigureInputs.load(extra) if extra.is_file() else None
    return write_figures(result, inputs, Path(out_dir) if out_dir is not None else path.parent, formats,
                         static_required)


def draw_figures(result: "ExperimentResult", inputs: FigureInputs | None) -> dict[str, Any]:
    """Every figure, drawn from the saved result and (when given) the example's analyses: no model needed."""
    specialists = result.head_selection.specialists
    marked: dict[str, list] = {"specialists": specialists}
    if inputs is not None:
        marked[CAUSAL_LABEL] = heads_by_ablation(inputs.margin_change, len(specialists))
    figures: dict[str, Any] = {}
    figures["head_correlation"] = plots.head_heatmap(
        result.head_selection.correlation.r,
        "Which heads' audio attention predicts a correct answer?",
        "Pearson r",
        blank_reason="no r: the head's audio mass does not vary over calibration items",
        marked=marked,
    )
    if result.audio_mass is not None:
        figures["audio_mass"] = plots.head_heatmap(
            result.audio_mass, "Audio attention mass at the final prompt token", "mass", diverging=False,
            marked=marked,
        )
    figures.update(_statistics_figures(result))
    if result.rivals is not None:
        figures["rivals"] = plots.rivals_plot(result.rivals)
    if inputs is None:
        return stamped(figures, result, None)
    label, asked = inputs.label, inputs.asked
    figures["audio_attention"] = plots.audio_attention(
        inputs.attention_signal(), inputs.attention_batch(), title=f"Final-token attention over the audio ({label})",
        highlight=asked - 1 if asked else None, groups=inputs.shown,
    )
    if inputs.patching is not None:
        figures["patching"] = plots.patching_map(inputs.patching, inputs.patching_labels,
                                                 f"Restoring the audio: residual patching ({label})")
    figures["logit_lens"] = plots.logit_lens_plot(inputs.lens(), inputs.choices, title=f"Logit lens ({label})")
    figures["ablation"] = plots.head_heatmap(
        inputs.margin_change, "Zero-ablating each head: change of the answer margin", "Δ margin", marked=marked
    )
    return stamped(figures, result, inputs)


def stamped(figures: dict[str, Any], result: "ExperimentResult", inputs: FigureInputs | None) -> dict[str, Any]:
    """Under each figure's title, in every format (the PNG, PDF and SVG carry no report caption): the model, the
    split, the items and their number it was computed on."""
    test_n = result.test[next(iter(result.test))]["total"].get("n", "?")
    arrival = result.audio_arrival  # its items name the one hint condition calibration's items share, if any
    shared = arrival.items if arrival is not None and arrival.split == "calibration" and arrival.items not in (
        "no-hint", "all") else "all"
    on = {
        "head_correlation": f"calibration split, {shared} items, n = {result.head_selection.correlation.n_examples}",
        "audio_mass": f"test split, baseline run, n = {test_n} items",
        "beta_sweep": f"dev split, all items, n = {result.dev.baseline.get('n', '?')}; beta chosen on these",
        "steering_results": f"test split, n = {test_n} items",
        "listening_check": "test split, focus items",
        "rivals": "test split, paired with the baseline on the same items",
    }
    if result.control is not None:
        on["control_distribution"] = f"test split, {result.control.items} items (n = {result.control.versus_median.n})"
    if inputs is not None:
        one = f"test split, one item ({inputs.label})"
        on.update(audio_attention=one, patching=one, logit_lens=one,
                  ablation=f"test split, {inputs.ablation_items} {inputs.ablation_selection}")
    for name, fig in figures.items():  # a figure added later without its line here still names the model
        where = f"; {on[name]}" if name in on else ""
        fig.update_layout(title_text=f"{fig.layout.title.text}<br><sup>model {result.model}{where}</sup>",
                          margin_t=max(fig.layout.margin.t or 0, 100))
    return figures


def write_figures(result: "ExperimentResult", inputs: FigureInputs | None, out: Path,
                  formats: tuple[str, ...] = ("html", "png"), static_required: bool = False) -> dict[str, Any]:
    """Draw every figure, write each in `formats`, the report, `results.json` and `figure_inputs.json` into `out`."""
    figures = draw_figures(result, inputs)
    for fig in figures.values():  # each figure's HTML carries what made it (plotly escapes the JSON it inlines)
        fig.update_layout(meta={"manifest": None if result.manifest is None else result.manifest.to_json()})
    saved, static_problem = plots.save_figures(figures, out, formats, static_required)
    written = {name: [str(p) for p in paths] for name, paths in saved.items()}
    formats_written = {name: [Path(p).suffix[1:] for p in paths] for name, paths in saved.items()}
    write_atomically(out / "report.html", report_html(result, captions(result, figures), written=formats_written,
                                                      folder=out))
    result.save(out / "results.json")
    if inputs is not None:
        inputs.save(out / FIGURE_INPUTS)
    skipped = [name for name in FIGURES if name not in figures]
    return {"figures": written, "result": result, "static_problem": static_problem, "skipped": skipped, "out": out}


def dev_ci_unit(result: "ExperimentResult") -> str:
    """What the dev intervals resampled: "clips" or "items" (the tables' `ci_unit`; items for results saved before
    tables recorded it)."""
    units = {v.get("ci_unit", "item") for v in [result.dev.baseline, *result.dev.steered_by_beta.values()]}
    return " or ".join(f"{unit}s" for unit in sorted(units))


def captions(result: "ExperimentResult", names) -> dict[str, str]:
    """Each figure's report caption (`FIGURES`), with what the beta sweep's intervals resampled."""
    text = {name: {**FIGURES, **OPTIONAL_FIGURES}[name] for name in names}
    if "beta_sweep" in text:
        text["beta_sweep"] = text["beta_sweep"].replace(
            "95% bootstrap CI", f"95% bootstrap CI resampling {dev_ci_unit(result)}")
    return text


def _statistics_figures(result: "ExperimentResult") -> dict[str, Any]:
    """The beta sweep, the test results by condition and the random-head control distribution, from the result
    object."""
    figures: dict[str, Any] = {}
    betas = list(result.dev.steered_by_beta)
    sweep = list(result.dev.steered_by_beta.values())
    fig = plots.curve_with_band(
        betas,
        [v["accuracy"] for v in sweep],
        [v["ci"][0] for v in sweep],
        [v["ci"][1] for v in sweep],
        "Steering strength on the dev split",
        "beta",
        "accuracy (%)",
        name="steered",
    )
    base = result.dev.baseline
    figures["beta_sweep"] = plots.curve_with_band(
        betas,
        [base["accuracy"]] * len(betas),
        [base["ci"][0]] * len(betas),
        [base["ci"][1]] * len(betas),
        "Steering strength on the dev split",
        "beta",
        "accuracy (%)",
        name="baseline",
        fig=fig,
    )
    plots.mark_chosen(figures["beta_sweep"], result.beta, f"chosen on dev: beta {result.beta:g}")
    for trace in figures["beta_sweep"].data:  # the bands say what they resampled
        if (trace.name or "").endswith("95% CI"):
            trace.name += f" ({dev_ci_unit(result)} resampled)"
    series = {}
    axis = "hint condition" if result.test["baseline"].get("hint") else "task"
    for run, label in (
        ("baseline", "baseline"),
        ("steered", "steered (specialists)"),
        ("random_control", "random heads (seeded draw)"),
    ):
        table = by_condition(result.test[run])
        series[label] = (
            [v["accuracy"] for v in table.values()],
            [v["ci"][0] for v in table.values()],
            [v["ci"][1] for v in table.values()],
        )
        groups = list(table)
    figures["steering_results"] = plots.grouped_points(
        groups,
        series,
        f"Test accuracy by {axis} (steering beta {result.beta})",
        axis,
        "accuracy (%)",
    )
    if result.control is not None:
        c = result.control
        matched, not_drawn = result.layer_matched_control, []
        if matched is not None and control_cannot_differ(result, matched):
            not_drawn.append(
                f"Layer-matched control not drawn: with the residual steering source the direction depends only on "
                f"the layers, so its {len(matched.draws)} draws are the specialists "
                f"({matched.specialists_accuracy:.1f}%) by construction."
            )
            matched = None
        drawn = [c, *(v for k, v in result.controls.items() if k in ("depth-matched", "beta-matched"))]
        counts = sorted({len(v.draws) for v in drawn})
        each = f"{counts[0]} draws each" if len(counts) == 1 else f"{'/'.join(map(str, counts))} draws"
        notes = [n[0].upper() + n[1:] + "." for n in result.notes if "draws not drawn" in n
                 and not (not_drawn and n.startswith("layer-matched"))]  # said once
        figures["control_distribution"] = plots.control_distribution_plot(
            c.accuracies,
            c.specialists_accuracy,
            c.percentile,
            f"Specialists vs random-head controls ({each}; {c.items} test items, beta {result.beta})",
            c.versus_median.n,
            matched=None if matched is None else matched.accuracies,
            not_drawn=not_drawn + notes,
            others={k: (v.accuracies, v.percentile) for k, v in result.controls.items()
                    if k in ("depth-matched", "beta-matched")},
        )
    if "test" in result.validity_controls:
        figures["listening_check"] = plots.listening_check_plot(result.validity_controls["test"])
    return figures


def by_condition(tables: dict[str, Any]) -> dict[str, Any]:
    """A run's accuracy table by hint condition, else (items without hints, e.g. MMAU) by the benchmark's task."""
    return tables.get("hint") or tables.get("task") or {"all": tables["total"]}


def heads_on_clip(signal, span: tuple[int, int], k: int) -> list[tuple[int, int]]:
    """The `k` heads of `signal` (example 0) whose final-token attention puts the most mass on positions `span`."""
    mass = signal.rows[0, :, span[0] : span[1]].float().sum(-1)
    return [tuple(signal.heads[i]) for i in mass.argsort(descending=True, stable=True)[:k].tolist()]


def heads_by_ablation(margin_change, k: int) -> list[tuple[int, int]]:
    """The `k` heads whose ablation lowers the answer margin most (most negative mean change), largest drop first."""
    import numpy as np

    values = np.nan_to_num(np.asarray(margin_change, dtype=float), nan=np.inf)
    order = np.argsort(values, axis=None, kind="stable")[:k]
    return [tuple(int(i) for i in np.unravel_index(o, values.shape)) for o in order]


def write_rivals(comparison: "RivalComparison", path: str | Path) -> Path:
    """`lens-audio rivals`' figure (accuracy gained on the focus items against lost elsewhere, per method) as one
    offline HTML page."""
    path = Path(path)
    plots.save_figure(plots.rivals_plot(comparison), path.stem, path.parent, ["html"])
    return path


def write_noise_sweep(sweep: "NoiseSweep", path: str | Path) -> Path:
    """`lens-audio noise-sweep`'s figure (accuracy, the specialists' mass and its r by SNR) as one offline HTML page."""
    path = Path(path)
    plots.save_figure(plots.noise_sweep_plot(sweep), path.stem, path.parent, ["html"])
    return path
