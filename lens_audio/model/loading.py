"""Loading checkpoints of the families in `lens_audio.model.family` into `HookedAudioLM`: Hub ids, local folders,
models in memory. Parts a checkpoint holds that the port does not run (a whole Qwen Omni model's talker and
token2wav, its thinker's vision tower) are skipped without being read (`weights.unported`).

Safety: weights are read from safetensors only (no pickle) and no remote
code is ever run. Memory: the model is first built on the `meta` device
(no storage), then each tensor is read from its shard, converted to the
target dtype and device, and put in place, so the peak stays near the size
of the converted weights rather than twice it.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch
from torch import Tensor, nn

from lens_audio.inputs import omni, voxtral
from lens_audio.model import dispatch
from lens_audio.model.config import AudioLMConfig
from lens_audio.model.family import KNOWN_HUB_IDS, family_of
from lens_audio.model.registry import named_checkpoint, registered_names
from lens_audio.model.weights import hf_key_to_lens, split_fused_experts, unported

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]
# Mistral's own single-file format, shipped beside the Hugging Face shards of Voxtral: other key names, never read.
_MISTRAL_NATIVE = ("consolidated.safetensors", "params.json")


def load_pretrained(
    cls: type["HookedAudioLM"],
    name_or_path: str | Path,
    dtype: torch.dtype | str,
    device: str | torch.device,
    attn_implementation: str,
    local_files_only: bool | None,
    device_map: "str | dispatch.DeviceMap | None" = None,
    max_memory: dict | None = None,
) -> tuple["HookedAudioLM", "dispatch.DeviceMap | None"]:
    """The loaded model, and the resolved device map when `device_map` is given (each weight is then already on
    its module's device; `dispatch.dispatch` attaches accelerate's hooks once the weights are processed)."""
    if device_map is None:
        check_device(device)
    folder = resolve_checkpoint(name_or_path, local_files_only)
    cfg = read_config(folder, str(name_or_path)).replace(
        dtype=parse_dtype(dtype), device=str(device), attn_implementation=attn_implementation
    )
    files = weight_files(folder)
    processor, problem = load_processor(folder)
    with torch.device("meta"):
        model = cls(cfg, processor=processor)
    model.processor_problem = problem
    resolved = None
    if device_map is not None:
        resolved = dispatch.resolve_device_map(model, device_map, cfg.dtype, max_memory)
        for target in set(resolved.values()) - {"disk"}:
            check_device(target if not isinstance(target, int) else f"cuda:{target}")
        model.cfg.device = dispatch.main_device(resolved)
    placement = device if resolved is None else (lambda name: dispatch.device_of(name, resolved))
    check_vocab(cfg, processor, str(folder))
    assign_weights(model, iter_safetensors(files, skip=unported), cfg.dtype, placement, str(name_or_path))
    return model.eval(), resolved


def load_from_hf_model(cls: type["HookedAudioLM"], hf_model: nn.Module, processor: Any) -> "HookedAudioLM":
    config = getattr(hf_model, "config", None)
    cfg = AudioLMConfig.from_hf_config(config, model_name=getattr(config, "name_or_path", "") or "hf-model")
    first = next(hf_model.parameters())
    cfg = cfg.replace(dtype=first.dtype, device=str(first.device))
    check_vocab(cfg, processor, "the Hugging Face model and its processor")
    with torch.device("meta"):
        model = cls(cfg, processor=processor)
    assign_weights(model, hf_model.state_dict().items(), None, None, "the Hugging Face model")
    return model.train(hf_model.training)


def resolve_checkpoint(name_or_path: str | Path, local_files_only: bool | None = None) -> Path:
    """A local folder holding the checkpoint: a registered name (`model.registry`), the path itself, or the Hub id's
    snapshot."""
    named = named_checkpoint(str(name_or_path))
    if named is not None:
        return named
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(
            f"{name_or_path!r} is a file; give the checkpoint's folder (with config.json and *.safetensors)."
        )
    name = str(name_or_path)
    if not _HUB_ID.match(name):
        raise FileNotFoundError(
            f"{name!r} is neither a local folder nor a Hugging Face Hub id (owner/name). "
            f"Known checkpoints: {', '.join(repr(n) for n in registered_names())} (shipped), "
            f"{', '.join(KNOWN_HUB_IDS)}."
        )
    return _download(name, local_files_only)


def _download(repo_id: str, local_files_only: bool | None) -> Path:
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    attempts = [True] if (local_files_only or offline) else ([True, False] if local_files_only is None else [False])
    error: Exception | None = None
    for cached_only in attempts:
        try:
            return Path(
                snapshot_download(
                    repo_id, allow_patterns=_HUB_FILES, ignore_patterns=list(_MISTRAL_NATIVE),
                    local_files_only=cached_only,
                )
            )
        except Exception as exc:  # huggingface_hub raises several types for "not found" and "offline"
            error = exc
    raise FileNotFoundError(
        f"Could not find {repo_id!r} in the local Hugging Face cache"
        + ("" if attempts == [True] else " nor download it")
        + f" ({type(error).__name__}: {error}). Download it where there is internet "
        f"(`huggingface-cli download {repo_id}`) and copy the cache, or pass the checkpoint's local folder."
    ) from error


def read_config(folder: Path, name: str) -> AudioLMConfig:
    """Parse config.json, refusing other architectures before anything is allocated."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        if not list(folder.glob("*.safetensors")):
            _refuse_pickle_only(folder)
        raise FileNotFoundError(f"{name!r}: no config.json in {folder}; is this a Hugging Face checkpoint folder?")
    family = family_of(read_json_object(config_file).get("model_type"), name)
    from transformers import AutoConfig

    try:  # the family's own config class (never remote code)
        hf_config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # transformers raises several types for an inconsistent config
        message = " ".join(str(exc).split())
        raise ValueError(
            f"{config_file} is not a valid {family.name} config ({type(exc).__name__}: {message}); fix it."
        ) from exc
    return AudioLMConfig.from_hf_config(hf_config, model_name=name)


