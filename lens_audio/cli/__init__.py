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
  rivals               adaptive steering against audio-contrastive correction, back-patching, attention
                       scaling and a trained head mask on the same items: each chosen on dev, read once on
                       test, paired statistics
  split                write a benchmark's seeded calibration/dev/test split (stratified by task, clips kept
                       whole) as a file to publish beside results and reuse (--split-file)
  convert-benchmark    convert an MMAR or MMAU-Pro file to the MMAU format the experiment reads
  conflict-suite       write a benchmark's conflict suite (each item with no hint, a congruent and a conflicting
                       sentence) to measure text dominance on (lens_audio.benchmark.conflict)
  locate               where the steering effect lives: direction layers x injection sites, and the
                       specialists' own outputs, on dev (writes <out>/locate.json)
  workshop benchmark   write a synthetic MMAU-format benchmark, deterministic from a seed
  workshop train       train the workshop model on CPU and evaluate it
  workshop acceptance  the clip-chain model's acceptance checks on one split: patching, probe, steering, validity
  sae train            train sparse autoencoders at any hooks on a benchmark's activations (SAELens's format)
  sae workshop         train the SAEs shipped with the workshop model

One module per command group, each with `add_parsers(sub)` (its commands; returns command -> runner) and the
runners: `hooks` (demo, hooks), `figures` (figures, explore), `experiment` (the experiment's stages and locate,
and the flags it shares with figures), `split` (split, and the split flags), `organisms` (workshop ...), `sae`
(sae ...). Errors print as one line on stderr (`--debug` shows the traceback); a model with no registered profile,
and the split an experiment made, are said in one line, `lens-audio: note: ...`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

from lens_audio.checks import OneLineParser, UserNote
from lens_audio.cli import experiment, figures, hooks, organisms, sae, split
from lens_audio.cli.experiment import placement_args

__all__ = ["main", "placement_args"]
GROUPS = (hooks, figures, experiment, split, organisms, sae)  # in the order --help lists their commands


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    """The `lens-audio` parser with every command group's subcommands, and command -> runner."""
    parser = OneLineParser(  # its subcommands' parsers are OneLineParsers too: no abbreviated flags anywhere
        prog="lens-audio", description="Interpretability workbench for Qwen2-Audio models."
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the traceback (also after the subcommand)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    runners: dict[str, Callable[[argparse.Namespace], int]] = {}
    for group in GROUPS:
        runners.update(group.add_parsers(sub))
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = parser.parse_args([a for a in argv if a != "--debug"])
    try:
        with warnings.catch_warnings():  # restores the warning display after the command
            warnings.showwarning = _notes_in_one_line(warnings.showwarning)
            return runners[args.command](args)
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
    if isinstance(exc, (ValueError, OSError, RuntimeError, Warning)):  # a Warning: raised under -W error
        return f"error: {text}"
    return f"unexpected {type(exc).__name__}: {text}; rerun with --debug for the traceback and please report it."


def _notes_in_one_line(show: Callable) -> Callable:
    """`warnings.showwarning` that prints a `UserNote` (such as a model with no registered profile) as one line,
    `lens-audio: note: <message>`, and hands every other warning to `show`."""

    def show_warning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserNote):
            print(f"lens-audio: note: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning
