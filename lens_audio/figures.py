"""`lens-audio figures`: run the paper's experiment and write every figure plus `report.html`.

Stages (each with a progress bar; the experiment's run files under `runs_dir` are reused on
reruns unless `fresh`): the experiment (calibration heads, dev beta, test baseline / steered /
random control), then figures from its results and from analyses of one test clip whose question
carries a misleading hint (attention over audio time, residual patching audio vs silence, logit
lens) and of 16 no-hint test clips (head-ablation scan).
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lens_audio import plots

if TYPE_CHECKING:
    from lens_audio.evaluation.results import ExperimentResult

FIGURES = {
    "head_correlation": "Pearson r between each head's audio attention (final prompt token) and correctness, "
    "calibration split; "
    "grey cells: heads whose audio mass does not vary over the calibration items (r undefined).",
    "audio_mass": "Mean audio attention mass of each head at the final prompt token, test split (baseline).",
    "beta_sweep": "Dev accuracy of adaptive audio-minus-silence steering from the specialists' layers, by beta (95% "
    "CI).",
    "steering_results": "Test accuracy by hint condition: baseline, steered, random-head control (dots, 95% bootstrap "
    "CI whiskers; series side by side).",
    "control_distribution": "The specialists' steered accuracy (red) against seeded random-head draws (grey; blue: "
    "layer-matched), test focus items.",
    "listening_check": "Is it listening? For each specialist and the heads whose output matters most, test focus "
    "items: r of its audio mass with correctness with the real audio, with the silence twin's mass (nothing to hear) "
    "and within task x sub-category; and the drop of the answer margin when its final-position output takes its "
    "silence-run value.",
    "audio_attention": "Attention of the final token over the audio of each clip of one item, for the top specialist "
    "heads, under the spectrograms (the clip the question asks about shaded).",
    "patching": "Patching the clean (audio) residual stream into the silence run, by layer and position: 1 = answer "
    "restored.",
    "logit_lens": "Probability of each option across layers at the final position, for the same clip.",
    "ablation": "Change of the answer's logit margin when each head is zero-ablated, 16 no-hint test clips.",
}


def make_figures(model_name: str = "workshop", benchmark: str | Path | None = None, out_dir: str | Path = "figures",
                 runs_dir: str | Path = "runs/figures", fresh: bool = False, progress: bool = True,
                 formats: tuple[str, ...] = ("html", "png"), static_required: bool = False) -> dict[str, Any]:
    from lens_audio import HookedAudioLM
    from lens_audio.analysis import (
        listening_signal,
        logit_lens,
        normalized_logit_diff,
        patch_residual_by_position,
        scan_heads,
    )
    from lens_audio.evaluation import load_mmau
    from lens_audio.evaluation.experiment import Experiment, format_table
    from lens_audio.evaluation.profile import profile_for
    from lens_audio.evaluation.prompts import render_prompt
    from lens_audio.workshop import benchmark_for

    out, runs = Path(out_dir), Path(runs_dir)
    if fresh and runs.exists():
        shutil.rmtree(runs)
    profile = profile_for(model_name)
    model = HookedAudioLM.from_pretrained(model_name)
    items = load_mmau(benchmark or benchmark_for(model_name))
    result = Experiment(model, items, profile, runs, progress).run_all()
    specialists = result.head_selection.specialists
    figures: dict[str, Any] = {}
    figures["head_correlation"] = plots.head_heatmap(
        result.head_selection.correlation.r,
        "Which heads' audio attention predicts a correct answer?",
        "Pearson r",
        blank_reason="no r: the head's audio mass does not vary over calibration items",
    )
    figures["audio_mass"] = plots.head_heatmap(
        result.audio_mass, "Audio attention mass at the final prompt token", "mass", diverging=False
    )
    figures.update(_statistics_figures(result))

    test = [i for i in items if i.get("split") == "test"]
    example = next((i for i in test if i.get("hint") == "conflicting"), test[0])
    batch = model.to_batch(example["audio_path"], render_prompt(example, profile.prompt))
    asked = example.get("target_clip")
    label = (f"Audio {asked}: " if asked else "") + f"answer {example['answer']}" + (
        f", hint {example['hinted_choice']}" if example.get("hinted_choice") else ""
    )
    figures["audio_attention"] = plots.audio_attention(listening_signal(model, batch, heads=specialists[:2]), batch,
                                                       title=f"Where the top specialists listen ({label})",
                                                       highlight=asked - 1 if asked else None)
    tok = model.tokenizer
    first_token = lambda text: tok.encode(text, add_special_tokens=False)[0]
    option_ids = [first_token(c) for c in example["choices"]]
    wrong = example.get("hinted_choice") or next(c for c in example["choices"] if c != example["answer"])
    corrupted = batch.silence_twin()
    try:
        metric = normalized_logit_diff(model, batch, corrupted, [first_token(example["answer"])], [first_token(wrong)])
        table, labels = patch_residual_by_position(model, batch, corrupted, metric)
        figures["patching"] = plots.patching_map(table, labels, f"Restoring the audio: residual patching ({label})")
    except ValueError:  # audio and silence give the same logit difference: nothing to restore
        pass
    figures["logit_lens"] = plots.logit_lens_plot(
        logit_lens(model, batch, [option_ids]), example["choices"], title=f"Logit lens ({label})"
    )
    no_hint = [i for i in test if i.get("hint", "none") == "none"][:16]
    ablation_batch = model.to_batch(
        [i["audio_path"] for i in no_hint], [render_prompt(i, profile.prompt) for i in no_hint]
    )
    scan = scan_heads(model, ablation_batch, [[first_token(c) for c in i["choices"]] for i in no_hint],
                      [i["choices"].index(i["answer"]) for i in no_hint], kind="zero", heads_per_pass=4)
    figures["ablation"] = plots.head_heatmap(
        scan.margin_change, "Zero-ablating each head: change of the answer margin", "Δ margin"
    )

    saved, static_problem = plots.save_figures(figures, out, formats, static_required)
    written = {name: [str(p) for p in paths] for name, paths in saved.items()}
    (out / "report.html").write_text(
        _report(result, format_table(result), list(figures), static=static_problem is None)
    )
    result.save(out / "results.json")
    return {"figures": written, "result": result, "static_problem": static_problem}


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
    series = {}
    for run, label in (
        ("baseline", "baseline"),
        ("steered", "steered (specialists)"),
        ("random_control", "random heads (seeded draw)"),
    ):
        table = result.test[run].get("hint") or {"all": result.test[run]["total"]}
        series[label] = (
            [v["accuracy"] for v in table.values()],
            [v["ci"][0] for v in table.values()],
            [v["ci"][1] for v in table.values()],
        )
        groups = list(table)
    figures["steering_results"] = plots.grouped_points(
        groups,
        series,
        f"Test accuracy by hint condition (steering beta {result.beta})",
        "hint condition",
        "accuracy (%)",
    )
    if result.control is not None:
        c = result.control
        matched = result.layer_matched_control
        figures["control_distribution"] = plots.control_distribution_plot(
            c.accuracies,
            c.specialists_accuracy,
            c.percentile,
            f"Specialists vs {len(c.draws)} random-head draws ({c.items} test items, beta {result.beta})",
            c.versus_median.n,
            matched=None if matched is None else matched.accuracies,
        )
    if "test" in result.validity_controls:
        figures["listening_check"] = plots.listening_check_plot(result.validity_controls["test"])
    return figures


def _report(result: "ExperimentResult", table: str, names: list[str], static: bool = True) -> str:
    settings = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in result.profile.to_json().items()
    )
    gallery = "".join(
        f'<figure>{_embed(name, static)}<figcaption>{html.escape(FIGURES[name])} '
        f'(<a href="{name}.html">interactive</a>)</figcaption></figure>' for name in names
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>lens_audio report</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:auto}td{padding:2px 8px}figure{margin:24px "
        "0}</style></head><body>"
        "<h1>lens_audio: are audio-language models listening?</h1><p>Model: "
        f"<code>{html.escape(result.model)}</code></p>"
        f"<h2>Results (test split)</h2><pre>{html.escape(table)}</pre><h2>Settings</h2><table>{settings}</table>"
        f"<h2>Figures</h2>{gallery}</body></html>"
    )


def _embed(name: str, static: bool) -> str:
    """The PNG when static export ran, else the interactive HTML figure in a frame."""
    if static:
        return f'<img src="{name}.png" width="760">'
    return f'<iframe src="{name}.html" width="780" height="540" style="border:0"></iframe>'
