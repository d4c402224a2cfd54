"""A training state's files: tensors in safetensors, everything else in JSON; no pickle, written or read.

One state folder (`state-NNNNNN/` of a run folder) holds:

- `weights.safetensors`: the trainable parameters of each trained module, keyed `<module>.<parameter>`
  (`model.`, `probes.`, `sae.`), and any extra tensors the recipe keeps (`extra.<name>`, such as an SAE's
  dead-latent counters). Frozen parameters and buffers are not saved: the recipe rebuilds them (the frozen
  audio side is copied from a shipped checkpoint);
- `adam_exp_avg.safetensors`, `adam_exp_avg_sq.safetensors`: AdamW's moments, keyed by the parameter's index in
  the optimizer (two files so that each stays small);
- `state.json`: `format`, the recipe and its settings, the inputs' fingerprint, the loop's own state (step,
  phase, running averages, history, monitor results), the optimizer's step counts and hyper-parameters, the
  schedule's position, and the random states: torch's generator as base64 of `torch.get_rng_state()`'s bytes
  (and CUDA's, when CUDA was in use), the data sampler's numpy `bit_generator.state` as it is (a dict of ints).

A state written by lens_audio before this format (with `rest.pt`, a pickle) is refused with a message saying so.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

FORMAT = "lens_audio.training.state/1"
MOMENTS = ("exp_avg", "exp_avg_sq")
PICKLE_ERA = "rest.pt"  # what states written before FORMAT held: optimizer steps, scheduler and RNG as a pickle


class StateFormatError(ValueError):
    """A state folder this lens_audio cannot read (an older format, or not a state at all)."""


def rng_to_json(state: torch.Tensor) -> str:
    """A torch generator state (a uint8 tensor) as base64 text."""
    return base64.b64encode(state.cpu().numpy().tobytes()).decode("ascii")


def rng_from_json(text: str) -> torch.Tensor:
    """The uint8 tensor `rng_to_json` encoded."""
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def random_states(sampler_rng: Any = None) -> dict[str, Any]:
    """torch's (and CUDA's, when in use) generator states and a numpy generator's state, JSON-safe."""
    states: dict[str, Any] = {"torch": rng_to_json(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = [rng_to_json(s) for s in torch.cuda.get_rng_state_all()]
    if sampler_rng is not None:
        states["sampler"] = sampler_rng.bit_generator.state
    return states


def set_random_states(states: dict[str, Any], sampler_rng: Any = None) -> None:
    """Restore what `random_states` returned (CUDA's only where CUDA is available)."""
    torch.set_rng_state(rng_from_json(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([rng_from_json(s) for s in states["cuda"]])
    if sampler_rng is not None:
        if "sampler" not in states:
            raise StateFormatError("the state holds no data sampler's random state, but this run draws from one.")
        sampler_rng.bit_generator.state = states["sampler"]


def trainable(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """A module's parameters that training changes, by name."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def optimizer_to_json(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """An Adam(W) optimizer's state split into JSON (hyper-parameters, step counts) and tensors (the moments)."""
    state = optimizer.state_dict()
    steps = {str(i): float(s["step"]) for i, s in state["state"].items()}
    dtypes = {str(s["step"].dtype).removeprefix("torch.") for s in state["state"].values()}
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()} for group in state["param_groups"]]
    moments = {m: {str(i): s[m] for i, s in state["state"].items()} for m in MOMENTS}
    return {"param_groups": groups, "steps": steps, "step_dtype": dtypes.pop() if dtypes else "float32"}, moments


def optimizer_from_json(saved: dict[str, Any], moments: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    """The `state_dict` that `optimizer_to_json` split, for `optimizer.load_state_dict`."""
    dtype = getattr(torch, saved["step_dtype"])
    state = {int(i): {"step": torch.tensor(step, dtype=dtype), **{m: moments[m][i] for m in MOMENTS}}
             for i, step in saved["steps"].items()}
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group
              for group in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


def write_state(folder: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                meta: dict[str, Any], extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write a state into `folder` (a staging folder: `RunFolder.save` renames it into place), every file synced."""
    weights = {f"{name}.{p_name}": p for name, module in modules.items() for p_name, p in trainable(module).items()}
    weights.update({f"extra.{name}": t for name, t in (extra_tensors or {}).items()})
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, folder / "weights.safetensors")
    optimizer_json, moments = optimizer_to_json(optimizer)
    for moment, tensors in moments.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, folder / f"adam_{moment}.safetensors")
    (folder / "state.json").write_text(json.dumps({"format": FORMAT, **meta, "optimizer": optimizer_json}, indent=1))
    for path in folder.iterdir():  # on disk before the rename makes the state the latest
        with path.open("rb") as f:
            os.fsync(f.fileno())


def read_meta(folder: Path) -> dict[str, Any]:
    """`state.json` of a state folder, refusing the pickle-era format and anything that is not a state."""
    if (folder / PICKLE_ERA).exists():
        raise StateFormatError(
            f"this state was written by an older lens_audio with a pickle; {folder} keeps optimizer steps, scheduler "
            f"and random state in {PICKLE_ERA}, which lens_audio no longer reads (no pickle is read anywhere). Its "
            "weights are still readable: export them as a checkpoint (`lens_audio.organisms.workshop_chains.recipe."
            "export_latest(<run folder>, <out>)`), or start the run again in a new folder.")
    path = folder / "state.json"
    if not path.is_file():
        raise StateFormatError(f"{folder} is not a training state (no state.json).")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise StateFormatError(f"{folder} has state format {meta.get('format')!r}; this lens_audio reads {FORMAT!r}.")
    return meta


def load_state(folder: Path, meta: dict[str, Any], modules: dict[str, torch.nn.Module],
               optimizer: torch.optim.Optimizer, extra_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Load a state's weights, extra tensors and optimizer into the given objects (in place)."""
    weights = load_file(folder / "weights.safetensors")
    for name, module in modules.items():
        params = trainable(module)
        saved = {k[len(name) + 1:] for k in weights if k.startswith(name + ".")}
        differing = sorted(saved ^ set(params))
        if differing:
            raise StateFormatError(f"{folder} does not match this run's {name}: differing parameters {differing[:5]}")
        with torch.no_grad():
            for p_name, p in params.items():
                p.copy_(weights[f"{name}.{p_name}"])
    for name, tensor in (extra_tensors or {}).items():
        tensor.copy_(weights[f"extra.{name}"])
    moments = {m: load_file(folder / f"adam_{m}.safetensors") for m in MOMENTS}
    optimizer.load_state_dict(optimizer_from_json(meta["optimizer"], moments))
