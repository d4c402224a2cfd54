"""The `lens-audio` command line.

Subcommands (`lens-audio <command> --help` for the options):
  demo                 load a model (default: the shipped workshop model), ask about one clip with
                       no hint, a right hint and a wrong hint, cache every activation, check the
                       logits against transformers, and greedily decode the answers
  hooks                print the hook table, or with --model every hook of that model with its shape
  figures              run the experiment and write every figure and figures/report.html
  explore              write one item's interactive explorer (audio, spectrogram, attention, steering) as an HTML page
  experiment           the paper's experiment, all stages: specialist heads, beta sweep, steered test
  listen               baseline run of a split with every item's listening signal
  select-heads         correlate calibration listening signals with correctness; print the specialists
  sweep-beta           dev accuracy of adaptive steering for each beta
  evaluate             test: baseline, steered and random-head control
  noise-sweep          accuracy and the listening signal as white noise is added to the clips, by SNR
  workshop benchmark   write a synthetic MMAU-format benchmark, deterministic from a seed
  workshop train       train the workshop model on CPU and evaluate it
  workshop acceptance  the clip-chain model's acceptance checks on one split: patching, probe, steering, validity
  sae train            train sparse autoencoders at any hooks on a benchmark's activations (SAELens's format)
  sae workshop         train the SAEs shipped with the workshop model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from lens_audio.checks import OneLineParser, cli_float, cli_int, cli_seed
from lens_audio.files import write_atomically


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(
        prog="lens-audio", description="Interpretability workbench for Qwen2-Audio models."
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the traceback (also after the subcommand)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the hooked port end to end on one clip")
    demo.add_argument("--model", help="checkpoint folder or Hub id (default: the shipped workshop model)")
    demo.add_argument(
        "--audio", help="audio file to ask about (default: a bundled clip, asked with no, right and wrong hints)"
    )
    demo.add_argument("--question", default="What is the sound?")
    demo.add_argument("--json", dest="json_path", help="also write the summary as JSON to this file")
    hooks = sub.add_parser("hooks", help="list hook points")
    hooks.add_argument("--model", help="list every hook of this checkpoint with its shape on a short clip")
    figures = sub.add_parser("figures", help="run the experiment and write every figure and figures/report.html")
    figures.add_argument("--model", default="workshop")
    figures.add_argument(
        "--benchmark",
        help="MMAU-format JSON with calibration/dev/test splits (default: the bundled workshop benchmark)",
    )
    figures.add_argument("--out", default="figures")
    figures.add_argument("--runs", default="runs/figures", help="cached run files, reused unless --fresh")
    figures.add_argument("--fresh", action="store_true", help="start every cached run over instead of reusing it")
    figures.add_argument(
        "--formats",
        help="comma-separated figure formats (html, png, svg, pdf; svg and pdf are vector); default html,png, "
        "where PNGs "
        "are skipped with a warning if this machine cannot export them (naming png here makes that an error)",
    )
    explore = sub.add_parser("explore", help="write one item's interactive explorer as a self-contained HTML page")
    explore.add_argument("--item", required=True, help="the item's id in the benchmark")
    explore.add_argument("--model", default="workshop")
    explore.add_argument(
        "--benchmark", help="MMAU-format JSON holding the item (default: the bundled workshop benchmark)"
    )
    _add_allow_outside_argument(explore)
    explore.add_argument("--template", help="prompt template (default: the model's profile)")
    explore.add_argument(
        "--layers", type=cli_int(0), nargs="+", help="starting source layers of the steering direction (default: all)"
    )
    _add_placement_arguments(explore)
    explore.add_argument("--out", required=True, help="HTML file to write")
    stages = {
        "experiment": "the paper's experiment, all stages: specialist heads, beta sweep, steered test",
        "listen": "baseline run of a split with every item's listening signal",
        "select-heads": "correlate calibration listening signals with correctness; print the specialists",
        "sweep-beta": "dev accuracy of adaptive steering for each beta",
        "evaluate": "test: baseline, steered and random-head control",
        "noise-sweep": "accuracy and the specialists' listening signal as white noise is added to the clips",
    }
    for name, help_text in stages.items():
        _add_experiment_arguments(sub.add_parser(name, help=help_text), name)
    workshop = sub.add_parser("workshop", help="the workshop model and its synthetic benchmark")
    workshop_sub = workshop.add_subparsers(dest="workshop_command", required=True)
    recipes = (
        'clip-sets (the default "workshop" model: three clips per prompt), v1 ("workshop-v1": one clip per prompt) or '
        "chains (\"workshop-chains\": four clips, found by number or by a neighbour's content; resumable)"
    )
    bench = workshop_sub.add_parser("benchmark", help="write a synthetic benchmark folder")
    bench.add_argument("--out", required=True, help="folder to write (the JSON and audios/)")
    bench.add_argument("--recipe", choices=["clip-sets", "v1", "chains"], default="clip-sets", help=recipes)
    bench.add_argument("--seed", type=cli_seed(), default=0)
    bench.add_argument(
        "--clips", type=cli_int(1), default=180, help="v1 only: clips; each gives three items (hint conditions)"
    )
    bench.add_argument("--overwrite", action="store_true")
    train = workshop_sub.add_parser("train", help="train the workshop model (CPU) and evaluate it")
    train.add_argument(
        "--out", help="checkpoint folder to write (chains: the run folder, resumed if it holds a state; default "
        "the user's cache, ~/.cache/lens_audio/runs/chains)"
    )
    train.add_argument("--recipe", choices=["clip-sets", "v1", "chains"], default="clip-sets", help=recipes)
    train.add_argument("--seed", type=cli_seed(), default=0)
    train.add_argument("--steps-audio", type=cli_int(0), help="stage 1 steps (no hints)")
    train.add_argument("--steps-mixed", type=cli_int(0), help="stage 2 steps (hints)")
    train.add_argument("--steps-select", type=cli_int(0),
                       help="clip-sets only: stage 3 steps (hints, with the clip probes)")
    train.add_argument("--pool-clips", type=cli_int(1),
                       help="training clips synthesised up front (clip-sets: per class)")
    train.add_argument("--benchmark", help="workshop.json to evaluate on (default: the bundled one; 'none' to skip)")
    train.add_argument("--steps", type=cli_int(1),
                       help="chains only: steps in all (the monitor's rule may stop it earlier)")
    train.add_argument("--threads", type=cli_int(1),
                       help="chains only: torch threads (a resumed run needs the same count)")
    train.add_argument("--device", default="cpu", help="chains only: cpu or cuda")
    train.add_argument("--stop-after", type=cli_int(1),
                       help="chains only: leave (saving the state) after this many steps")
    train.add_argument(
        "--allow-inexact-resume", action="store_true",
        help="chains only: resume even when this torch build encodes the training clips differently",
    )
    accept = workshop_sub.add_parser(
        "acceptance", help="the clip-chain model's acceptance checks on one split: patching restore by layer, linear "
        "probe, single-layer steering, validity of the top heads")
    accept.add_argument("--model", required=True,
                        help="checkpoint folder (<run>/final, export_latest's output), or a training run's folder "
                        "(its latest state is checked)")
    accept.add_argument("--benchmark", help="MMAU-format JSON with the splits (default: the clip-chain benchmark)")
    accept.add_argument("--split", default="dev", choices=["calibration", "dev", "test"])
    accept.add_argument("--limit", type=cli_int(1),
                        help="check this many of the split's items: an even subset, stratified by hint, domain and "
                        "relation (default: all)")
    accept.add_argument("--betas", type=cli_float(), nargs="+", help="steering strengths (default 1 2 3)")
    accept.add_argument("--early-below", type=cli_int(1), default=8, help="early layers: below this (default 8)")
    accept.add_argument("--late-from", type=cli_int(1), default=10, help="late layers: from this on (default 10)")
    accept.add_argument("--batch-size", type=cli_int(1), default=16)
    accept.add_argument("--device", default="cpu")
    accept.add_argument("--json", dest="json_path", help="also write the result as JSON here")
    from lens_audio.cli.sae import add_sae_parser, run_sae

    add_sae_parser(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = parser.parse_args([a for a in argv if a != "--debug"])
    try:
        if args.command == "sae":
            return run_sae(args)
        if args.command == "workshop":
            return {"benchmark": run_workshop_benchmark, "train": run_workshop_train,
                    "acceptance": run_workshop_acceptance}[args.workshop_command](args)
        if args.command in ("experiment", "listen", "select-heads", "sweep-beta", "evaluate", "noise-sweep"):
            return run_stage(args)
        return {"demo": run_demo, "hooks": run_hooks, "figures": run_figures, "explore": run_explore}[args.command](
            args
        )
    except (Exception, KeyboardInterrupt) as exc:  # one line on stderr and a non-zero exit; --debug re-raises
        if debug:
            raise
        print(f"lens-audio {args.command}: {_one_line(exc)}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1


def _one_line(exc: BaseException) -> str:
    """An exception as one line; errors that do not explain themselves are marked as such."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (runs with an --out folder resume where they stopped)."
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, (ValueError, OSError, RuntimeError)):
        return f"error: {text}"
    return f"unexpected {type(exc).__name__}: {text}; rerun with --debug for the traceback and please report it."


