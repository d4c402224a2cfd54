"""The one training loop and run folder (`lens_audio.train`): the loop's arithmetic against AdamW written out by
hand, a resumed run equal to an uninterrupted one across phases, states in safetensors + JSON only (no pickle
written or read), atomic and kill-safe, and clear refusals (older pickle states, other settings, other inputs)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_audio.train import run_folder, state_files
from lens_audio.train.loop import Phase, StepOutput, Trainer, warmup_cosine
from lens_audio.train.run_folder import ResumeMismatch, RunFolder, default_run_folder
from lens_audio.train.state_files import StateFormatError

SETTINGS = {"seed": 0, "steps": 9, "checkpoint_every": 2}


class Toy:
    """A run of two phases over a linear model (the probe joins in phase 1, with a fresh optimizer): batches from
    a numpy generator and noise from torch's, so both random states matter on resuming."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(4, 3).double()
        self.x, self.y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 3, dtype=torch.float64)
        self.rng = np.random.default_rng(seed)
        self.probe: torch.nn.Module | None = None

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(self.rng.integers(len(self.x), size=8))
        return self.x[rows] + 0.1 * torch.randn(8, 4, dtype=torch.float64), self.y[rows]

    def step(self, loop) -> StepOutput:
        x, y = self.batch()
        out = self.model(x)
        loss = 30 * ((out - y) ** 2).mean()  # large enough that clipping acts
        if self.probe is None:
            return StepOutput(loss, {"loss": loss.item()}, stage=1 if loop.step < 3 else 2)
        aid = (self.probe(out) ** 2).mean()
        return StepOutput(loss + 0.5 * aid, {"loss": loss.item(), "aid_loss": aid.item()}, stage=3)

    def train(self, folder: Path | None, stop_after: int | None = None, **kwargs) -> Trainer | None:
        run = RunFolder(folder, "toy", SETTINGS) if folder is not None else None
        trainer = Trainer(run, "inputs-1", sampler=self, progress=False, checkpoint_every=2, log_every=1,
                          stop_after=stop_after, total_steps=9, **kwargs)
        if not trainer.run_phase(0, Phase(5, 0.05, warmup_steps=2), {"model": self.model}, self.step):
            return None
        self.rng = np.random.default_rng(7)  # phase 1: a fresh sampler and probe, as the clip-set recipe's stage 3
        torch.manual_seed(7)
        self.probe = torch.nn.Linear(3, 2).double()
        modules = {"model": self.model, "probe": self.probe}
        groups = [list(self.model.parameters()), list(self.probe.parameters())]
        if not trainer.run_phase(1, Phase(4, 0.02, warmup_steps=1, history="index", history_every=2), modules,
                                 self.step, clip_groups=groups):
            return None
        return trainer

    def weights(self) -> dict[str, torch.Tensor]:
        return {**{f"model.{k}": v for k, v in self.model.state_dict().items()},
                **{f"probe.{k}": v for k, v in self.probe.state_dict().items()}}


