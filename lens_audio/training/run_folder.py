"""A resumable training run's folder: atomic checkpoints of everything a run's future depends on, and a progress log.

Layout of a run folder:

- `state-NNNNNN/` the latest checkpoint, after step NNNNNN: `weights.safetensors`
  (the trained parameters and the training probes), `adam_exp_avg.safetensors`
  and `adam_exp_avg_sq.safetensors` (the optimizer's moments; three files so
  each stays small), `rest.pt` (optimizer steps and groups, scheduler, torch
  random state; read with `weights_only=True`) and `state.json` (step, the
  data sampler's random state, running averages, history, settings);
- `progress.jsonl` one JSON object a line: training averages, seconds per step
  and time left every few steps, monitor results, starts and resumes;
- `final/` the finished checkpoint, once the run is done.

A checkpoint is written to a hidden staging folder (`atomic_folder`) and renamed
into place, and only then is the previous one removed, so a run killed at any moment (kill -9
included) leaves one complete checkpoint to resume from; staging leftovers
are removed on the next start.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lens_audio.files import atomic_folder


def default_run_folder(recipe: str) -> Path:
    """Where a recipe's run goes without `--out`: the user's cache (`$LENS_AUDIO_CACHE`, else
    `$XDG_CACHE_HOME/lens_audio`, else `~/.cache/lens_audio`), under `runs/<recipe>`; never inside the package."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lens_audio"
    base = os.environ.get("LENS_AUDIO_CACHE") or cache
    return Path(base) / "runs" / recipe


STATE_PATTERN = re.compile(r"^state-(\d{6})$")
STAGING_PREFIX = ".state-"  # atomic_folder's staging folders for state-NNNNNN
LOGISTICS = ("checkpoint_every", "log_every")  # settings a resumed run may change: they do not alter the weights


@dataclass
class LoopState:
    """The training loop's own state: step, running averages (0.98 decay), the loss history and monitor results."""

    step: int = 0
    stage: int = 1
    running: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    monitors: list[dict[str, Any]] = field(default_factory=list)
    stopped: bool = False

    def record(self, loss: float, aid: float, stats: dict[str, float], stage: int) -> None:
        self.step, self.stage = self.step + 1, stage
        for name, value in {"loss": loss, "aid_loss": aid, **stats}.items():
            if math.isfinite(value):
                old = self.running.get(name)
                self.running[name] = value if old is None else 0.98 * old + 0.02 * value
        if self.step % 100 == 0:
            self.history.append({"step": self.step, "stage": stage, "loss": round(self.running["loss"], 4)})

    def summary(self) -> dict[str, Any]:
        return {"step": self.step, "stage": self.stage, **{k: round(v, 4) for k, v in self.running.items()}}