def run_figures(args: argparse.Namespace) -> int:
    from lens_audio.figures import make_figures

    started = time.perf_counter()
    formats = tuple(f.strip() for f in (args.formats or "html,png").split(",") if f.strip())
    made = make_figures(args.model, args.benchmark, args.out, args.runs, args.fresh, formats=formats,
                        static_required=args.formats is not None)
    for name, paths in made["figures"].items():
        print(f"{name:18s} {' '.join(paths)}")
    print(f"report: {Path(args.out) / 'report.html'} ({time.perf_counter() - started:.0f} s)")
    if made["static_problem"]:
        print(f"warning: {made['static_problem']}; HTML figures and the report were written.", file=sys.stderr)
    return 0


def run_explore(args: argparse.Namespace) -> int:
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.explorer import explore_page
    from lens_audio.organisms import benchmark_for

    items = {item["id"]: item for item in load_mmau(args.benchmark or benchmark_for(args.model),
                                                    allow_outside=args.allow_outside_audio)}
    if args.item not in items:
        shown = ", ".join(list(items)[:5])
        raise ValueError(
            f"no item {args.item!r} in the benchmark ({len(items)} items, e.g. {shown}); pass --item with one of its "
            "ids."
        )
    model = HookedAudioLM.from_pretrained(args.model, dtype=args.dtype, device=args.device, **placement_args(args))
    path = explore_page(model, items[args.item], args.out, prompt=args.template, layers=args.layers)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser, no server needed")
    return 0


