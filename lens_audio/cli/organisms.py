"""`lens-audio workshop benchmark|train|acceptance`: the shipped model organisms (`lens_audio.organisms`): write a
synthetic benchmark, train an organism with its recipe, and run the clip-chain model's acceptance checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lens_audio.checks import cli_float, cli_int, cli_seed, output_file, output_folder
from lens_audio.files import write_atomically


def add_parsers(sub: argparse._SubParsersAction) -> dict:
    """Add the `workshop` group to `sub`; return command -> runner."""
    workshop = sub.add_parser("workshop", help="the workshop model and its synthetic benchmark")
    workshop_sub = workshop.add_subparsers(dest="workshop_command", required=True)
    recipes = (
        'clip-sets (the default "workshop" model: three clips per prompt), v1 ("workshop-v1": one clip per prompt) or '
        "chains (\"workshop-chains\": four clips, found by number or by a neighbour's content; resumable)"
    )
    bench = workshop_sub.add_parser("benchmark", help="write a synthetic benchmark folder")
    bench.add_argument("--out", required=True, type=output_folder, help="folder to write (the JSON and audios/)")
    bench.add_argument("--recipe", choices=["clip-sets", "v1", "chains"], default="clip-sets", help=recipes)
    bench.add_argument("--seed", type=cli_seed(), default=0)
    bench.add_argument(
        "--clips", type=cli_int(1), default=180, help="v1 only: clips; each gives three items (hint conditions)"
    )
    bench.add_argument(
        "--direct-only", action="store_true",
        help="chains only: every clip asked about by its number, at the sizes of \"workshop-chains\"' registered "
        "benchmark (--seed 1 rewrites that one)",
    )
    bench.add_argument("--overwrite", action="store_true")
    train = workshop_sub.add_parser("train", help="train the workshop model (CPU) and evaluate it")
    train.add_argument(
        "--out", type=output_folder,
        help="the run folder, resumed if it holds a state (v1, clip-sets: the checkpoint replaces it when "
        "done; chains: the checkpoint goes to <out>/final); default the user's cache, ~/.cache/lens_audio/runs/<recipe>"
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
                       help="leave (saving the state) after this many steps; rerun the command to continue")
    train.add_argument("--resume-from", help="chains only: start an empty --out from this saved state (a "
                       "state-NNNNNN folder, or a run folder's latest)")
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
    accept.add_argument("--json", dest="json_path", type=output_file, help="also write the result as JSON here")
    return {"workshop": run_workshop}


def run_workshop(args: argparse.Namespace) -> int:
    return {"benchmark": run_workshop_benchmark, "train": run_workshop_train,
            "acceptance": run_workshop_acceptance}[args.workshop_command](args)


def run_workshop_benchmark(args: argparse.Namespace) -> int:
    from lens_audio.organisms.benchmark_writer import SETS_JSON_NAME, write_benchmark, write_set_benchmark

    if args.direct_only and args.recipe != "chains":
        raise ValueError(f"--direct-only applies to --recipe chains, not {args.recipe}: add --recipe chains.")
    if args.recipe == "chains":
        from lens_audio.organisms.benchmark_writer import (
            CHAIN_PARTITIONS,
            CHAINS_JSON_NAME,
            DIRECT_PARTITIONS,
            write_chain_benchmark,
        )

        partitions = DIRECT_PARTITIONS if args.direct_only else CHAIN_PARTITIONS
        folder = write_chain_benchmark(args.out, args.seed, partitions, args.overwrite, direct_only=args.direct_only)
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
    from lens_audio.train.run_folder import default_run_folder

    if args.recipe == "chains":
        return run_chains_train(args)
    out = Path(args.out) if args.out else default_run_folder(args.recipe)
    v1 = args.recipe == "v1"
    pool = "pool_clips" if v1 else "pool_clips_per_class"
    overrides = {"steps_audio": args.steps_audio, "steps_mixed": args.steps_mixed, pool: args.pool_clips}
    if not v1:
        overrides["steps_select"] = args.steps_select
    defaults = TrainSettings(seed=args.seed) if v1 else SetsTrainSettings(seed=args.seed)
    settings = dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})
    benchmark = None if args.benchmark == "none" else (args.benchmark or (BENCHMARK_V1 if v1 else BENCHMARK_SETS))
    metrics = (train if v1 else train_sets)(out, settings, eval_benchmark=benchmark, stop_after=args.stop_after)
    if metrics is None:
        print(f"stopped before the end; resume with the same command (progress: {out / 'progress.jsonl'})")
        return 0
    print(json.dumps({k: v for k, v in metrics.items() if k != "loss_history"}, indent=1))
    return 0


def run_chains_train(args: argparse.Namespace) -> int:
    import dataclasses

    from lens_audio.organisms.benchmark_writer import chain_benchmark
    from lens_audio.organisms.workshop_chains.recipe import ChainsTrainSettings, train_chains
    from lens_audio.train.run_folder import default_run_folder

    overrides = {"steps_audio": args.steps_audio, "steps": args.steps, "pool_clips_per_class": args.pool_clips,
                 "threads": args.threads}
    settings = dataclasses.replace(ChainsTrainSettings(seed=args.seed),
                                   **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out) if args.out else default_run_folder("chains")
    benchmark = None if args.benchmark == "none" else (args.benchmark or chain_benchmark())
    metrics = train_chains(out, settings, stop_after=args.stop_after, device=args.device,
                           exact=not args.allow_inexact_resume, eval_benchmark=benchmark,
                           resume_from=args.resume_from)
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