def load_processor(folder: Path) -> tuple[Any, str | None]:
    """The checkpoint's processor, or None (with a warning) and the reason when its files are absent or it cannot be
    built; a Voxtral checkpoint's tekken.json without mistral-common names the install command."""
    has_tokenizer = any((folder / f).exists() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json"))
    has_features = any((folder / f).exists() for f in ("preprocessor_config.json", "processor_config.json"))
    if voxtral.has_tekken(folder):
        has_tokenizer = True
        missing = voxtral.mistral_common_missing()
        if missing is not None:
            warnings.warn(f"{folder}: {missing}", stacklevel=3)
            return None, missing
    if not (has_tokenizer and has_features):
        reason = f"{folder} has no processor files; model.to_batch will need model.processor set by hand."
        warnings.warn(reason, stacklevel=3)
        return None, reason
    from transformers import AutoProcessor

    family = family_of(read_json_object(folder / "config.json").get("model_type"), str(folder))
    damaged = damaged_processor_file(folder)
    if damaged is not None:
        warnings.warn(damaged, stacklevel=3)
        return None, damaged
    try:
        if family.name in omni.OMNI_TOKENS:  # audio and text only: no image/video processor (nor torchvision)
            return omni.load_omni_processor(folder, family.name), None
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=False)
        warn_without_chat_template(folder, processor)
        return processor, None
    except (ImportError, ValueError, OSError) as exc:
        reason = (f"{folder}: its processor could not be built ({type(exc).__name__}: {exc}); model.to_batch will "
                  "need model.processor set by hand.")
        warnings.warn(reason, stacklevel=3)
        return None, reason


PROCESSOR_JSON = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "added_tokens.json",
                  "special_tokens_map.json", "preprocessor_config.json", "processor_config.json", "chat_template.json")


def damaged_processor_file(folder: Path) -> str | None:
    """Why the checkpoint's processor cannot be built, naming the file, when one of its JSON files does not parse
    (a truncated copy, a download cut off); None when they all parse."""
    for name in PROCESSOR_JSON:
        path = folder / name
        if not path.is_file():
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            return (f"{path} is not valid JSON ({exc}; {path.stat().st_size} bytes): the file is truncated or damaged, "
                    "so the checkpoint's processor cannot be built; copy the file again from the checkpoint's source. "
                    "model.to_batch will need model.processor set by hand until then.")
    return None


def warn_without_chat_template(folder: Path, processor: Any) -> None:
    """Warn when the checkpoint brings no chat template of its own, so `question=` prompts use the processor class's
    built-in default (or none): the prompts may not be those the model was trained on."""
    if voxtral.is_tekken_processor(processor):  # mistral-common renders Voxtral's instruct format itself
        return
    configs = [folder / name for name in ("tokenizer_config.json", "processor_config.json")]
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file() or any(
        path.is_file() and "chat_template" in read_json_object(path) for path in configs
    ):
        return
    used = getattr(processor, "chat_template", None)
    warnings.warn(
        f"{folder} has no chat template of its own (chat_template.jinja, chat_template.json, or a chat_template entry "
        f"in tokenizer_config.json); question= prompts use "
        + (f"{type(processor).__name__}'s built-in default" if used else "none, so only raw prompt= works")
        + ", which may not be the template the model was trained with. Add the checkpoint's chat_template.jinja.",
        stacklevel=4,
    )


