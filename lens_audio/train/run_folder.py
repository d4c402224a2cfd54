"""A resumable training run's folder: atomic states of everything a run's future depends on, and a progress log.

Layout of a run folder (one for every recipe and the SAE trainer; outside the package, by default under the
user's cache: `default_run_folder`):

- `state-NNNNNN/` the latest state, after step NNNNNN, in safetensors + JSON (`state_files.py` says what each
  file holds; no pickle);
- `progress.jsonl` one JSON object a line: training averages, seconds per step and time left every few steps,
  monitor results, starts, phases and resumes;
- `final/` the finished checkpoint, for recipes that keep it in the run folder (the clip-chain recipe).

A state is written to a hidden staging folder (`atomic_folder`) and renamed into place, and only then is the
previous one removed, so a run killed at any moment (kill -9 included) leaves one complete state to resume from;
staging leftovers are removed on the next start. The folder does not lock out a second writer: two processes
training into one folder at once overwrite each other's states.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lens_audio.files import RunLockedError, acquire_lock, atomic_folder, release_lock
from lens_audio.train import state_files
from lens_audio.train.state_files import StateFormatError, load_state, random_states, read_meta, set_random_states


def default_run_folder(recipe: str) -> Path:
    """Where a recipe's run goes without `--out`: the user's cache (`$LENS_AUDIO_CACHE`, else
    `$XDG_CACHE_HOME/lens_audio`, else `~/.cache/lens_audio`), under `runs/<recipe>`; never inside the package."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lens_audio"
    base = os.environ.get("LENS_AUDIO_CACHE") or cache
    return Path(base) / "runs" / recipe


STATE_PATTERN = re.compile(r"^state-(\d{6})$")
STAGING_PREFIX = ".state-"  # atomic_folder's staging folders for state-NNNNNN, and states being discarded
LOGISTICS = ("checkpoint_every", "log_every")  # settings a resumed run may change: they do not alter the weights


class ResumeMismatch(ValueError):
    """A run folder's state was made by another recipe, other settings or other training inputs."""


@dataclass
class LoopState:
    """The training loop's own state: steps (in all and in the current phase), running averages (0.98 decay), the
    loss history and monitor results, and whether a recipe's stopping rule ended the run."""

    step: int = 0
    stage: int = 1
    running: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    monitors: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False
    phase: int = 0
    phase_step: int = 0

    def record(self, values: dict[str, float], stage: int) -> None:
        """Count one step and fold its logged values into the running averages (non-finite values skipped)."""
        self.step, self.phase_step, self.stage = self.step + 1, self.phase_step + 1, stage
        for name, value in values.items():
            if math.isfinite(value):
                old = self.running.get(name)
                self.running[name] = value if old is None else 0.98 * old + 0.02 * value

    def summary(self) -> dict[str, Any]:
        return {"step": self.step, "stage": self.stage, **{k: round(v, 4) for k, v in self.running.items()}}


