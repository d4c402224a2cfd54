"""`lens-audio sae train` (SAEs at any hooks over a benchmark) and `lens-audio sae workshop` (the shipped set)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from lens_audio.checks import cli_float, cli_int, cli_seed, output_folder
from lens_audio.sae.train import SAETrainSettings

# The SAEs shipped with the workshop model (organisms/workshop/saes): decoder layer 1 at the audio tokens, and the
# adaptive direction's layers (the workshop specialists' layers 1, 2, 4, 5) at the text positions, silence twins
# included. (hooks, positions, silence twins, settings)
WORKSHOP_SAES = (
    (("blocks.1.hook_resid_post",), "audio", False, SAETrainSettings(d_sae=256, k=4, steps=2000)),
    (tuple(f"blocks.{layer}.hook_resid_post" for layer in (1, 2, 4, 5)), "text", True,
     SAETrainSettings(d_sae=256, k=16, steps=2000)),
)


def add_parsers(sub: argparse._SubParsersAction) -> dict:
    """Add the `sae` group to `sub`; return command -> runner."""
    sae = sub.add_parser("sae", help="sparse autoencoders: train on a benchmark, or rebuild the workshop model's")
    sae_sub = sae.add_subparsers(dest="sae_command", required=True)
    train = sae_sub.add_parser("train", help="train one TopK SAE per --hook on a benchmark's activations")
    train.add_argument("--model", default="workshop")
    train.add_argument("--benchmark", help="MMAU-format JSON with a 'split' field (default: the model's bundled one)")
    train.add_argument("--hook", action="append", required=True, help="hook point, e.g. blocks.1.hook_resid_post; "
                       "repeat for several (one activation pass)")
    train.add_argument("--positions", choices=["audio", "text", "final", "all"], default="audio")
    train.add_argument("--silence", action="store_true", help="add the silence twins' activations to the rows")
    train.add_argument("--out", required=True, type=output_folder,
                       help="folder: one SAE folder per hook, the activation cache, "
                       "checkpoints (a rerun resumes)")
    for f in fields(SAETrainSettings):  # every number checked by argparse (finite, in range) before any work
        number = cli_seed() if f.name == "seed" else cli_int(1) if isinstance(f.default, int) else cli_float(0)
        train.add_argument(f"--{f.name.replace('_', '-')}", type=number, default=f.default)
    workshop = sae_sub.add_parser("workshop", help="train the SAEs shipped with the workshop model (minutes, CPU)")
    workshop.add_argument("--out", required=True, type=output_folder)
    return {"sae": run_sae}


def run_sae(args: argparse.Namespace) -> int:
    import torch

    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.organisms import benchmark_for
    from lens_audio.sae.recipe import train_benchmark_saes

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.sae_command == "workshop":
        jobs = WORKSHOP_SAES
        model_name, benchmark = "workshop", None
    else:
        settings = SAETrainSettings(**{f.name: getattr(args, f.name) for f in fields(SAETrainSettings)})
        jobs = ((tuple(args.hook), args.positions, args.silence, settings),)
        model_name, benchmark = args.model, args.benchmark
    model = HookedAudioLM.from_pretrained(model_name)
    items = load_mmau(benchmark or benchmark_for(model_name))
    for hooks, positions, silence, settings in jobs:
        for record in train_benchmark_saes(model, items, hooks, positions, Path(args.out), settings, silence=silence):
            print(f"{record.hook_name} at {record.positions} positions: variance explained "
                  f"{record.held_out.fraction_variance_explained:.3f} on {record.held_out_split} "
                  f"(train {record.train.fraction_variance_explained:.3f}), L0 {record.held_out.l0:.1f}, "
                  f"dead {record.train.dead_fraction:.2f}")
    return 0
