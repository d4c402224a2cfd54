"""Models larger than one device: accelerate's big-model machinery places `HookedAudioLM`'s modules.

`from_pretrained(..., device_map="auto" | {module: device})` works in three steps:

1. `resolve_device_map` turns "auto" into a map with `accelerate.infer_auto_device_map` on the model built
   on the meta device (GPUs first, then CPU, then disk; `max_memory` caps each), never splitting the audio
   encoder or a decoder block; a dict is checked to place every weight.
2. Loading puts each weight straight onto its module's device (`device_of`; "disk" modules are read to the CPU).
3. After weight processing, `dispatch` calls `accelerate.dispatch_model`: each placed module gets an
   `AlignDevicesHook` that moves its inputs to its execution device; "disk" modules are written to
   `offload_folder` and loaded only for their forward ("cpu" modules too, when a GPU is the main device).

Hooks, caches and steering then work as on one device: activations live where their module runs, and the
analyses move what they combine. Weight views (`W_U`, `W_Q`, `QK`, ...) of offloaded modules are loaded from the
offload store when read (`materialized`): copies, so editing them in place does not change the model.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import torch
from torch import nn

NO_SPLIT_MODULES = ["AudioEncoder", "DecoderBlock"]
DeviceMap = dict[str, "str | int | torch.device"]


def resolve_device_map(
    model: nn.Module, device_map: str | DeviceMap, dtype: torch.dtype, max_memory: dict | None = None
) -> DeviceMap:
    """The `{module name: device}` map for `model` (built on the meta device)."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import check_device_map

    if device_map == "auto":
        inferred = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=NO_SPLIT_MODULES,
                                         dtype=dtype)
        if set(inferred.values()) == {"disk"}:
            raise ValueError(
                f"max_memory={max_memory} leaves no device room for even the first module: everything would go to "
                "disk; allow more memory (the largest module, the audio encoder or one decoder block, must fit)."
            )
        return dict(inferred)
    if not isinstance(device_map, dict):
        raise ValueError(f"device_map must be 'auto' or a dict of module name -> device, not {device_map!r}.")
    modules = dict(model.named_modules())
    unknown = [name for name in device_map if name not in modules]
    if unknown:
        raise ValueError(
            f"device_map names {unknown}, which are not modules of this model; use names such as 'audio', 'embed', "
            "'blocks.0', 'ln_final', 'unembed' (or '' for all)."
        )
    check_device_map(model, device_map)
    return dict(device_map)


def device_of(name: str, device_map: DeviceMap) -> str | int | torch.device:
    """Where the weight `name` is loaded: its longest module prefix in the map ("disk" is read to the CPU)."""
    best = max((m for m in device_map if m == "" or name == m or name.startswith(m + ".")), key=len, default=None)
    if best is None:
        raise ValueError(f"device_map places no module holding weight {name!r}.")
    device = device_map[best]
    return "cpu" if device == "disk" else device


def dispatch(model: nn.Module, device_map: DeviceMap, offload_folder: str | Path | None) -> nn.Module:
    """Attach accelerate's hooks (and offload "disk" modules to `offload_folder`); returns the model."""
    from accelerate import dispatch_model

    offload_dir = None
    if "disk" in device_map.values():
        if offload_folder is None:
            raise ValueError("device_map puts modules on 'disk': give offload_folder= (a folder for their weights).")
        # accelerate reuses any index.json already in offload_dir (another model's weights, silently): give each
        # model a fresh folder of its own inside offload_folder, removed when the model is garbage-collected.
        Path(offload_folder).mkdir(parents=True, exist_ok=True)
        offload_dir = tempfile.mkdtemp(prefix="lens-audio-offload-", dir=offload_folder)
        weakref.finalize(model, shutil.rmtree, offload_dir, ignore_errors=True)
    dispatch_model(model, device_map, offload_dir=offload_dir)
    model.hf_device_map = dict(device_map)
    return model


def main_device(device_map: DeviceMap) -> str:
    """The device accelerate computes on: the first GPU in the map, else the CPU."""
    gpus = [d for d in device_map.values() if d not in ("cpu", "disk")]
    return str(torch.device(gpus[0] if not isinstance(gpus[0], int) else f"cuda:{gpus[0]}")) if gpus else "cpu"


def materialized(module: nn.Module, name: str = "weight") -> "torch.Tensor | None":
    """`module.<name>`, readable whatever accelerate did with the module.

    A module that `dispatch` offloaded (to disk, or to the CPU behind a GPU) holds its weights on the meta device
    and loads them only for its own forward: for such a module this returns a copy loaded from the offload store
    onto its execution device (accelerate's `align_module_device`), so weight views (`W_U`, `W_Q`, `QK`, ...) read
    the real numbers. Writing into that copy does not change the model.
    """
    tensor = getattr(module, name)
    if tensor is None or tensor.device.type != "meta":
        return tensor
    from accelerate.utils import align_module_device, has_offloaded_params

    if not has_offloaded_params(module):
        raise RuntimeError(
            f"{type(module).__name__}.{name} is on the meta device and no accelerate offload hook can load it: the "
            "model was built without weights; load it with HookedAudioLM.from_pretrained (device_map= to offload)."
        )
    with align_module_device(module):
        return getattr(module, name).detach().clone()


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: accelerate's execution device when it is dispatched, else its weight's device."""
    execution = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    return torch.device(execution) if execution is not None else module.weight.device
