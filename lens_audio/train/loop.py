"""The one training loop: AdamW, the warmup-cosine schedule, gradient clipping, running averages, stages and
phases, auxiliary losses, a progress log and periodic resumable states. The organisms' recipes and the SAE
trainer all train through it.

A recipe describes its run as phases (`Phase`: steps, learning rate, warmup, weight decay, clipping; a new phase
starts a fresh optimizer and schedule, as the clip-set recipe's third stage does) and gives, per phase, a step
function that draws a batch and returns the loss to minimise (`StepOutput`: the loss, including any auxiliary
losses such as probes, the values to average and log, and the step's stage). `Trainer.run_phase` does the rest,
in this order each step (which is the order every recipe used before, so their numbers are unchanged):

    output = step_fn(loop)                    # the recipe: batch (from the data sampler's generator), forward
    optimizer.zero_grad(set_to_none=True)
    output.loss.backward()
    clip each of `clip_groups` to `max_grad_norm` on its own
    lr = learning_rate * schedule(phase step); optimizer.step()
    after_update(output)                      # under no_grad: e.g. an SAE's decoder renormalised
    running averages and history; on_step_end(loop) (e.g. a monitor that may stop the run); progress log;
    a state every `checkpoint_every` steps, at the end of each phase, when stopped, and when leaving early

The schedule is a function of the phase's step (no scheduler object), so a state records its position as a number.
With a run folder (`RunFolder`) the trainer resumes from its latest state: the phases before the saved one are
skipped, the saved one continues where it stopped (weights, AdamW moments and step counts, torch and sampler
random states, running averages), and the result equals an uninterrupted run's, bit for bit, on the same torch
build and thread count.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from lens_audio.train.run_folder import LoopState, RunFolder
from lens_audio.train.state_files import trainable


def inputs_fingerprint(*tensors: Tensor) -> str:
    """A short digest of the training inputs' values: a resumed run checks it sees the very same inputs."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor at (0-based) `step`: linear warmup over `warmup_steps`, times a half cosine that
    falls from 1 at step 0 towards 0 at `total_steps`."""
    return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / max(1, total_steps)))


@dataclass(frozen=True)
class Phase:
    """A stretch of training under one AdamW optimizer and one schedule.

    `warmup_steps=None` keeps the learning rate constant; otherwise it follows `warmup_cosine` over
    `cosine_steps` (default `steps`). `max_grad_norm=None` does not clip. `history` is where the loss history
    takes its points: `"done"` after every `history_every`-th step in all (labelled with the steps done), or
    `"index"` at the phase's first step, every `history_every`-th and its last (labelled with the step's 0-based
    index in all): the convention of the first two workshop recipes, kept so that their `metrics.json` stay the
    same.
    """

    steps: int
    learning_rate: float
    warmup_steps: int | None = None
    cosine_steps: int | None = None
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    history: str = "done"
    history_every: int = 100
    label: str = "training"

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"a phase needs steps >= 0, not {self.steps}.")
        if self.warmup_steps is not None and self.warmup_steps < 1 and self.steps:
            raise ValueError(f"warmup_steps must be at least 1 (or None for a constant rate), not {self.warmup_steps}.")
        if self.history not in ("done", "index"):
            raise ValueError(f"history must be 'done' or 'index', not {self.history!r}.")

    def lr_factor(self, phase_step: int) -> float:
        """The learning rate's factor at the phase's (0-based) step."""
        if self.warmup_steps is None:
            return 1.0
        return warmup_cosine(phase_step, self.warmup_steps, self.cosine_steps or self.steps)

    def history_point(self, loop: LoopState) -> int | None:
        """The label of the history point after the step just recorded, or None when it makes none."""
        if self.history == "done":
            return loop.step if loop.step % self.history_every == 0 else None
        index = loop.phase_step - 1
        return loop.step - 1 if index % self.history_every == 0 or loop.phase_step == self.steps else None


@dataclass
class StepOutput:
    """What a recipe's step function returns: the loss to minimise (with any auxiliary losses), the values to
    average and log (`"loss"` first: the history follows it), the step's stage, and anything `after_update`
    needs (such as an SAE's latents)."""

    loss: Tensor
    logged: dict[str, float]
    stage: int = 1
    extra: Any = None


@dataclass
class Trainer:
    """Runs a recipe's phases in order, with or without a run folder (`run=None`: nothing saved, nothing resumed).

    `sampler` is the object whose `.rng` (a numpy Generator) draws the batches (saved and restored with the state;
    it may be replaced between phases); `fingerprint` identifies the training inputs (a resumed run must see the
    same: `exact=False` allows another, with a warning; `inputs` names them and `mismatch_advice` says what to do,
    in the error). `stop_after` leaves after that many steps of this call,
    `stop_at` after that many steps in all (saving a state either way). `total_steps` is for the time left in
    the log.
    """

    run: RunFolder | None
    fingerprint: str = ""
    sampler: Any = None
    exact: bool = True
    progress: bool = True
    checkpoint_every: int | None = None
    log_every: int | None = None
    stop_after: int | None = None
    stop_at: int | None = None
    total_steps: int | None = None
    introduced_later: dict[str, str] | None = None
    inputs: str = "the training inputs"
    mismatch_advice: str = ""
    loop: LoopState = field(default_factory=LoopState, init=False)  # the steps so far (restored on resuming)
    resumed_from: int = field(default=0, init=False)  # the step this call resumed from (0: a fresh run)

    def __post_init__(self) -> None:
        self._pending = None
        if self.run is not None:
            self._pending = self.run.begin(self.fingerprint, self.exact, self.introduced_later, self.inputs,
                                           self.mismatch_advice)
            if self._pending is not None:
                self.loop = LoopState(**self._pending["loop"])  # what is done so far, until `restore` loads it all
        self._steps_here, self._started = 0, time.perf_counter()

    def resumes_after(self, phase: int) -> bool:
        """Whether the saved state to resume from lies beyond `phase` (so that phase is done, and skipped)."""
        return self._pending is not None and self._pending["loop"].get("phase", 0) > phase

    def run_phase(self, index: int, phase: Phase, modules: dict[str, torch.nn.Module],
                  step_fn: Callable[[LoopState], StepOutput], clip_groups: Sequence[Sequence[Tensor]] | None = None,
                  after_update: Callable[[StepOutput], None] | None = None,
                  on_step_end: Callable[[LoopState], None] | None = None,
                  extra_tensors: dict[str, Tensor] | None = None) -> bool:
        """Train phase `index` to its end; returns False when the call's budget ran out first (a state is saved).

        `modules` are what the phase trains and saves (their trainable parameters, by module name); the optimizer
        holds the parameters of `clip_groups` in order (default: one group, every module's trainable parameters),
        each group clipped on its own. `extra_tensors` are saved with the state and restored in place.
        """
        if self.resumes_after(index):
            return True
        with self.run.writing() if self.run is not None else contextlib.nullcontext():
            return self._run_phase(index, phase, modules, step_fn, clip_groups, after_update, on_step_end,
                                   extra_tensors)

    def _run_phase(self, index, phase, modules, step_fn, clip_groups, after_update, on_step_end,
                   extra_tensors) -> bool:
        groups = [list(g) for g in clip_groups] if clip_groups is not None else [
            [p for module in modules.values() for p in trainable(module).values()]]
        optimizer = torch.optim.AdamW([p for g in groups for p in g], lr=phase.learning_rate,
                                      weight_decay=phase.weight_decay)
        rng = lambda: getattr(self.sampler, "rng", None)  # noqa: E731  (a recipe may give the sampler a new one)
        loop = self.loop
        if self._pending is not None:
            loop = self.loop = self.run.restore(self._pending, modules, optimizer, rng(), extra_tensors)
            self._pending, self.resumed_from = None, loop.step
        else:
            loop.phase, loop.phase_step, loop.running = index, 0, {}
            if index and self.run is not None:
                self.run.log({"event": "phase", "phase": index, "step": loop.step})
        save = lambda: self.run.save(loop, modules, optimizer, self.fingerprint, rng(), extra_tensors,  # noqa: E731
                                     {"phase": index, "phase_step": loop.phase_step,
                                      "base_lr": phase.learning_rate, "lr_factor": phase.lr_factor(loop.phase_step)})
        saved_at = loop.step
        bar = tqdm(total=phase.steps, initial=loop.phase_step, desc=phase.label, disable=not self.progress)
        try:
            while loop.phase_step < phase.steps and not loop.stopped:
                if self._out_of_budget():
                    if self.run is not None and saved_at != loop.step:
                        save()
                    return False
                output = step_fn(loop)
                optimizer.zero_grad(set_to_none=True)
                output.loss.backward()
                if phase.max_grad_norm is not None:
                    for group in groups:
                        torch.nn.utils.clip_grad_norm_(group, phase.max_grad_norm)
                lr = phase.learning_rate * phase.lr_factor(loop.phase_step)
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr
                optimizer.step()
                if after_update is not None:
                    with torch.no_grad():
                        after_update(output)
                loop.record(output.logged, output.stage)
                self._steps_here += 1
                label = phase.history_point(loop)
                if label is not None:
                    loss = loop.running.get("loss", math.nan)
                    loop.history.append({"step": label, "stage": output.stage, "loss": round(loss, 4)})
                if on_step_end is not None:
                    on_step_end(loop)
                bar.update(1)
                bar.set_postfix(stage=output.stage, loss=f"{loop.running.get('loss', math.nan):.3f}")
                self._log_progress()
                if self.run is not None and (self._due(self.checkpoint_every) or loop.phase_step == phase.steps
                                             or loop.stopped):
                    save()
                    saved_at = loop.step
        finally:
            bar.close()
        return True

    def _out_of_budget(self) -> bool:
        return ((self.stop_after is not None and self._steps_here >= self.stop_after)
                or (self.stop_at is not None and self.loop.step >= self.stop_at))

    def _due(self, every: int | None) -> bool:
        return every is not None and self.loop.step % every == 0

    def _log_progress(self) -> None:
        if self.run is None or not self._due(self.log_every):
            return
        per_step = (time.perf_counter() - self._started) / self._steps_here
        record = {**self.loop.summary(), "s_per_step": round(per_step, 3)}
        if self.total_steps is not None:
            record["eta_min"] = round(per_step * (self.total_steps - self.loop.step) / 60, 1)
        self.run.log(record)