def check_vocab(cfg: AudioLMConfig, processor: Any, source: str) -> None:
    """Refuse a tokenizer with more tokens than the embedding has rows (its last ids would have no embedding)."""
    tokenizer = getattr(processor, "tokenizer", None)
    try:
        size = len(tokenizer) if tokenizer is not None else None
    except TypeError:  # a tokenizer without a length (mistral-common's Tekken reports its size elsewhere)
        size = None
    if size is not None and size > cfg.d_vocab:
        raise ValueError(
            f"{source}: the tokenizer has {size} tokens but the model's embedding has {cfg.d_vocab} rows (vocab_size "
            f"in config.json), so token ids {cfg.d_vocab}-{size - 1} have no embedding; the tokenizer files and the "
            "weights come from different checkpoints: use the tokenizer saved with these weights."
        )


def weight_files(folder: Path) -> list[Path]:
    """The safetensors shards of a checkpoint, refusing pickle-only checkpoints."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no weight_map object (tensor name -> shard file); re-download it.")
        shards = sorted(set(map(str, weight_map.values())))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder}: the shard index lists {missing}, which are missing; re-download the checkpoint."
            )
        return [folder / s for s in shards]
    files = sorted(f for f in folder.glob("*.safetensors") if f.name not in _MISTRAL_NATIVE)
    if files:
        return files
    if (folder / _MISTRAL_NATIVE[0]).is_file():
        raise ValueError(
            f"{folder} holds only Mistral's native consolidated.safetensors; HookedAudioLM reads the Hugging Face "
            "format (config.json and model-*.safetensors), which the Hub repository also ships: download those."
        )
    _refuse_pickle_only(folder)
    raise FileNotFoundError(f"{folder} has no *.safetensors weights; is this a Hugging Face checkpoint folder?")


def _refuse_pickle_only(folder: Path) -> None:
    """Name pickle weights (*.bin/*.pt/*.pth) as the reason a folder without safetensors cannot be loaded."""
    if list(folder.glob("*.bin")) or list(folder.glob("*.pt")) or list(folder.glob("*.pth")):
        raise ValueError(
            f"{folder} holds only pickle weights (*.bin/*.pt), which lens_audio refuses to load (pickle can run code). "
            "Convert them once with transformers: <Family>ForConditionalGeneration.from_pretrained(path)"
            ".save_pretrained(new_path) (e.g. Qwen2AudioForConditionalGeneration)."
        )


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def iter_safetensors(files: Iterable[Path], skip: Callable[[str], bool] | None = None) -> Iterator[tuple[str, Tensor]]:
    """Yield (key, tensor) one tensor at a time, each read into its own buffer.

    Reading with plain file reads instead of a memory map keeps the shard's
    pages out of the process: only the tensor being converted exists twice,
    so loading peaks at the converted weights plus one source tensor. The
    format (an 8-byte header length, a JSON header of dtype/shape/offsets,
    then raw little-endian data) is safetensors' documented layout. Each
    shard's header is checked whole against the file's size before any tensor
    is read (`read_safetensors_header`), so a damaged header allocates nothing.
    """
    for file in files:
        with open(file, "rb") as handle:
            data_start, tensors = read_safetensors_header(file, handle)
            for key, (dtype, shape, begin, end) in tensors.items():
                if skip is not None and skip(key):  # e.g. an Omni model's talker: never read
                    continue
                buffer = bytearray(end - begin)
                handle.seek(data_start + begin)
                if handle.readinto(buffer) != len(buffer):
                    raise ValueError(f"{file} is truncated: tensor {key!r} ends past the end of the file.")
                tensor = torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
                yield key, tensor.reshape(shape)


MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header


def read_safetensors_header(
    file: Path, handle: BinaryIO
) -> tuple[int, dict[str, tuple[torch.dtype, list[int], int, int]]]:
    """(offset of the data, {key: (dtype, shape, begin, end)}), every entry checked against the file's size.

    Checked before anything is allocated: the header length fits the file; each tensor has a known dtype, a shape
    of non-negative integers and offsets inside the data whose length is the shape's size times the dtype's.
    """
    size = os.fstat(handle.fileno()).st_size
    prefix = handle.read(8)
    header_size = int.from_bytes(prefix, "little")
    if len(prefix) < 8 or header_size > min(size - 8, MAX_HEADER_BYTES):
        raise ValueError(
            f"{file} is not a valid safetensors file: its header claims {header_size} bytes but the file has {size}; "
            "it is damaged or not safetensors: re-download it."
        )
    try:
        header = json.loads(handle.read(header_size))
    except ValueError as exc:
        raise ValueError(f"{file} is not a valid safetensors file (unreadable header).") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{file} is not a valid safetensors file (its header is not a JSON object).")
    data_start, data_size = 8 + header_size, size - 8 - header_size
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        problem = _header_problem(info, data_size)
        if problem:
            raise ValueError(f"{file}: tensor {key!r} {problem}; the file is damaged: re-download it.")
        tensors[key] = (_SAFETENSORS_DTYPES[info["dtype"]], list(info["shape"]), *info["data_offsets"])
    return data_start, tensors


def _header_problem(info: Any, data_size: int) -> str | None:
    """What is wrong with one tensor's header entry (None if nothing)."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        return f"has header entry {info!r}, not dtype, shape and data_offsets"
    dtype = _SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        return f"has dtype {info['dtype']}, which lens_audio cannot read"
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        return f"has shape {shape!r}, not a list of non-negative integers"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        return f"has data_offsets {offsets!r}, outside the file's {data_size} bytes of data"
    expected = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
    if offsets[1] - offsets[0] != expected:
        return (f"spans {offsets[1] - offsets[0]} bytes but its shape {shape} of {info['dtype']} needs {expected}")
    return None


def read_json_object(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file as a dict; an error naming the file if it is not JSON or not an object."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix it or re-download the checkpoint.") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not a {type(data).__name__}; re-download the checkpoint.")
    return data


def assign_weights(
    model: "HookedAudioLM",
    tensors: Iterable[tuple[str, Tensor]],
    dtype: torch.dtype | None,
    device: "str | torch.device | Callable[[str], Any] | None",
    source: str,
) -> None:
    """Put each (Hugging Face key, tensor) into the meta-initialised `model`, converting on the way.

    `device` is one device for all, or a function of the parameter name (a device map's placement)."""
    expected = {name: p.shape for name, p in model.named_parameters()}
    keep_float32 = {"audio.W_pos"} if model.cfg.audio.fp32_positions else set()
    seen: set[str] = set()
    for key, tensor in split_fused_experts(tensors):  # transformers' in-memory MoE experts -> per-expert keys
        if unported(key):  # parts the port does not run (an Omni thinker's vision tower, ...)
            continue
        try:
            name = hf_key_to_lens(key)
        except KeyError:
            raise ValueError(
                f"{source} has a weight {key!r} that is not part of a {model.cfg.family} model."
            ) from None
        if name not in expected:
            raise ValueError(
                f"{source} has a weight {key!r} that the model built from config.json has no place for (it has "
                f"{model.cfg.n_layers} decoder and {model.cfg.audio.n_layers} audio encoder layers); the config and "
                "the weights disagree: fix num_hidden_layers / encoder_layers in config.json."
            )
        if tensor.shape != expected[name]:
            raise ValueError(
                f"{source}: weight {key!r} has shape {tuple(tensor.shape)} but config.json implies "
                f"{tuple(expected[name])}; the config and the weights disagree."
            )
        if not tensor.is_floating_point():
            raise ValueError(
                f"{source}: weight {key!r} is stored as {str(tensor.dtype).removeprefix('torch.')}; lens_audio runs "
                "floating-point weights only (float32, float16 or bfloat16). A quantized checkpoint (int8, 4-bit, "
                "GPTQ/AWQ) must be dequantized first: load the original float checkpoint."
            )
        if dtype is not None:
            tensor = tensor.to(dtype=torch.float32 if name in keep_float32 else dtype)
        if device is not None:
            tensor = tensor.to(device=device(name) if callable(device) else device)
        module_name, attr = name.rsplit(".", 1)
        # Trainable, as in TransformerLens: gradients (bwd hooks, attribution) work; run under torch.no_grad() to
        # skip them.
        setattr(model.get_submodule(module_name), attr, nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))
        seen.add(name)
        del tensor
    missing = sorted(set(expected) - seen)
    if missing:
        raise ValueError(
            f"{source} is missing {len(missing)} weights, e.g. {missing[:5]}; the checkpoint is incomplete."
        )


def check_device(device: str | torch.device) -> None:
    """Refuse a device this machine does not have, before anything is read."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a torch device; use e.g. 'cpu', 'cuda' or 'cuda:1'.") from exc
    available = {"cuda": torch.cuda.is_available, "mps": lambda: torch.backends.mps.is_available()}
    if kind in available and not available[kind]():
        raise ValueError(
            f"device {device!r} is not available on this machine (no {kind.upper()} support in this torch); "
            "use --device cpu / device='cpu'."
        )


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype {dtype!r} is not a torch floating-point dtype; use e.g. 'float32' or 'bfloat16'.")
    return resolved
