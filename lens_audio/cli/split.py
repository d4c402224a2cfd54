"""`lens-audio split` (write a benchmark's calibration/dev/test split as a file to publish beside results) and the
split flags the experiment's stages and `figures` share (`add_split_arguments`, `split_from_args`).

Which split a run uses (`split_from_args`, then `benchmark.splits.stage_split`):
  --split-file FILE                       the split in FILE (written by `lens-audio split` or `BenchmarkSplit.write`)
  --split-field FIELD [CAL DEV TEST]      the items' own FIELD names the stages (its values calibration, dev, test,
                                          or the three values given)
  --split-sizes CAL DEV TEST / --split-stratify FIELD ...
                                          a seeded split (seed: --seed) of these fractions and strata, even where
                                          the benchmark has its own calibration/dev/test items
  none of these                           the run folder's split.json where an earlier stage wrote one (not with
                                          --fresh); else the benchmark's own calibration/dev/test items; else a
                                          seeded split with the profile's sizes (0.25 0.25 0.5) by task
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lens_audio.checks import add_allow_outside_argument, cli_float, cli_seed, output_file

STAGE_VALUES = "CALIBRATION DEV TEST"


class _FieldAndValues(argparse.Action):
    """FIELD, or FIELD and the field's values for calibration, dev and test."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (1, 4):
            parser.error(f"argument {option_string}: give FIELD, or FIELD and its values for the calibration, dev and "
                         f"test stages ({len(values)} words given)")
        setattr(namespace, self.dest, list(values))


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """--split-file, --split-field, --split-sizes and --split-stratify (see the module docstring)."""
    parser.add_argument("--split-file", help="calibration/dev/test split from this file (lens-audio split writes one)")
    parser.add_argument(
        "--split-field", nargs="+", action=_FieldAndValues, metavar="FIELD",
        help=f"FIELD [{STAGE_VALUES}]: the items' own field names the stages (values calibration, dev, test, or the "
        "three given)",
    )
    parser.add_argument(
        "--split-sizes", nargs=3, type=cli_float(0, 1), metavar=("CAL", "DEV", "TEST"),
        help="make a seeded split (seed: --seed) with these fractions of the items (default, where the benchmark has "
        "no calibration/dev/test items: 0.25 0.25 0.5)",
    )
    parser.add_argument("--split-stratify", nargs="+", metavar="FIELD",
                        help="item fields the seeded split is stratified by (default: task)")


def split_profile_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The profile fields the split flags set (None: left as the profile has them)."""
    return {"split_sizes": args.split_sizes and tuple(args.split_sizes),
            "split_stratify": args.split_stratify and tuple(args.split_stratify)}


def split_from_args(args: argparse.Namespace, items: list[dict[str, Any]], profile, folder: str | Path | None):
    """The `BenchmarkSplit` the flags name, the run folder's split.json where no flag names one (not with --fresh),
    or None (the experiment's own rule: `benchmark.splits.stage_split`)."""
    from lens_audio.benchmark.splits import make_split, read_split, split_from_field

    making = args.split_sizes is not None or args.split_stratify is not None
    given = [flag for flag, on in (("--split-file", args.split_file), ("--split-field", args.split_field),
                                   ("--split-sizes/--split-stratify", making)) if on]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} each choose the split: give one of them.")
    if args.split_file:
        return read_split(args.split_file)
    if args.split_field:
        field, *values = args.split_field
        return split_from_field(items, field, dict(zip(("calibration", "dev", "test"), values)) if values else None)
    if making:
        return make_split(items, profile.split_sizes, profile.seed, profile.split_stratify)
    saved = None if folder is None else Path(folder) / "split.json"
    if saved is not None and saved.is_file() and not getattr(args, "fresh", False):
        return read_split(saved)
    return None


def check_split_name(name: str, items: list[dict[str, Any]]) -> None:
    """Before the model loads: `name` is a stage or one of the benchmark's own split values."""
    from lens_audio.benchmark.splits import STAGES, benchmark_splits

    present = benchmark_splits(items)
    if name not in STAGES and name not in present:
        raise ValueError(f"--split {name!r} is neither a stage ({', '.join(STAGES)}) nor a split of the benchmark "
                         f"(its split values: {present}); give one of them.")


