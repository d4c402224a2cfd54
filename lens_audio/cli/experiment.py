"""The paper's experiment on the command line: its stages (`experiment`, `listen`, `select-heads`, `sweep-beta`,
`evaluate`, `noise-sweep`), which share one --out folder of resumable run files, and `locate` (where the steering
effect lives, `lens_audio.paper.locate`), with the arguments they share: the model's placement (--dtype, --device,
--device-map, ...) and --allow-outside-audio, which `figures` and `explore` use too.

The experiment's settings come from the model's registered profile (`lens_audio.paper.profile.profile_for`: for
`--model workshop-chains`, the organisms' prompt and choice mode); a flag given overrides its field, and a model
with no registered profile runs with the default one, said in one line on stderr (`lens-audio: note: ...`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lens_audio.checks import add_allow_outside_argument, cli_float, cli_int, cli_seed, output_file, output_folder
from lens_audio.cli.split import add_split_arguments, check_split_name, split_from_args, split_profile_changes
from lens_audio.files import write_atomically
from lens_audio.paper.rivals import CONTROL_DRAWS, MASK_STEPS

LOCATE_HELP = ("where the steering effect lives: direction layers x injection sites, and the specialists' own "
               "outputs, on dev")


def add_parsers(sub: argparse._SubParsersAction) -> dict:
    """Add the experiment's stages and `locate` to `sub`; return command -> runner."""
    stages = {
        "experiment": "the paper's experiment, all stages: specialist heads, beta sweep, steered test",
        "listen": "baseline run of a split with every item's listening signal",
        "select-heads": "correlate calibration listening signals with correctness; print the specialists",
        "sweep-beta": "dev accuracy of adaptive steering for each beta",
        "evaluate": "test: baseline, steered and random-head control",
        "noise-sweep": "accuracy and the specialists' listening signal as white noise is added to the clips",
        "rivals": "adaptive steering against audio-contrastive correction, back-patching, attention scaling and a "
                  "trained head mask: each chosen on dev, read once on test, paired",
    }
    for name, help_text in stages.items():
        _add_experiment_arguments(sub.add_parser(name, help=help_text), name)
    locate = sub.add_parser("locate", help=LOCATE_HELP)
    locate.add_argument("--model", default="workshop", help="checkpoint folder or Hub id (default: workshop)")
    locate.add_argument(
        "--benchmark", help="MMAU-format JSON with calibration/dev splits (default: the model's bundled benchmark)"
    )
    add_allow_outside_argument(locate)
    add_split_arguments(locate)
    add_placement_arguments(locate)
    locate.add_argument("--out", default="runs/experiment", type=output_folder,
                        help="the experiment's run folder: its calibration run is reused (or run); writes locate.json")
    locate.add_argument("--betas", type=cli_float(), nargs="+", default=[1.0, 2.0, 4.0],
                        help="steering strengths of the sweeps (default 1 2 4; the head-output sweeps add 8)")
    return {**{name: run_stage for name in stages}, "locate": run_locate}


def _add_experiment_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    add_profile_arguments(parser)
    parser.add_argument("--out", default="runs/experiment", type=output_folder,
                        help="folder of resumable run files shared by all stages")
    parser.add_argument(
        "--fresh", action="store_true",
        help="start every run file this stage uses over (a resume under other settings is refused otherwise)",
    )
    parser.add_argument("--json", dest="json_path", type=output_file, help="also write the stage's result as JSON here")
    if stage == "experiment":
        parser.add_argument(
            "--budget", type=cli_int(1), metavar="ITEM_PASSES",
            help="refuse, after head selection and before the costly stages, a plan of more item passes than this "
                 "(the plan is printed either way; lens_audio.paper.cost)",
        )
    if stage == "listen":
        parser.add_argument("--split", default="calibration",
                            help="calibration, dev, test, or a split value of the benchmark (e.g. test-mini)")
    if stage == "noise-sweep":
        parser.add_argument("--snrs", type=cli_float(), nargs="+", default=[20.0, 10.0, 0.0, -10.0],
                            help="SNRs in dB of the white noise added to every clip (default 20 10 0 -10)")
        parser.add_argument("--split", default="test",
                            help="calibration, dev, test, or a split value of the benchmark (e.g. test-mini)")
        parser.add_argument("--figure", type=output_file,
                            help="write the sweep's figure here (.html; default <out>/noise_sweep.html)")
    if stage == "rivals":
        parser.add_argument(
            "--mask-steps", type=cli_int(1), nargs="+", default=list(MASK_STEPS),
            help="training lengths of the head mask compared on dev (default "
                 f"{' '.join(map(str, MASK_STEPS))}; it trains once, to the longest)",
        )
        parser.add_argument(
            "--control-draws", type=cli_int(1), default=CONTROL_DRAWS,
            help=f"draws of random heads, the control distribution of attention scaling and of the head mask (default "
                 f"{CONTROL_DRAWS}; one test run each)",
        )
    if stage == "evaluate":
        parser.add_argument(
            "--beta", type=cli_float(),
            help="steering strength (default: the sweep's best, running the sweep if needed)",
        )