def _add_experiment_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    parser.add_argument("--model", default="workshop", help="checkpoint folder or Hub id (default: workshop)")
    parser.add_argument(
        "--benchmark",
        help="MMAU-format JSON with calibration/dev/test splits (default: the bundled workshop benchmark)",
    )
    _add_allow_outside_argument(parser)
    parser.add_argument(
        "--template",
        help="prompt template (instruct, r1-aqa, letters; default: the model's profile, see evaluation.profile)",
    )
    parser.add_argument(
        "--mode",
        choices=["generate", "choice"],
        help="default: the model's profile (choice for workshop models, else generate)",
    )
    parser.add_argument("--k-heads", type=cli_int(1), help="specialist heads (default 4)")
    parser.add_argument(
        "--betas", type=cli_float(), nargs="+", help="steering strengths swept on dev (default 0.5 1 1.5 2 3 4)"
    )
    parser.add_argument("--seed", type=cli_seed())
    parser.add_argument("--batch-size", type=cli_int(1))
    parser.add_argument("--draws", type=cli_int(1), help="random-head draws for the control distribution (default 200)")
    parser.add_argument(
        "--layer-convention",
        choices=["resid_post", "hf_hidden_states"],
        help="layer L = output of block L (default) or HF hidden_states[L]",
    )
    parser.add_argument(
        "--steering-source",
        choices=["residual", "head_outputs"],
        help="steer from the layers' residual stream (default) or the heads' own outputs",
    )
    parser.add_argument("--gate", choices=["signal"], help="scale beta per item by how little the specialists listen")
    parser.add_argument(
        "--selection-rule",
        choices=["r", "within_stratum_r", "margin_r", "causal"],
        help="how calibration ranks heads: r with correctness (default, the paper), r within task x sub-category, "
        "r with the answer margin, or the causal effect of the head's silence-run output",
    )
    _add_placement_arguments(parser)
    parser.add_argument("--out", default="runs/experiment", help="folder of resumable run files shared by all stages")
    parser.add_argument(
        "--fresh", action="store_true",
        help="start every run file this stage uses over (a resume under other settings is refused otherwise)",
    )
    parser.add_argument("--json", dest="json_path", help="also write the stage's result as JSON here")
    if stage == "listen":
        parser.add_argument("--split", default="calibration", choices=["calibration", "dev", "test"])
    if stage == "noise-sweep":
        parser.add_argument("--snrs", type=float, nargs="+", default=[20.0, 10.0, 0.0, -10.0],
                            help="SNRs in dB of the white noise added to every clip (default 20 10 0 -10)")
        parser.add_argument("--split", default="test", choices=["calibration", "dev", "test"])
        parser.add_argument("--figure", help="write the sweep's figure here (.html; default <out>/noise_sweep.html)")
    if stage == "evaluate":
        parser.add_argument(
            "--beta", type=cli_float(),
            help="steering strength (default: the sweep's best, running the sweep if needed)",
        )