def add_parsers(sub: argparse._SubParsersAction) -> dict:
    """Add `split` to `sub`; return command -> runner."""
    parser = sub.add_parser("split", help="write a benchmark's seeded calibration/dev/test split as a file")
    parser.add_argument("benchmark", help="MMAU-format JSON")
    parser.add_argument("--out", required=True, type=output_file, help="the split file to write (JSON)")
    parser.add_argument("--sizes", nargs=3, type=cli_float(0, 1), metavar=("CAL", "DEV", "TEST"),
                        help="fractions of the items per stage (default 0.25 0.25 0.5)")
    parser.add_argument("--seed", type=cli_seed(), default=0, help="seed of the split (default 0)")
    parser.add_argument("--stratify", nargs="+", metavar="FIELD",
                        help="item fields to stratify by, e.g. task sub-category difficulty (default: task)")
    parser.add_argument("--field", nargs="+", action=_FieldAndValues, metavar="FIELD",
                        help=f"FIELD [{STAGE_VALUES}]: write the split the items' own field names instead")

    add_allow_outside_argument(parser)
    suite = sub.add_parser("conflict-suite", help="write a benchmark's conflict suite: each item with no hint, a "
                                                  "congruent and a conflicting sentence (benchmark.conflict_suite)")
    suite.add_argument("benchmark", help="MMAU-format JSON")
    suite.add_argument("--out", type=output_file,
                       help="the suite to write, beside the benchmark (default <stem>-conflict-seed<seed>.json)")
    suite.add_argument("--seed", type=cli_seed(), default=0, help="seed of the asserted wrong options (default 0)")
    convert = sub.add_parser("convert-benchmark", help="convert an MMAR or MMAU-Pro file to the MMAU format the "
                                                       "experiment reads (benchmark.formats)")
    convert.add_argument("benchmark", help="the benchmark file: JSON list, JSON lines, or parquet")
    convert.add_argument("--format", required=True, choices=("mmar", "mmau-pro"), help="the file's format")
    convert.add_argument("--out", type=output_file,
                         help="the MMAU-format JSON to write, beside the file (default <stem>-mmau-format.json)")
    return {"split": run_split, "conflict-suite": run_conflict_suite, "convert-benchmark": run_convert}


def run_convert(args: argparse.Namespace) -> int:
    from lens_audio.benchmark.formats import convert_benchmark

    path, conversion = convert_benchmark(args.benchmark, args.format, args.out)
    print(f"wrote {path}: {conversion.describe()}; run the experiment on it with --benchmark {path}")
    return 0


def run_conflict_suite(args: argparse.Namespace) -> int:
    import json

    from lens_audio.benchmark.conflict_suite import write_conflict_suite

    path = write_conflict_suite(args.benchmark, args.out, args.seed)
    n = len(json.loads(path.read_text()))
    print(f"wrote {path}: {n} items ({n // 3} questions x no hint, congruent, conflicting; seed {args.seed}); run "
          f"the experiment on it with --benchmark {path}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    from lens_audio.benchmark import load_mmau
    from lens_audio.benchmark.splits import DEFAULT_SIZES, make_split, split_from_field

    items = load_mmau(args.benchmark, allow_outside=args.allow_outside_audio)
    if args.field:
        if args.sizes or args.stratify:
            raise ValueError("--field writes the split the field names; drop --sizes/--stratify, or drop --field.")
        field, *values = args.field
        split = split_from_field(items, field, dict(zip(("calibration", "dev", "test"), values)) if values else None)
    else:
        split = make_split(items, args.sizes or DEFAULT_SIZES, args.seed, args.stratify)
    split.write(args.out)
    print(f"{split.describe()}; wrote {args.out}")
    for stratum, counts in split.counts_by_stratum.items():
        print(f"  {stratum}: " + ", ".join(f"{stage} {n}" for stage, n in counts.items()))
    return 0
