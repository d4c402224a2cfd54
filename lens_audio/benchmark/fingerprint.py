"""What a run manifest knows of the model: a fingerprint of its numbers, and a description of what changes them.

**The fingerprint** (`model_fingerprint`): sha256 over the config (without name, dtype, device and
TransformerLens's hook switches), the tokenizer's vocabulary and chat template, the feature extractor's settings,
every module's plain settings (public attributes that are numbers, strings or bools, e.g. a norm's `eps`), and for
each parameter and buffer its name, dtype, shape and a digest of its values (`tensor_digest`): the sum of its
bytes read as 64-bit integers, a second sum with each word weighted by a mixed function of its position
(wrap-around integer arithmetic: exact and order-free, so the same on any device and thread count), and 256
evenly spaced bytes. Any edit of the weights in memory changes it, a permutation or a sign flip included (the
weighted sum sees where each word sits). It is taken anew for each manifest: nothing is cached.

**The model's state** (`model_state`): what changes the numbers without changing a weight.
- every forward hook and forward pre-hook on any module (a hook point's `add_hook` / `hooks()`, or PyTorch's
  `register_forward_hook` / `register_forward_pre_hook` on any submodule), and PyTorch's global module hooks
  (`register_module_forward_hook`, ...); backward hooks do not fire in a scoring run and are left out;
- a module that describes itself (`manifest_description()`): a spliced SAE, by its settings and its weights'
  digest (`lens_audio.sae.splice`);
- a method replaced on one module (`module.forward = ...`), except accelerate's placement hooks.

A hook is described by what it computes where that can be read cheaply: a function by its module, name, the
digest of its code, its defaults and what its closure holds; a `functools.partial` by its function and
arguments; a dataclass by its fields; anything with a `manifest_description` attribute (a string, or a function
returning one) by that. Values are described when they are numbers, strings, tensors, arrays, or lists, tuples
and dicts of them. Anything else (a closure over an object, a bound method, a callable object) cannot be
described: it is listed as such, and a run file refuses to resume while the model carries it
(`RunManifest.undescribed`). A function's globals are not read: a hook reading a global that changed is not seen.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn.modules import module as torch_module

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

UNDESCRIBED = "cannot be described"  # the words marking a hook the manifest cannot describe
_CONFIG_SKIPPED = ("model_name", "tokenizer_name", "dtype", "device", "attn_implementation", "use_attn_result",
                   "use_split_qkv_input", "use_hook_mlp_in", "ungroup_grouped_query_attention")
_MIX = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer (Fibonacci hashing)
_CHUNK = 1 << 22  # words per weighted chunk (32 MB of int64)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- weights ---------------------------------------------------------------------------------------------------
def _weights(n: int, device: torch.device) -> torch.Tensor:
    index = torch.arange(n, dtype=torch.int64, device=device)
    mixed = index * _MIX + 1
    return mixed ^ (mixed >> 29)


def tensor_digest(tensor: torch.Tensor) -> str:
    """A tensor's dtype, shape and a digest of its values (see the module docstring); shape only when offloaded."""
    head = f"{tensor.dtype}{tuple(tensor.shape)}"
    if tensor.device.type == "meta" or tensor.numel() == 0:  # offloaded by accelerate, or empty: shape only
        return head + tensor.device.type
    raw = tensor.detach().reshape(-1).view(torch.uint8)
    n_words = raw.numel() // 8
    words = raw[: n_words * 8].view(torch.int64)
    total = int(words.sum()) if n_words else 0
    weighted, chunk_weights = 0, None
    for start in range(0, n_words, _CHUNK):
        part = words[start : start + _CHUNK]
        if chunk_weights is None or chunk_weights.numel() < part.numel():
            chunk_weights = _weights(min(_CHUNK, n_words), part.device)
        chunk = start // _CHUNK
        weighted += int((part * chunk_weights[: part.numel()]).sum()) + chunk * 0x5BD1E995 * int(part.sum())
    tail = raw[n_words * 8 :].cpu().tolist()
    sample = raw[:: max(1, raw.numel() // 256)][:256].cpu().tolist()  # 256 evenly spaced bytes
    return f"{head}{total}:{weighted % 2**64}{tail}{sample}"


def _plain_settings(module: torch.nn.Module) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}


def model_fingerprint(model: HookedAudioLM) -> str:
    """16 hex digits identifying the model's config, tokenizer, module settings and weight values."""
    hasher = hashlib.sha256()
    config = {k: v for k, v in dataclasses.asdict(model.cfg).items() if k not in _CONFIG_SKIPPED}
    hasher.update(json.dumps(config, sort_keys=True, default=str).encode())
    processor = getattr(model, "processor", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        vocab = sorted(tokenizer.get_vocab().items())
        templates = [getattr(processor, "chat_template", None), getattr(tokenizer, "chat_template", None)]
        hasher.update(json.dumps([vocab, templates], default=str).encode())
    features = getattr(processor, "feature_extractor", None)
    if features is not None:  # sampling rate, mel bins, hop, window: how audio becomes features
        settings = {k: v for k, v in features.to_dict().items() if isinstance(v, (str, int, float, bool, type(None)))}
        hasher.update(json.dumps(settings, sort_keys=True).encode())
    modules = {name: _plain_settings(m) for name, m in model.named_modules()}
    hasher.update(json.dumps({k: v for k, v in modules.items() if v}, sort_keys=True, default=str).encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        hasher.update(f"{name}:{tensor_digest(tensor)};".encode())
    return hasher.hexdigest()[:16]


# --- hooks and other changes -------------------------------------------------------------------------------------
class _Undescribed(Exception):
    """A value or callable whose effect cannot be read cheaply."""


def describe_value(value: Any, depth: int = 0) -> Any:
    """`value` as JSON (tensors and arrays by their digest); `_Undescribed` for anything else."""
    if depth > 6:
        raise _Undescribed("nested too deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return {"tensor": tensor_digest(value)}
    if isinstance(value, np.ndarray):
        return {"array": tensor_digest(torch.from_numpy(np.ascontiguousarray(value)))}
    if isinstance(value, (list, tuple)):
        return [describe_value(v, depth + 1) for v in value]
    if isinstance(value, dict) and all(isinstance(k, (str, int)) for k in value):
        return {str(k): describe_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    if callable(value) and not isinstance(value, torch.nn.Module):
        return describe_callable(value, depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__qualname__: {f.name: describe_value(getattr(value, f.name), depth + 1)
                                           for f in dataclasses.fields(value)}}
    raise _Undescribed(f"it holds a {type(value).__name__}")


def _code(code: types.CodeType) -> Any:
    consts = [_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return [code.co_code.hex(), consts, list(code.co_names)]


def describe_callable(fn: Any, depth: int = 0) -> str:
    """What `fn` computes, as JSON (see the module docstring); `_Undescribed` if that cannot be read cheaply."""
    own = getattr(fn, "manifest_description", None)
    if own is not None:
        return own() if callable(own) else str(own)
    if isinstance(fn, functools.partial):
        values = _digest([describe_value(fn.args, depth + 1), describe_value(fn.keywords, depth + 1)])
        return f"partial of {describe_callable(fn.func, depth + 1)} (arguments {values})"
    if isinstance(fn, types.FunctionType):
        cells = [describe_value(c.cell_contents, depth + 1) for c in fn.__closure__ or ()]
        code = _digest([_code(fn.__code__), cells, describe_value(fn.__defaults__, depth + 1),
                        describe_value(fn.__kwdefaults__, depth + 1)])
        return f"{fn.__module__}.{fn.__qualname__} (code and values {code})"
    if isinstance(fn, types.BuiltinFunctionType):
        return f"{getattr(fn, '__module__', None)}.{fn.__qualname__}"
    if dataclasses.is_dataclass(fn) and not isinstance(fn, type):
        return f"{type(fn).__module__}.{type(fn).__qualname__} (fields {_digest(describe_value(fn, depth))})"
    if isinstance(fn, types.MethodType):
        raise _Undescribed(f"a method of a {type(fn.__self__).__name__}")
    raise _Undescribed(f"a {type(fn).__name__} object")


def _describe_hook(where: str, kind: str, fn: Any) -> str | None:
    """One line for a hook (None: part of something described elsewhere, e.g. a splice's own hooks)."""
    try:
        described = describe_callable(fn)
    except _Undescribed as why:
        name = getattr(fn, "__qualname__", type(fn).__name__)
        return f"{where}: {kind} {name!r} {UNDESCRIBED} ({why})"
    return f"{where}: {kind} {described}" if described else None


def _user_hooks(module: torch.nn.Module) -> dict[int, Any]:
    """A hook point's hooks by PyTorch id -> the function the user gave `add_hook` (not TransformerLens's wrapper)."""
    found = {}
    for handle in getattr(module, "fwd_hooks", None) or ():
        user = getattr(handle, "user_hook", None)
        if user is not None:
            found[handle.hook.id] = user
    return found


def model_state(model: torch.nn.Module) -> list[str]:
    """One line per hook, spliced SAE or replaced method that changes the model's numbers (see the module
    docstring); lines of what cannot be described contain `UNDESCRIBED`. Empty for a model as loaded."""
    lines: list[str] = []
    for kind, table in (("global forward hook", torch_module._global_forward_hooks),
                        ("global forward pre-hook", torch_module._global_forward_pre_hooks)):
        lines += [line for fn in table.values() if (line := _describe_hook("every module", kind, fn))]
    for name, module in model.named_modules():
        where = name or "the model"
        describe = getattr(module, "manifest_description", None)
        if callable(describe):
            lines.append(f"{where}: {describe()}")
        user = _user_hooks(module)
        for kind, table in (("forward hook", module._forward_hooks), ("forward pre-hook", module._forward_pre_hooks)):
            for hook_id, fn in table.items():
                if line := _describe_hook(where, kind, user.get(hook_id, fn)):
                    lines.append(line)
        placed = hasattr(module, "_hf_hook") and "_old_forward" in vars(module)  # accelerate's device placement
        for attribute, value in vars(module).items():
            if placed and attribute == "forward":
                continue
            if callable(value) and callable(getattr(type(module), attribute, None)) \
                    and not isinstance(value, torch.nn.Module):
                if line := _describe_hook(where, f"replaced method {attribute}", value):
                    lines.append(line)
    return lines