def _add_allow_outside_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-outside-audio", action="store_true",
                        help="read audio_id paths that lead outside the benchmark file's folder (refused by default)")


def _add_placement_arguments(parser: argparse.ArgumentParser) -> None:
    """--dtype, --device and accelerate's --device-map, --max-memory, --offload-folder (see `placement_args`)."""
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--device-map",
        help="spread a large model over devices with accelerate: 'auto' (GPUs, then CPU, then disk) or a JSON dict "
        "of module -> device, e.g. '{\"audio\": 0, \"embed\": 0, \"blocks.0\": 0, ..., \"unembed\": \"cpu\"}'; "
        "--device is then ignored",
    )
    parser.add_argument("--max-memory", help="with --device-map auto: JSON caps per device, e.g. '{\"0\": \"70GiB\"}'")
    parser.add_argument("--offload-folder", help="folder for the weights of modules the device map puts on 'disk'")


def placement_args(args: argparse.Namespace) -> dict:
    """`from_pretrained` keywords from --device-map, --max-memory and --offload-folder (none without --device-map)."""
    if args.device_map is None:
        return {}
    device_map = args.device_map
    try:
        if device_map != "auto":
            device_map = json.loads(device_map)
        max_memory = json.loads(args.max_memory) if args.max_memory else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--device-map / --max-memory must be 'auto' or JSON ({exc}).") from exc
    if max_memory is not None:  # JSON keys are strings; accelerate wants GPU indices as ints
        max_memory = {int(k) if str(k).isdigit() else k: v for k, v in max_memory.items()}
    return {"device_map": device_map, "max_memory": max_memory, "offload_folder": args.offload_folder}


def run_stage(args: argparse.Namespace) -> int:
    """One stage of the experiment (or all); stages share --out, so each reuses what the others wrote.

    Under `accelerate launch` or `torchrun` every process runs the stage with its share of each run's items
    (`lens_audio.benchmark.parallel`), on its own GPU; only rank 0 prints and writes --json.
    """
    import contextlib
    import os

    from lens_audio.benchmark.parallel import process_state

    state = process_state()
    if state is None:
        return _run_stage(args)
    if args.device.startswith("cuda") and args.device_map is None:
        args.device = str(state.device)  # one GPU per process
    if state.is_main_process:
        return _run_stage(args)
    args.json_path = None
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        return _run_stage(args)