def test_warmup_cosine_at_known_steps():
    assert warmup_cosine(0, 2, 4) == 0.5 * 1.0  # half the warmup, cosine at its top
    assert warmup_cosine(1, 2, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine(2, 2, 4) == pytest.approx(0.5) and warmup_cosine(4, 2, 4) == pytest.approx(0.0)
    assert Phase(10, 1e-3).lr_factor(7) == 1.0, "no warmup: a constant rate"


def test_the_loop_equals_adamw_with_clipping_and_the_schedule_written_out_by_hand():
    toy = Toy()
    start = {k: v.detach().clone() for k, v in toy.model.named_parameters()}
    phase = Phase(4, 0.05, warmup_steps=2, weight_decay=0.01, max_grad_norm=1.0)
    trainer = Trainer(None, progress=False)
    assert trainer.run_phase(0, phase, {"model": toy.model}, toy.step)

    # the second way: the same draws, gradients by autograd, then clipping, schedule and AdamW by hand
    again = Toy()
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    norms = []
    for t in range(4):
        x, y = again.batch()
        loss = 30 * ((x @ params["weight"].T + params["bias"] - y) ** 2).mean()
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        norm = math.sqrt(sum(float((g**2).sum()) for g in grads.values()))
        norms.append(norm)
        scale = min(1.0, 1.0 / (norm + 1e-6))
        lr = 0.05 * min(1.0, (t + 1) / 2) * 0.5 * (1 + math.cos(math.pi * t / 4))
        with torch.no_grad():
            for k, p in params.items():
                g = grads[k] * scale
                m[k] = 0.9 * m[k] + 0.1 * g
                v2[k] = 0.999 * v2[k] + 0.001 * g**2
                p.mul_(1 - lr * 0.01)
                p.sub_(lr * (m[k] / (1 - 0.9 ** (t + 1))) / ((v2[k] / (1 - 0.999 ** (t + 1))).sqrt() + 1e-8))
    assert max(norms) > 1, "clipping acted"
    for k, p in toy.model.named_parameters():
        assert torch.allclose(p, params[k], rtol=1e-12, atol=1e-14), k
    assert trainer.loop.step == 4 and trainer.loop.stage == 2


def test_resumed_across_phases_equals_uninterrupted_and_a_kill_mid_write_loses_one_state(tmp_path, monkeypatch):
    whole = Toy()
    finished = whole.train(tmp_path / "whole")
    assert finished is not None and finished.loop.step == 9

    cut = Toy()
    assert cut.train(tmp_path / "cut", stop_after=3) is None  # mid phase 0
    assert [p.name for p in (tmp_path / "cut").glob("state-*")] == ["state-000003"]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing a state")

    monkeypatch.setattr(state_files, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        Toy().train(tmp_path / "cut")  # the step-4 state is never written
    monkeypatch.undo()
    (tmp_path / "cut" / (run_folder.STAGING_PREFIX + "left-by-kill-9")).mkdir()
    assert [p.name for p in (tmp_path / "cut").glob("state-*")] == ["state-000003"]
    assert Toy().train(tmp_path / "cut", stop_after=4) is None  # to step 7: across the phase boundary
    latest = json.loads((tmp_path / "cut" / "state-000007" / "state.json").read_text())
    assert (latest["loop"]["phase"], latest["loop"]["phase_step"]) == (1, 2)
    resumed = Toy()
    trainer = resumed.train(tmp_path / "cut")
    assert trainer is not None and trainer.resumed_from == 7
    a, b = whole.weights(), resumed.weights()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights equal uninterrupted weights, bit for bit"
    assert trainer.loop.history == finished.loop.history and trainer.loop.running == finished.loop.running
    assert not list((tmp_path / "cut").glob(run_folder.STAGING_PREFIX + "*"))
    events = [json.loads(line).get("event") for line in (tmp_path / "cut" / "progress.jsonl").read_text().splitlines()]
    assert events.count("start") == 1 and events.count("resume") == 3 and events.count("phase") == 1


def test_states_are_safetensors_and_json_only_and_no_pickle_is_written_or_read(tmp_path, monkeypatch):
    def no_pickle(*args, **kwargs):
        raise AssertionError("a pickle was written or read")

    for module, name in ((torch, "save"), (torch, "load"), (pickle, "dump"), (pickle, "dumps"), (pickle, "load"),
                         (pickle, "loads")):
        monkeypatch.setattr(module, name, no_pickle)
    assert Toy().train(tmp_path / "run", stop_after=6) is None
    assert Toy().train(tmp_path / "run") is not None  # resumed: every state read back
    state = next((tmp_path / "run").glob("state-*"))
    assert sorted(p.name for p in state.iterdir()) == ["adam_exp_avg.safetensors", "adam_exp_avg_sq.safetensors",
                                                        "state.json", "weights.safetensors"]
    meta = json.loads((state / "state.json").read_text())
    assert meta["format"] == state_files.FORMAT and meta["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999]
    assert set(meta["rng"]) >= {"torch", "sampler"} and meta["schedule"]["phase"] == 1
    generator = torch.get_rng_state()
    assert torch.equal(state_files.rng_from_json(state_files.rng_to_json(generator)), generator)


def test_a_state_with_a_pickle_from_an_older_lens_audio_is_refused_with_what_to_do(tmp_path):
    old = tmp_path / "run" / "state-000050"
    old.mkdir(parents=True)
    (old / "rest.pt").write_bytes(b"\x80\x04pickle")
    (old / "state.json").write_text(json.dumps({"recipe": "toy", "settings": SETTINGS, "loop": {"step": 50}}))
    with pytest.raises(StateFormatError, match="this state was written by an older lens_audio with a pickle; .*"
                                               "export_latest"):
        Toy().train(tmp_path / "run")
    with pytest.raises(StateFormatError, match="older lens_audio with a pickle"):
        RunFolder(tmp_path / "elsewhere", "toy", SETTINGS).adopt(old)
    assert (old / "rest.pt").read_bytes() == b"\x80\x04pickle", "nothing was read or removed"


def test_a_run_starts_from_a_state_kept_elsewhere_and_equals_the_uninterrupted_run(tmp_path):
    whole = Toy()
    whole.train(tmp_path / "whole")
    Toy().train(tmp_path / "first", stop_after=6)
    moved = tmp_path / "kept" / "state-000006"
    moved.parent.mkdir()
    (tmp_path / "first" / "state-000006").rename(moved)  # a state outside any run folder
    run = RunFolder(tmp_path / "second", "toy", SETTINGS)
    assert run.adopt(moved) == tmp_path / "second" / "state-000006"
    with pytest.raises(FileExistsError, match="already holds a state"):
        run.adopt(moved)
    resumed = Toy()
    assert resumed.train(tmp_path / "second").resumed_from == 6
    a, b = whole.weights(), resumed.weights()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_refuses_other_settings_recipes_and_inputs(tmp_path):
    Toy().train(tmp_path / "run", stop_after=2)
    with pytest.raises(ResumeMismatch, match="other settings .*same settings"):
        Trainer(RunFolder(tmp_path / "run", "toy", {**SETTINGS, "seed": 1}), "inputs-1")
    Trainer(RunFolder(tmp_path / "run", "toy", {**SETTINGS, "checkpoint_every": 5}), "inputs-1")  # logistics only
    with pytest.raises(ResumeMismatch, match="holds a 'toy' run, not 'other'"):
        Trainer(RunFolder(tmp_path / "run", "other", SETTINGS), "inputs-1")
    with pytest.raises(ResumeMismatch, match="the toy's inputs differ .*pass exact=False"):
        Trainer(RunFolder(tmp_path / "run", "toy", SETTINGS), "inputs-2", inputs="the toy's inputs",
                mismatch_advice="pass exact=False")
    Trainer(RunFolder(tmp_path / "run", "toy", SETTINGS), "inputs-2", exact=False)  # allowed, with a warning
    logged = [json.loads(line) for line in (tmp_path / "run" / "progress.jsonl").read_text().splitlines()]
    assert logged[-1]["event"] == "warning" and "differ" in logged[-1]["message"]


def test_runs_default_to_the_user_cache_outside_the_package(tmp_path, monkeypatch):
    import lens_audio

    monkeypatch.delenv("LENS_AUDIO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_run_folder("chains") == tmp_path / "cache" / "lens_audio" / "runs" / "chains"
    monkeypatch.setenv("LENS_AUDIO_CACHE", str(tmp_path / "mine"))
    assert default_run_folder("v1") == tmp_path / "mine" / "runs" / "v1"
    monkeypatch.delenv("LENS_AUDIO_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    package = Path(lens_audio.__file__).parent
    assert package not in default_run_folder("clip-sets").parents


def test_a_second_writer_into_the_same_run_folder_is_refused(tmp_path):
    """Two trainers on one folder would interleave states: the second, while the first holds the folder, is refused
    with the folder named; once the first is done, the folder is free again."""
    from lens_audio.train.run_folder import RunFolder, RunLockedError

    first, second = RunFolder(tmp_path / "run", "demo", {}), RunFolder(tmp_path / "run", "demo", {})
    with first.writing():
        with pytest.raises(RunLockedError, match=str(tmp_path / "run")):
            second.begin("inputs")
    assert second.begin("inputs") is None  # free again: a fresh start