def add_profile_arguments(parser: argparse.ArgumentParser, model_default: str | None = "workshop") -> None:
    """The experiment's settings as flags, for its stages and `figures` alike (one place): the model, benchmark and
    placement, every profile field a flag sets (`profile_from_args`), and the split (`cli.split`)."""
    parser.add_argument("--model", default=model_default, help="checkpoint folder or Hub id (default: workshop)")
    parser.add_argument(
        "--benchmark",
        help="MMAU-format JSON (default: the model's bundled benchmark); without calibration/dev/test items it gets "
        "a seeded split, see --split-sizes",
    )
    add_allow_outside_argument(parser)
    parser.add_argument(
        "--template",
        help="prompt template (instruct, r1-aqa, letters; default: the model's profile, see paper.profile)",
    )
    parser.add_argument(
        "--mode",
        choices=["generate", "choice"],
        help="default: the model's profile (choice for workshop models, else generate)",
    )
    parser.add_argument(
        "--choice-scoring", choices=["mean", "sum", "first_token"],
        help="choice mode: rank options by mean log-probability per token (default), summed log-likelihood "
        "(favours short options) or the first token's only",
    )
    parser.add_argument(
        "--answer-embedder", metavar="MODEL",
        help="generate mode: match each answer to the option whose embedding is nearest, with this embedding model "
             "(Hub id or folder, loaded without remote code; MMAU-Pro's closed-ended rule), instead of MMAU's string "
             "match",
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
    parser.add_argument(
        "--strata", nargs="+", metavar="FIELD",
        help="item fields the validity controls also stratify by, beside task and sub-category (default: "
        "hinted_choice, the hinted class)",
    )
    add_split_arguments(parser)
    add_placement_arguments(parser)


PROFILE_FLAGS = {  # profile field -> flag's dest (`profile_from_args`)
    "prompt": "template", "mode": "mode", "choice_scoring": "choice_scoring",
    "answer_embedder": "answer_embedder", "k_heads": "k_heads", "betas": "betas",
    "seed": "seed", "batch_size": "batch_size", "n_random_draws": "draws", "layer_convention": "layer_convention",
    "steering_source": "steering_source", "gate": "gate", "selection_rule": "selection_rule",
    "validity_strata": "strata",
}


def profile_from_args(args: argparse.Namespace, base):
    """`base` (an `ExperimentProfile`) with the fields the flags set; a flag left out keeps `base`'s value."""
    changes = {name: getattr(args, dest, None) for name, dest in PROFILE_FLAGS.items()}
    changes.update(split_profile_changes(args))
    return base.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})


def load_items(args: argparse.Namespace, profile, folder) -> tuple[str, list, object]:
    """The benchmark (--benchmark, else the model's), its items and the split the flags name (`cli.split`); a
    `--split` no stage or split value names is refused here, before the model loads."""
    from lens_audio.benchmark import load_mmau
    from lens_audio.organisms import benchmark_for

    benchmark = args.benchmark or benchmark_for(args.model)
    items = load_mmau(benchmark, allow_outside=args.allow_outside_audio)
    split = split_from_args(args, items, profile, folder)
    if getattr(args, "split", None) is not None:
        check_split_name(args.split, items)
    return benchmark, items, split


def add_placement_arguments(parser: argparse.ArgumentParser) -> None:
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
    from lens_audio.paper.experiment import Experiment
    from lens_audio.paper.profile import profile_for
    from lens_audio.paper.results import head_label
    from lens_audio.paper.text import format_table

    profile = profile_from_args(args, profile_for(args.model))
    benchmark, items, split = load_items(args, profile, args.out)  # before the model: a wrong --split costs nothing
    model = HookedAudioLM.from_pretrained(args.model, dtype=args.dtype, device=args.device, **placement_args(args))
    experiment = Experiment(model, items, profile, args.out, benchmark=benchmark, fresh=args.fresh, split=split)
    if args.command == "experiment":
        from lens_audio.paper.cost import cost_plan

        plan = cost_plan(experiment)  # after calibration (the draws exclude the specialists), before the rest
        print(plan.describe(), file=sys.stderr)
        plan.check(args.budget)
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
    elif args.command == "rivals":
        from lens_audio.figures import write_rivals

        comparison = experiment.rivals(mask_steps=args.mask_steps, control_draws=args.control_draws)
        result = comparison.to_json()
        print(comparison.describe())
        print(f"wrote {write_rivals(comparison, Path(args.out) / 'rivals.html')}")
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


def run_locate(args: argparse.Namespace) -> int:
    """`lens-audio locate`: the sweeps of `lens_audio.paper.locate` on the experiment's dev focus items, with the
    specialists of its calibration run (reused from --out, or run), written to <out>/locate.json and printed."""
    from lens_audio import HookedAudioLM
    from lens_audio.paper.experiment import Experiment
    from lens_audio.paper.locate import write_locate
    from lens_audio.paper.profile import profile_for

    profile = profile_for(args.model).replace(**split_profile_changes(args))
    benchmark, items, split = load_items(args, profile, args.out)  # the experiment's split, from its folder
    model = HookedAudioLM.from_pretrained(args.model, dtype=args.dtype, device=args.device, **placement_args(args))
    result = write_locate(Experiment(model, items, profile, args.out, benchmark=benchmark, split=split), args.betas)
    print(json.dumps(result, indent=1))
    return 0