def _run_stage(args: argparse.Namespace) -> int:
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.organisms import benchmark_for
    from lens_audio.paper.experiment import Experiment
    from lens_audio.paper.profile import profile_for
    from lens_audio.paper.results import head_label
    from lens_audio.paper.text import format_table

    profile = profile_for(args.model).replace(
        prompt=args.template,
        mode=args.mode,
        k_heads=args.k_heads,
        betas=args.betas and tuple(args.betas),
        seed=args.seed,
        batch_size=args.batch_size,
        n_random_draws=args.draws,
        layer_convention=args.layer_convention,
        steering_source=args.steering_source,
        gate=args.gate,
        selection_rule=args.selection_rule,
    )
    model = HookedAudioLM.from_pretrained(args.model, dtype=args.dtype, device=args.device, **placement_args(args))
    benchmark = args.benchmark or benchmark_for(args.model)
    items = load_mmau(benchmark, allow_outside=args.allow_outside_audio)
    experiment = Experiment(model, items, profile, args.out, benchmark=benchmark, fresh=args.fresh)
    if args.command == "experiment":
        full = experiment.run_all()
        print(format_table(full))
        result = full.to_json()
    elif args.command == "listen":
        run = experiment.listen(args.split)
        mass = run.listening.mean(0)
        result = {"split": args.split, "accuracy": float(run.correct.mean()), "mean_audio_mass": mass.tolist()}
        print(
            f"{args.split}: {len(run)} items, accuracy {100 * result['accuracy']:.1f}%; mean audio attention mass "
            "(layer x head):"
        )
        for layer, row in enumerate(mass):
            print(f"  L{layer}: " + " ".join(f"{v:.3f}" for v in row))
    elif args.command == "select-heads":
        selection = experiment.select_heads()
        result = selection.to_json()
        for head in selection.specialists:
            d = selection.describe(head)
            print(f"{head_label(head)}: r={d['r']:.3f} p={d['p']:.3g} CI=[{d['ci'][0]:.3f}, {d['ci'][1]:.3f}] "
                  f"Fisher=[{d['fisher_ci'][0]:.3f}, {d['fisher_ci'][1]:.3f}] max-|r| adjusted p={d['p_adjusted']:.3f}")
        print(f"max |r| permutation p = {selection.null.p_max:.3f}; significant (family-wise 0.05): "
              + (", ".join(map(head_label, selection.null.significant())) or "none"))
        print("random control:", ", ".join(map(head_label, selection.control)))
    elif args.command == "sweep-beta":
        sweep = experiment.sweep_beta()
        result = sweep.to_json()
        print(
            f"dev baseline {sweep.baseline['accuracy']}%; "
            + ", ".join(f"beta {b}: {v['accuracy']}%" for b, v in sweep.steered_by_beta.items())
        )
        print(f"best beta: {sweep.best_beta}")
    elif args.command == "noise-sweep":
        from lens_audio.figures import write_noise_sweep

        figure = Path(args.figure) if args.figure else Path(args.out) / "noise_sweep.html"
        if figure.suffix != ".html":  # before the sweep, not after it
            raise ValueError(f"--figure {figure} must end in .html.")
        sweep = experiment.noise_sweep(args.snrs, args.split)
        result = sweep.to_json()
        print("\n".join(sweep.describe()))
        write_noise_sweep(sweep, figure)
        print(f"wrote {figure}")
    else:
        beta = args.beta if args.beta is not None else experiment.sweep_beta().best_beta
        runs, paired = experiment.evaluate(beta)
        result = {
            "beta": beta,
            "test": {name: experiment.tables(run) for name, run in runs.items()},
            "paired": {k: v.to_json() for k, v in paired.items()},
        }
        for name, run in runs.items():
            print(f"{name:16s} {100 * run.correct.mean():6.2f}%")
        print("\n".join(f"{name}: {v.describe()}" for name, v in paired.items()))
    if args.json_path:
        write_atomically(args.json_path, json.dumps(result, indent=1))
    return 0