class RunFolder:
    """Saving, finding and restoring the checkpoints of one run, and its progress log."""

    def __init__(self, root: Path, recipe: str, settings: dict[str, Any]) -> None:
        self.root, self.recipe = root, recipe
        self.settings = json.loads(json.dumps(settings))
        self.final = root / "final"
        self.progress = root / "progress.jsonl"

    def finished(self) -> bool:
        return (self.final / "metrics.json").exists()

    def latest(self) -> Path | None:
        states = sorted(p for p in self.root.glob("state-*") if p.is_dir() and STATE_PATTERN.match(p.name))
        return states[-1] if states else None

    def log(self, record: dict[str, Any]) -> None:
        with self.progress.open("a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), **record}) + "\n")

    def save(self, model: Any, probes: torch.nn.Module, optimizer: Any, scheduler: Any, data: Any, loop: LoopState,
             fingerprint: str) -> Path:
        """Write the checkpoint after `loop.step` atomically, then remove the older ones."""
        target = self.root / f"state-{loop.step:06d}"
        with atomic_folder(target) as staging:
            weights = {f"model.{n}": p for n, p in model.named_parameters() if p.requires_grad}
            weights.update({f"probes.{n}": p for n, p in probes.state_dict().items()})
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, staging / "weights.safetensors")
            state = optimizer.state_dict()
            for moment in ("exp_avg", "exp_avg_sq"):
                save_file({str(i): s[moment].detach().cpu().contiguous() for i, s in state["state"].items()},
                          staging / f"adam_{moment}.safetensors")
            rest = {"optimizer_steps": {i: s["step"].cpu() for i, s in state["state"].items()},
                    "param_groups": state["param_groups"], "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}
            torch.save(rest, staging / "rest.pt")
            meta = {"recipe": self.recipe, "settings": self.settings, "pool_fingerprint": fingerprint,
                    "data_rng": data.rng.bit_generator.state, "loop": asdict(loop)}
            (staging / "state.json").write_text(json.dumps(meta, indent=1))
            for path in staging.iterdir():  # on disk before the rename makes the checkpoint the latest
                with path.open("rb") as f:
                    os.fsync(f.fileno())
        for old in self.root.glob("state-*"):
            if old != target and STATE_PATTERN.match(old.name):
                shutil.rmtree(old)
        return target

    def restore(self, model: Any, probes: torch.nn.Module, optimizer: Any, scheduler: Any, data: Any,
                fingerprint: str, exact: bool = True, introduced_later: dict[str, str] | None = None) -> LoopState:
        """Load the latest checkpoint into the given objects (a fresh `LoopState` when there is none).

        `introduced_later` maps a setting added to the recipe after runs had started to the setting that holds the
        first step it can change: a state saved without it, at or before that step, resumes under its value (the
        steps so far are the same whatever it is).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(leftover)
        latest = self.latest()
        if latest is None:
            self.log({"event": "start", "recipe": self.recipe, "settings": self.settings})
            return LoopState()
        meta = json.loads((latest / "state.json").read_text())
        if meta["recipe"] != self.recipe:
            raise ValueError(f"{self.root} holds a {meta['recipe']!r} run, not {self.recipe!r}; use another folder.")
        saved_step = meta["loop"]["step"]
        later = {k for k, first_step in (introduced_later or {}).items()
                 if k not in meta["settings"] and saved_step <= self.settings[first_step]}
        changed = {k: (meta["settings"].get(k), v) for k, v in self.settings.items()
                   if k not in LOGISTICS and k not in later and meta["settings"].get(k) != v}
        if changed:
            raise ValueError(f"{self.root} was started with other settings (saved, requested): {changed}. Resume "
                             "with the saved settings, or start a new run in another folder.")
        if meta["pool_fingerprint"] != fingerprint:
            message = (f"the training clips' encoder outputs differ from those {latest} was trained on (another torch "
                       "build or thread count?), so the resumed run will not match an uninterrupted one")
            if exact:
                raise RuntimeError(message + "; pass --allow-inexact-resume to continue anyway.")
            self.log({"event": "warning", "message": message})
        weights = load_file(latest / "weights.safetensors")
        params = {f"model.{n}": p for n, p in model.named_parameters() if p.requires_grad}
        missing = set(params) ^ {k for k in weights if k.startswith("model.")}
        if missing:
            raise ValueError(f"{latest} does not match this model: differing parameters {sorted(missing)[:5]}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
        probes.load_state_dict({k[len("probes."):]: v for k, v in weights.items() if k.startswith("probes.")})
        rest = torch.load(latest / "rest.pt", weights_only=True)
        moments = {m: load_file(latest / f"adam_{m}.safetensors") for m in ("exp_avg", "exp_avg_sq")}
        state = {int(i): {"step": step, **{m: moments[m][str(i)] for m in moments}}
                 for i, step in rest["optimizer_steps"].items()}
        optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})
        scheduler.load_state_dict(rest["scheduler"])
        torch.set_rng_state(rest["torch_rng"])
        data.rng.bit_generator.state = meta["data_rng"]
        loop = LoopState(**meta["loop"])
        self.log({"event": "resume", "step": loop.step, "from": latest.name})
        return loop
