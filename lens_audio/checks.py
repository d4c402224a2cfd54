"""Checks of the numbers users pass, shared by the API and the command line: one place per kind of number.

The API calls `check_int` / `check_float` / `check_seed` at its entry points (e.g. `ExperimentProfile`,
`run_benchmark`, `random_head_draws`), so a bad argument is refused before any work, with its name; the command
line uses the same rules as argparse `type=` functions (`cli_int`, `cli_float`, `cli_seed`), so a bad flag is one
line naming the flag (`OneLineParser`). This module imports nothing else of lens_audio, so every layer may use it.

Every parser is a `OneLineParser`, with `allow_abbrev=False` (argparse makes subparsers of the parent's class):
`--bet 2` is an error, not `--beta 2`, so a flag added later never changes what an abbreviation meant. Paths:
- `output_file` (`--json`, `--figure`, `explore --out`): a file to write. A path ending in `/` or naming an
  existing folder is refused before any work (name the file inside it); missing parent folders are created when
  the file is written (`files.write_atomically`), and an existing file is replaced.
- `output_folder` (`--out` of the runs, benchmarks, SAEs, figures): a folder, created if missing and reused (resumed)
  if it exists; a path naming an existing file (or under one) is refused before any work.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

SEED_MAX = 2**32 - 1  # numpy's legacy seeding, torch and Python's random all take seeds in 0 .. 2**32 - 1


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int in [minimum, maximum], else a ValueError naming `name` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, not {value!r} ({type(value).__name__}).")
    value = int(value)
    _check_range(name, value, minimum, maximum)
    return value


def check_float(name: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> float:
    """`value` as a finite float in [minimum, maximum], else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, not {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}; give a finite number.")
    _check_range(name, value, minimum, maximum)
    return value


def check_seed(name: str, value: Any) -> int:
    return check_int(name, value, 0, SEED_MAX)


def check_confidence(value: Any, name: str = "confidence") -> float:
    """A confidence level strictly between 0 and 1 (e.g. 0.95)."""
    value = check_float(name, value)
    if not 0 < value < 1:
        raise ValueError(f"{name} must be strictly between 0 and 1 (e.g. 0.95), not {value}.")
    return value


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, not {value}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value}.")


def _cli(parse: Callable[[str], Any], check: Callable[[Any], Any], kind: str) -> Callable[[str], Any]:
    """An argparse `type=`: parse the text, then apply the API's check; argparse adds the flag to the message."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value ").rstrip(".")) from None

    convert.__name__ = kind  # argparse names the type in some messages
    return convert


def cli_int(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    return _cli(int, lambda v: check_int("value", v, minimum, maximum), "a whole number")


def cli_float(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    return _cli(float, lambda v: check_float("value", v, minimum, maximum), "a number")


def cli_seed() -> Callable[[str], int]:
    return _cli(int, lambda v: check_seed("value", v), "a whole number")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ("lens-audio listen: error: argument --batch-size: ...; see --help"),
    and no abbreviated flags (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UserNote(UserWarning):
    """A warning that is a note to the user, said in one line: the command line prints each as
    `lens-audio: note: <message>` (Python shows it as any other warning). Subclass it for such notes."""


def _blocking_file(path: Path) -> Path | None:
    """An existing file at `path` or at one of its parents (so no folder can be made there), or None."""
    for place in (path, *path.parents):
        if place.exists():
            return place if not place.is_dir() else None
    return None


def output_file(text: str) -> str:
    """An argparse `type=` for a file to write (see the module docstring)."""
    path = Path(text)
    if not text or text.endswith(("/", os.sep)) or path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is a folder; give the file to write, e.g. {os.path.join(text or '.', 'result.json')!r}")
    blocking = _blocking_file(path.parent)
    if blocking is not None:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be written: {str(blocking)!r} is a file, not a folder")
    return text


def output_folder(text: str) -> str:
    """An argparse `type=` for a folder to write into (see the module docstring)."""
    if not text:
        raise argparse.ArgumentTypeError("give a folder")
    blocking = _blocking_file(Path(text))
    if blocking is not None:
        raise argparse.ArgumentTypeError(
            f"{text!r} names a folder to write into, but {str(blocking)!r} is a file; give another folder")
    return text


def add_allow_outside_argument(parser: argparse.ArgumentParser) -> None:
    """`--allow-outside-audio`: every command that reads a benchmark's audio takes it."""
    parser.add_argument("--allow-outside-audio", action="store_true",
                        help="read audio_id paths that lead outside the benchmark file's folder (refused by default)")