def run_workshop_benchmark(args: argparse.Namespace) -> int:
    from lens_audio.organisms.benchmark_writer import SETS_JSON_NAME, write_benchmark, write_set_benchmark

    if args.recipe == "chains":
        from lens_audio.organisms.benchmark_writer import CHAINS_JSON_NAME, write_chain_benchmark

        folder = write_chain_benchmark(args.out, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote {folder / CHAINS_JSON_NAME}")
    elif args.recipe == "v1":
        folder = write_benchmark(args.out, seed=args.seed, n_clips=args.clips, overwrite=args.overwrite)
        print(f"wrote {3 * args.clips} items to {folder / 'workshop.json'}")
    else:
        folder = write_set_benchmark(args.out, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote {folder / SETS_JSON_NAME}")
    return 0


def run_workshop_train(args: argparse.Namespace) -> int:
    import dataclasses

    from lens_audio.organisms import BENCHMARK_SETS, BENCHMARK_V1
    from lens_audio.organisms.workshop.recipe import SetsTrainSettings, train_sets
    from lens_audio.organisms.workshop_v1.recipe import TrainSettings, train

    if args.recipe == "chains":
        return run_chains_train(args)
    if args.out is None:
        raise SystemExit(f"--out is required for --recipe {args.recipe}.")
    v1 = args.recipe == "v1"
    pool = "pool_clips" if v1 else "pool_clips_per_class"
    overrides = {"steps_audio": args.steps_audio, "steps_mixed": args.steps_mixed, pool: args.pool_clips}
    if not v1:
        overrides["steps_select"] = args.steps_select
    defaults = TrainSettings(seed=args.seed) if v1 else SetsTrainSettings(seed=args.seed)
    settings = dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})
    benchmark = None if args.benchmark == "none" else (args.benchmark or (BENCHMARK_V1 if v1 else BENCHMARK_SETS))
    metrics = (train if v1 else train_sets)(args.out, settings, eval_benchmark=benchmark)
    print(json.dumps({k: v for k, v in metrics.items() if k != "loss_history"}, indent=1))
    return 0


def run_chains_train(args: argparse.Namespace) -> int:
    import dataclasses

    from lens_audio.organisms.benchmark_writer import chain_benchmark
    from lens_audio.organisms.workshop_chains.recipe import ChainsTrainSettings, train_chains
    from lens_audio.training.run_folder import default_run_folder

    overrides = {"steps_audio": args.steps_audio, "steps": args.steps, "pool_clips_per_class": args.pool_clips,
                 "threads": args.threads}
    settings = dataclasses.replace(ChainsTrainSettings(seed=args.seed),
                                   **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out) if args.out else default_run_folder("chains")
    benchmark = None if args.benchmark == "none" else (args.benchmark or chain_benchmark())
    metrics = train_chains(out, settings, stop_after=args.stop_after, device=args.device,
                           exact=not args.allow_inexact_resume, eval_benchmark=benchmark)
    if metrics is None:
        print(f"stopped before the end; resume with the same command (progress: {out / 'progress.jsonl'})")
    else:
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss_history", "monitor")}, indent=1))
    return 0


def run_workshop_acceptance(args: argparse.Namespace) -> int:
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.model.registry import named_checkpoint
    from lens_audio.organisms.benchmark_writer import chain_benchmark
    from lens_audio.organisms.workshop_chains.acceptance import acceptance_checks

    benchmark = Path(args.benchmark) if args.benchmark else chain_benchmark()
    items = load_mmau(benchmark)
    label = str(args.model)
    if not (Path(args.model) / "config.json").is_file() and any(Path(args.model).glob("state-*")):
        import tempfile  # a training run's folder: check its latest state, exported as a checkpoint

        from lens_audio.organisms.workshop_chains.recipe import export_latest

        args.model = export_latest(args.model, Path(tempfile.mkdtemp(prefix="lens_audio_chains_")) / "latest")
    metrics = (named_checkpoint(str(args.model)) or Path(args.model)) / "metrics.json"
    if metrics.is_file():  # a training run's checkpoint says which step it is from
        meta = json.loads(metrics.read_text())
        step = meta.get("step", meta.get("steps_trained"))
        label += f" (step {step}{', partial' if meta.get('partial') else ''})" if step is not None else ""
    model = HookedAudioLM.from_pretrained(args.model, device=args.device)
    kwargs = {"betas": tuple(args.betas)} if args.betas else {}
    result = acceptance_checks(model, items, args.split, limit=args.limit, early_below=args.early_below,
                               late_from=args.late_from, batch_size=args.batch_size, model_label=label, **kwargs)
    print(result.format())
    if args.json_path:
        write_atomically(args.json_path, json.dumps(result.to_json(), indent=1))
    return 0


