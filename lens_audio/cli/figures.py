"""`lens-audio figures` (run the experiment, write every figure and figures/report.html) and `lens-audio explore`
(one item's interactive explorer as a self-contained HTML page)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lens_audio.checks import add_allow_outside_argument, cli_int, output_file, output_folder
from lens_audio.cli.experiment import (
    add_placement_arguments,
    add_profile_arguments,
    load_items,
    placement_args,
    profile_from_args,
)


def add_parsers(sub: argparse._SubParsersAction) -> dict:
    """Add `figures` and `explore` to `sub`; return command -> runner."""
    figures = sub.add_parser(
        "figures", help="run the experiment and write every figure and figures/report.html",
        description="Run the experiment (or resume it from --runs) and write every figure and report.html. It takes "
        "the experiment's flags; where --runs holds an experiment's settings (experiment.json, written by "
        "`lens-audio experiment` and Experiment.run_all) and its split.json, they are the defaults, so the figures "
        "follow that experiment.",
    )
    add_profile_arguments(figures, model_default=None)
    figures.add_argument("--out", type=output_folder,
                         help="folder to write (default: figures, or with --from the saved result's folder)")
    figures.add_argument(
        "--from", dest="source", metavar="RESULT",
        help="redraw every figure and the report from a saved results.json (or the folder holding it and "
        "figure_inputs.json): no model is loaded and nothing is run",
    )
    figures.add_argument("--runs", default="runs/figures", type=output_folder,
                         help="the experiment's run folder (e.g. an experiment's --out): reused unless --fresh, its "
                         "recorded settings followed")
    figures.add_argument("--fresh", action="store_true", help="start every cached run over instead of reusing it")
    figures.add_argument(
        "--formats",
        help="comma-separated figure formats (html, png, svg, pdf; svg and pdf are vector); default html,png, "
        "where PNGs "
        "are skipped with a warning if this machine cannot export them (naming png here makes that an error)",
    )
    figures.set_defaults(run_defaults=vars(figures.parse_args([])))  # to name the flags --from would ignore
    explore = sub.add_parser("explore", help="write one item's interactive explorer as a self-contained HTML page")
    explore.add_argument("--item", required=True, help="the item's id in the benchmark")
    explore.add_argument("--model", default="workshop")
    explore.add_argument(
        "--benchmark", help="MMAU-format JSON holding the item (default: the bundled workshop benchmark)"
    )
    add_allow_outside_argument(explore)
    explore.add_argument("--template", help="prompt template (default: the model's profile)")
    explore.add_argument(
        "--layers", type=cli_int(0), nargs="+", help="starting source layers of the steering direction (default: all)"
    )
    add_placement_arguments(explore)
    explore.add_argument("--out", required=True, type=output_file, help="HTML file to write")
    return {"figures": run_figures, "explore": run_explore}


def run_figures(args: argparse.Namespace) -> int:
    from lens_audio.figures import figures_from, make_figures

    started = time.perf_counter()
    formats = tuple(f.strip() for f in (args.formats or "html,png").split(",") if f.strip())
    if args.source is not None:
        kept = {"source", "out", "formats", "command", "debug", "run_defaults"}
        ignored = ["--" + dest.replace("_", "-") for dest, value in vars(args).items()
                   if dest not in kept and value != args.run_defaults.get(dest)]
        if ignored:
            raise ValueError(f"--from redraws a saved result without running anything; drop {' and '.join(ignored)} "
                             "(they apply only when the experiment runs), or drop --from.")
        made = figures_from(args.source, args.out, formats, static_required=args.formats is not None)
    else:
        settings = experiment_settings(args)  # fills in args.model and args.benchmark
        made = make_figures(args.model, args.benchmark, args.out or "figures", args.runs, args.fresh,
                            formats=formats, static_required=args.formats is not None, **settings)
    for name, paths in made["figures"].items():
        print(f"{name:18s} {' '.join(paths)}")
    if made.get("skipped"):
        print(f"not drawn (the saved result has no figure_inputs.json): {', '.join(made['skipped'])}",
              file=sys.stderr)
    print(f"report: {Path(made['out']) / 'report.html'} ({time.perf_counter() - started:.0f} s)")
    if made["static_problem"]:
        print(f"warning: {made['static_problem']}; HTML figures and the report were written.", file=sys.stderr)
    return 0


def experiment_settings(args: argparse.Namespace) -> dict:
    """`make_figures` keywords from the flags, over the settings the --runs folder records (`paper.profile.
    recorded_settings`) where it holds an experiment of the same model: the profile, split, placement. Fills in
    args.model and args.benchmark."""
    from lens_audio.paper.profile import SETTINGS_FILE, profile_for, recorded_settings

    recorded = recorded_settings(args.runs)
    if recorded is not None and args.model in (None, recorded["model"]):
        args.model, args.benchmark = recorded["model"], args.benchmark or recorded["benchmark"]
        base = recorded["profile"]
        print(f"figures: following the experiment in {Path(args.runs) / SETTINGS_FILE} (model {args.model}, "
              f"template {base.prompt_name}, mode {base.mode}); flags given override it", file=sys.stderr)
    else:
        args.model = args.model or "workshop"
        base = profile_for(args.model)
    profile = profile_from_args(args, base)
    args.benchmark, _, split = load_items(args, profile, args.runs)
    load = {"dtype": args.dtype, "device": args.device, **placement_args(args)}
    return {"profile": profile, "split": split, "load": load, "allow_outside": args.allow_outside_audio}


def run_explore(args: argparse.Namespace) -> int:
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.benchmark.items import id_key
    from lens_audio.explorer import explore_page
    from lens_audio.organisms import benchmark_for

    items = {id_key(item["id"]): item for item in load_mmau(args.benchmark or benchmark_for(args.model),
                                                            allow_outside=args.allow_outside_audio)}
    if args.item not in items:  # ids compared as text: `--item 2` finds the id 2 and the id "2"
        shown = ", ".join(list(items)[:5])
        raise ValueError(
            f"no item {args.item!r} in the benchmark ({len(items)} items, e.g. {shown}); pass --item with one of its "
            "ids."
        )
    model = HookedAudioLM.from_pretrained(args.model, dtype=args.dtype, device=args.device, **placement_args(args))
    path = explore_page(model, items[args.item], args.out, prompt=args.template, layers=args.layers)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")
    return 0