class RunFolder:
    """Saving, finding and restoring the states of one run, and its progress log."""

    def __init__(self, root: Path, recipe: str, settings: dict[str, Any]) -> None:
        self.root, self.recipe = Path(root), recipe
        self.settings = json.loads(json.dumps(settings))
        self.final = self.root / "final"
        self.progress = self.root / "progress.jsonl"

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the folder's one-writer lock (`<root>/.lock`) inside: a second live process training into the same
        folder gets `RunLockedError` instead of mixing states. Re-entrant within one object."""
        if getattr(self, "_lock_fd", None) is not None:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = acquire_lock(self.root / ".lock", self.root)
        try:
            yield
        finally:
            release_lock(self._lock_fd, self.root / ".lock")
            self._lock_fd = None

    def finished(self) -> bool:
        return (self.final / "metrics.json").exists()

    def latest(self) -> Path | None:
        states = sorted(p for p in self.root.glob("state-*") if p.is_dir() and STATE_PATTERN.match(p.name))
        return states[-1] if states else None

    def log(self, record: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.progress.open("a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), **record}) + "\n")

    def begin(self, fingerprint: str, exact: bool = True, introduced_later: dict[str, str] | None = None,
              inputs: str = "the training inputs", mismatch_advice: str = "") -> dict[str, Any] | None:
        """Open the folder: remove staging leftovers, and check the latest state (if any) against this run.

        Returns the latest state's `state.json` (for `restore`), or None after logging a start. `introduced_later`
        maps a setting added to the recipe after runs had started to the setting that holds the first step it can
        change: a state saved without it, at or before that step, resumes under its value (the steps so far are
        the same whatever it is). A state whose `fingerprint` (of `inputs`) differs is refused, or with
        `exact=False` resumed with a warning in the log; `mismatch_advice` ends the error (what to do).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self.writing():  # never remove a live writer's staging folder
            for leftover in self.root.glob(STAGING_PREFIX + "*"):
                shutil.rmtree(leftover)
        latest = self.latest()
        if latest is None:
            self.log({"event": "start", "recipe": self.recipe, "settings": self.settings})
            return None
        meta = read_meta(latest)
        if meta["recipe"] != self.recipe:
            raise ResumeMismatch(f"{self.root} holds a {meta['recipe']!r} run, not {self.recipe!r}; use another "
                                 "folder.")
        saved_step = meta["loop"]["step"]
        later = {k for k, first_step in (introduced_later or {}).items()
                 if k not in meta["settings"] and saved_step <= self.settings[first_step]}
        changed = {k: (meta["settings"].get(k), v) for k, v in self.settings.items()
                   if k not in LOGISTICS and k not in later and meta["settings"].get(k) != v}
        if changed:
            raise ResumeMismatch(f"{self.root} was started with other settings (saved, requested): {changed}. Resume "
                                 "with the same settings, or start a new run in another folder.")
        if meta["fingerprint"] != fingerprint:
            message = (f"{inputs} differ from those {latest} was trained on, so the resumed run will not match an "
                       "uninterrupted one")
            if exact:
                raise ResumeMismatch(message + (f"; {mismatch_advice}" if mismatch_advice else
                                                "; start a new run in another folder."))
            self.log({"event": "warning", "message": message})
        meta["path"] = str(latest)
        return meta

    def save(self, loop: LoopState, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
             fingerprint: str, sampler_rng: Any = None, extra_tensors: dict[str, torch.Tensor] | None = None,
             schedule: dict[str, Any] | None = None) -> Path:
        """Write the state after `loop.step` atomically, then remove the older ones."""
        target = self.root / f"state-{loop.step:06d}"
        meta = {"recipe": self.recipe, "settings": self.settings, "fingerprint": fingerprint, "loop": asdict(loop),
                "schedule": schedule or {}, "rng": random_states(sampler_rng)}
        with atomic_folder(target) as staging:
            state_files.write_state(staging, modules, optimizer, meta, extra_tensors)
        for old in self.root.glob("state-*"):
            if old != target and STATE_PATTERN.match(old.name):
                shutil.rmtree(old)
        return target

    def restore(self, meta: dict[str, Any], modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                sampler_rng: Any = None, extra_tensors: dict[str, torch.Tensor] | None = None) -> LoopState:
        """Load the state `begin` returned into the given objects and the random generators; log the resume."""
        latest = Path(meta["path"])
        load_state(latest, meta, modules, optimizer, extra_tensors)
        set_random_states(meta["rng"], sampler_rng)
        loop = LoopState(**meta["loop"])
        self.log({"event": "resume", "step": loop.step, "from": latest.name})
        return loop

    def discard_states(self) -> None:
        """Remove every state (a finished run's product is written elsewhere): each is renamed to a staging name
        first, so a kill midway leaves either a whole state or none."""
        for old in sorted(self.root.glob("state-*")):
            if STATE_PATTERN.match(old.name):
                doomed = self.root / (STAGING_PREFIX + "discarded-" + old.name)
                os.replace(old, doomed)
                shutil.rmtree(doomed)

    def adopt(self, source: str | Path) -> Path:
        """Start this (empty) run folder from a state kept elsewhere: a `state-NNNNNN` folder, or a run folder
        whose latest state is taken. The state is checked (format, recipe) and copied in. Returns the copy."""
        source = Path(source)
        state = source if STATE_PATTERN.match(source.name) else RunFolder(source, self.recipe, {}).latest()
        if state is None or not state.is_dir():
            raise FileNotFoundError(f"{source} holds no training state (state-NNNNNN/).")
        meta = read_meta(state)
        if meta["recipe"] != self.recipe:
            raise ResumeMismatch(f"{state} is a {meta['recipe']!r} state, not {self.recipe!r}.")
        if self.latest() is not None:
            raise FileExistsError(f"{self.root} already holds a state ({self.latest().name}); resume from it, or "
                                  "adopt into an empty folder.")
        with atomic_folder(self.root / state.name) as staging:
            for path in state.iterdir():
                shutil.copyfile(path, staging / path.name)
        self.log({"event": "adopted", "from": str(state), "step": meta["loop"]["step"]})
        return self.root / state.name


__all__ = ["LoopState", "ResumeMismatch", "RunFolder", "RunLockedError", "StateFormatError", "default_run_folder"]