def run_hooks(args: argparse.Namespace) -> int:
    from lens_audio.model.hook_table import markdown_table

    if not args.model:
        print(markdown_table())
        return 0
    import torch

    model = _load(args.model)
    batch = model.to_batch(_chirp(1.0), "What is the sound?", sampling_rate=16000)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch, names_filter=lambda name: True)
    for name, value in cache.items():
        print(f"{name:50s} {list(value.shape)}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from lens_audio.model.loading import resolve_checkpoint

    started = time.perf_counter()
    model = _load(args.model)
    if args.audio:
        audio, questions, answer = [args.audio], [args.question], None
    else:  # one bundled test clip, asked with no hint, a right hint and a wrong hint
        from lens_audio.benchmark import load_mmau
        from lens_audio.organisms import BENCHMARK
        from lens_audio.organisms.task import format_question

        items = load_mmau(BENCHMARK, split="test")
        clip = [i for i in items if i["audio_id"] == items[0]["audio_id"]]
        audio, questions, answer = (
            [i["audio_path"] for i in clip],
            [format_question(i) for i in clip],
            clip[0]["answer"],
        )
    batch = model.to_batch(audio, questions)
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch)
    tokens = model.generate(batch, max_new_tokens=8, do_sample=False)
    prompt_length = batch.input_ids.shape[1]
    summary = {
        "model": model.cfg.model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "decoder": f"{model.cfg.n_layers} layers, {model.cfg.n_heads} heads ({model.cfg.n_key_value_heads} "
        "key/value), d_model {model.cfg.d_model}",
        "audio_encoder": f"{model.cfg.audio.n_layers} layers, {model.cfg.audio.n_ctx} positions",
        "audio_tokens_per_example": [sum(e - s for s, e in spans) for spans in batch.audio_spans],
        "hook_points": len(model.hook_dict),
        "cache_megabytes": round(sum(v.numel() * v.element_size() for v in cache.values()) / 2**20, 2),
        "right_answer": answer,
        "answers": [
            {
                "question": q,
                "answer": model.tokenizer.decode(tokens[row, prompt_length:], skip_special_tokens=True).strip(),
            }
            for row, q in enumerate(questions)
        ],
    }
    folder = resolve_checkpoint(args.model or "workshop")
    if folder.is_dir():
        reference = _transformers_logits(folder, batch)
        valid = batch.attention_mask.bool()
        summary["max_abs_logit_diff_vs_transformers"] = float((logits - reference)[valid].abs().max())
        summary["max_abs_logit"] = float(reference[valid].abs().max())
    summary["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary, indent=1))
    if args.json_path:
        write_atomically(args.json_path, json.dumps(summary, indent=2))
    return 0


def _load(name: str | None):
    from lens_audio import HookedAudioLM

    return HookedAudioLM.from_pretrained(name or "workshop")


def _transformers_logits(folder: Path, batch):
    """transformers' logits for the same checkpoint folder and batch (padding-aware positions)."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from lens_audio.model.hooked_audio_lm import position_ids_from_mask

    hf = Qwen2AudioForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        return hf(**batch.model_inputs(), position_ids=position_ids_from_mask(batch.attention_mask)).logits


def _chirp(seconds: float):
    import numpy as np

    t = np.arange(int(seconds * 16000)) / 16000
    return (0.5 * np.sin(2 * np.pi * (300 + 900 * t / seconds) * t)).astype(np.float32)


if __name__ == "__main__":
    sys.exit(main())
