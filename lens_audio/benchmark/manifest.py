"""Run manifests: what made a run file's records (or an experiment's result), and whether a resume may reuse them.

A `RunManifest` holds the model (name or path, and a fingerprint of its config, tokenizer and weights), the prompt
template, the scoring mode (and choice mode's option scoring), the steering (heads, layers, k, beta, gate, steering
source, layer convention, or a described steering function), the seed, dtype, device and the versions of
lens_audio, torch, transformers and TransformerLens. A run file's manifest lies beside it (`<run>.manifest.json`);
each of its records carries the manifest's digest and digests of its item's content (question, choices, answer,
audio file bytes, other fields, rendered prompt), so a resume reuses a record only if both match.

Compared on resume: every field except `RECORDED_ONLY` (the model's name or path, since the fingerprint identifies
the model; the benchmark path, since items are compared by content; batch size, which moves floats by ~1e-7;
the creation time), with lens_audio's full version, torch's and transformers' major.minor, TransformerLens's not
at all (only its hook machinery is used). A field a run's records do not depend on is left `None` (a baseline run
has no heads or beta), so changing that setting reuses the run.

The model is described by its fingerprint (config, tokenizer, module settings, weight values) and by what changes its
numbers without changing a weight (`hooks`: every forward hook on any module, spliced SAEs, replaced methods); both
are taken anew for each manifest (`lens_audio.benchmark.fingerprint`). A hook that cannot be described cheaply (a
closure over an object, a callable object) is listed as such, and a run file refuses to resume while the model
carries one (`undescribed`). The device is compared by its type (`cuda:1` and `cuda:0` are one GPU model's
numbers, so the ranks of a data-parallel run share one manifest).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import importlib.metadata
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lens_audio.benchmark.fingerprint import UNDESCRIBED, model_fingerprint, model_state
from lens_audio.files import escape_html

if TYPE_CHECKING:
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

RECORDED_ONLY = ("model", "benchmark", "batch_size", "created")
DIGEST_KEY, ITEM_KEY = "manifest_digest", "item_digests"  # the record keys binding a record to its manifest, item
FIXES = "rerun with the settings that made them, give this run another output folder (--out), or start over with " \
        "--fresh (API: fresh=True)"
_STEERING_FIELDS = ("heads", "layers", "k_heads", "beta", "gate", "steering_source", "layer_convention", "steering")


class RunMismatchError(ValueError):
    """A run file's records were made under other settings or from other item content than this run's."""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def installed_versions() -> dict[str, str]:
    """Installed versions of lens_audio, torch, transformers and transformer_lens."""
    import lens_audio

    found = {"lens_audio": lens_audio.__version__, "torch": torch.__version__}
    for name, package in (("transformers", "transformers"), ("transformer_lens", "transformer-lens")):
        try:
            found[name] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _compared_versions(found: Mapping[str, str]) -> dict[str, str]:
    minor = lambda v: ".".join(str(v).split("+")[0].split(".")[:2])
    return {"lens_audio": found.get("lens_audio"), "torch": minor(found.get("torch")),
            "transformers": minor(found.get("transformers"))}


OPTIONAL_FIELDS = ("choice_scoring", "answer_match", "split")  # compared only when set


@dataclass(frozen=True)
class RunManifest:
    """What made a run: model, prompt, mode, steering, seed, dtype, device, versions (see the module docstring)."""

    model: str
    model_fingerprint: str
    prompt: str
    mode: str
    dtype: str
    device: str
    versions: dict[str, str] = field(default_factory=installed_versions)
    max_new_tokens: int | None = None  # generate mode only
    # choice mode's option scoring ("mean", "sum", "first_token"); None where the records do not depend on it
    # (generate mode, or every scored option one token); left out of the compared fields when None
    choice_scoring: str | None = None
    # generate mode's answer matching when not MMAU's string match (`benchmark.answer_match`, e.g. "embedding
    # nvidia/NV-Embed-v2"); left out of the compared fields when None
    answer_match: str | None = None
    listening: bool = False
    silence: bool = False
    noise_snr_db: float | None = None  # white noise added to every clip at this SNR (the noise sweep)
    heads: tuple[tuple[int, int], ...] | None = None
    layers: tuple[int, ...] | None = None
    k_heads: int | None = None
    beta: float | None = None
    gate: str | None = None
    steering_source: str | None = None
    layer_convention: str | None = None
    steering: str | None = None  # a steering function not described by the fields above, by name
    hooks: tuple[str, ...] | None = None  # hooks, spliced SAEs, replaced methods when the run began (fingerprint.py)
    seed: int | None = None
    items_digest: str | None = None  # an experiment's manifest: all its items' content, and how many
    n_items: int | None = None
    # the calibration/dev/test split the experiment made or was given (`benchmark.splits.BenchmarkSplit.label`, its
    # digest first); None where the benchmark's own split field holds the stages (left out of the compared fields)
    split: str | None = None
    benchmark: str | None = None
    batch_size: int | None = None
    created: str | None = None

    def __post_init__(self) -> None:
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple((int(a), int(b)) for a, b in self.heads))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(a) for a in self.layers))
        if self.hooks is not None:
            object.__setattr__(self, "hooks", tuple(self.hooks))
        if self.beta is not None:
            object.__setattr__(self, "beta", float(self.beta))
        object.__setattr__(self, "versions", dict(self.versions))

    def replace(self, **changes: Any) -> RunManifest:
        return dataclasses.replace(self, **changes)

    def compared(self) -> dict[str, Any]:
        """The fields a resume compares (JSON values)."""
        data = {k: v for k, v in self.to_json().items() if k not in RECORDED_ONLY}
        for name in OPTIONAL_FIELDS:  # older manifests had no such field: their digests stand
            if data.get(name) is None:
                data.pop(name, None)
        data["versions"] = _compared_versions(self.versions)
        data["device"] = str(self.device).split(":")[0]  # cuda:0 and cuda:1: the same numbers
        return data

    @property
    def undescribed(self) -> list[str]:
        """The hooks (`hooks` lines) the manifest could not describe: a run holding them cannot be resumed."""
        return [line for line in self.hooks or () if UNDESCRIBED in line]

    @property
    def digest(self) -> str:
        """16 hex digits of sha256 over `compared()`: what each record of the run carries."""
        return _digest(self.compared())

    def differences(self, other: RunManifest) -> list[str]:
        """'field ours -> theirs' for each compared field that differs (the fingerprint is reported as `model`)."""
        ours, theirs = self.compared(), other.compared()
        changes = []
        for name in dict.fromkeys([*ours, *theirs]):  # an OPTIONAL_FIELDS field may be in one only
            if name == "versions":
                changes += [f"{k} version {ours[name][k]} -> {theirs[name][k]}" for k in ours[name]
                            if ours[name][k] != theirs[name][k]]
            elif ours.get(name) != theirs.get(name):
                if name == "model_fingerprint":
                    changes.append(f"model {self.model!r} (fingerprint {self.model_fingerprint}) -> {other.model!r} "
                                   f"(fingerprint {other.model_fingerprint})")
                elif name == "hooks":  # each hook whole: the module and what it computes are the point
                    before, after = ours[name] or [], theirs[name] or []
                    changes += [f"hooks: removed {line}" for line in before if line not in after]
                    changes += [f"hooks: added {line}" for line in after if line not in before]
                else:
                    changes.append(f"{name} {_short(ours.get(name))} -> {_short(theirs.get(name))}")
        return changes

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["heads"] = None if self.heads is None else [list(h) for h in self.heads]
        data["layers"] = None if self.layers is None else list(self.layers)
        data["hooks"] = None if self.hooks is None else list(self.hooks)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunManifest:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def html_table(self) -> str:
        """The manifest as an HTML table (every value escaped), for reports."""
        rows = []
        for name, value in self.to_json().items():
            if name == "versions":
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            if value is None:
                continue
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            rows.append(f"<tr><th>{escape_html(name)}</th><td><code>{escape_html(text)}</code></td></tr>")
        return f"<table class='provenance'>{''.join(rows)}</table>"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# --- a run's manifest ----------------------------------------------------------------------------------------------
def prompt_name(template: Any) -> str:
    """A template's name, or a prompt function's module.qualname (its output is compared per item, too)."""
    return template if isinstance(template, str) else f"{template.__module__}.{template.__qualname__}"


def describe_steering(steering: Any) -> dict[str, Any]:
    """Manifest fields of a steering function the caller did not describe: a dataclass (e.g. `AdaptiveSteering`)
    by its fields, a plain function by its name; a closure or other object must be described with `settings=`."""
    if steering is None:
        return {}
    if dataclasses.is_dataclass(steering):
        values = {f.name: getattr(steering, f.name) for f in dataclasses.fields(steering)}
        shown = {k: (_digest(v.tolist()) if isinstance(v, torch.Tensor) else v) for k, v in values.items()}
        fields = {"steering": f"{type(steering).__qualname__}({json.dumps(shown, default=str, sort_keys=True)})"}
        if "layers" in values:
            fields["layers"] = values["layers"]
        if "beta" in values:
            fields["beta"] = values["beta"]
        return fields
    if inspect.isfunction(steering) and not steering.__closure__ and steering.__name__ != "<lambda>":
        return {"steering": f"{steering.__module__}.{steering.__qualname__}"}
    raise ValueError(
        f"the run file must record what steered its records, but steering {steering!r} does not describe itself "
        "(a closure, lambda or callable object); pass run_benchmark(settings={'heads': ..., 'beta': ...}) or "
        "{'steering': 'a description'}, or use a dataclass such as AdaptiveSteering."
    )


def run_manifest(
    model: HookedAudioLM, template: Any, mode: str, *, max_new_tokens: int, listening: bool, silence: bool,
    noise_snr_db: float | None = None, steering: Any, settings: Mapping[str, Any] | None, batch_size: int,
    choice_scoring: str | None = None, answer_match: str | None = None,
) -> RunManifest:
    """The manifest of one `run_benchmark` call; `settings` adds or overrides fields (the experiment passes its
    heads, beta, method options and benchmark path). The model's fingerprint is taken anew each call, so a weight
    edited between two runs is seen."""
    settings = dict(settings or {})
    described = {} if any(k in settings for k in _STEERING_FIELDS) else describe_steering(steering)
    fields: dict[str, Any] = {
        "model": model.cfg.model_name,
        "prompt": prompt_name(template),
        "mode": mode,
        "dtype": str(model.cfg.dtype).replace("torch.", ""),
        "device": str(model.cfg.device),
        "max_new_tokens": max_new_tokens if mode == "generate" else None,
        "choice_scoring": choice_scoring if mode == "choice" else None,
        "answer_match": answer_match if mode == "generate" else None,
        "listening": bool(listening),
        "silence": bool(silence),
        "noise_snr_db": noise_snr_db,
        "hooks": model_state(model) or None,
        "batch_size": batch_size,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **described,
        **settings,
    }
    if "model_fingerprint" not in fields:
        fields["model_fingerprint"] = model_fingerprint(model)
    if fields.get("benchmark") is not None:
        fields["benchmark"] = benchmark_label(fields["benchmark"])
    return RunManifest(**fields)


def benchmark_label(path: str | Path) -> str:
    """A benchmark shipped inside the package by its place in the package (`lens_audio/workshop/...`, the same on
    every machine); any other by its path as given."""
    package = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(package.parent))
    except ValueError:
        return str(path)


# --- items ---------------------------------------------------------------------------------------------------------
_FILE_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | Path) -> str:
    """16 hex digits of sha256 over a file's bytes (remembered per path, size, inode and modification time)."""
    stat = os.stat(path)
    key = (str(path), stat.st_size, stat.st_ino, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
        _FILE_DIGESTS[key] = hasher.hexdigest()[:16]
    return _FILE_DIGESTS[key]


def item_digests(item: Mapping[str, Any], prompt: str) -> dict[str, str]:
    """Digests of an item's question, choices, answer, audio bytes, other fields and rendered prompt."""
    paths = item["audio_path"] if isinstance(item["audio_path"], list) else [item["audio_path"]]
    named = ("id", "question", "choices", "answer", "audio_id", "audio_path")
    return {
        "question": _digest(item.get("question")),
        "choices": _digest(item.get("choices")),
        "answer": _digest(item.get("answer")),
        "audio": _digest([file_digest(p) for p in paths]),
        "fields": _digest({k: v for k, v in item.items() if k not in named}),
        "prompt": _digest(prompt),
    }


def items_digest(digests: Mapping[Any, Mapping[str, str]]) -> str:
    """One digest over every item's content digests (by id)."""
    return _digest(sorted([str(k), dict(v)] for k, v in digests.items()))


def check_items(path: Path, records: Mapping[Any, Mapping[str, Any]], digests: Mapping[Any, Mapping[str, str]]) -> None:
    """Refuse (one line) if a record was made from other content than its item has now, naming what changed."""
    changed: dict[str, list[Any]] = {}
    for item_id, now in digests.items():
        record = records.get(item_id)
        if record is None:
            continue
        before = record.get(ITEM_KEY) or {}
        for part in [p for p in now if before.get(p) != now[p]]:
            changed.setdefault(part, []).append(item_id)
    if changed:
        n = len({i for ids in changed.values() for i in ids})
        parts = "; ".join(f"{part} of {len(ids)} (e.g. {', '.join(map(repr, ids[:3]))})" for part, ids in
                          changed.items())
        raise RunMismatchError(f"{path}: {n} of {len(records)} records were made from other item content than the "
                               f"benchmark holds now ({parts}); {FIXES}.")


# --- the manifest beside a run file --------------------------------------------------------------------------------
def manifest_path(run_path: str | Path) -> Path:
    run_path = Path(run_path)
    return run_path.with_name(run_path.stem + ".manifest.json")


def read_manifest(run_path: str | Path) -> RunManifest | None:
    """The manifest written beside a run file, or None if there is none (or it does not parse)."""
    try:
        return RunManifest.from_json(json.loads(manifest_path(run_path).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def refusal(run_path: Path, manifest: RunManifest, stored: RunManifest | None, stale: Sequence[Mapping],
            n_records: int) -> str:
    """The one line refusing to resume `run_path` whose records `stale` were not made under `manifest`."""
    if not stale and manifest.undescribed:
        return (f"{run_path}: cannot tell whether its {n_records} records were made under the hooks the model carries "
                f"now, since the manifest cannot describe {manifest.undescribed[0]}"
                f"{f' (and {len(manifest.undescribed) - 1} more)' if len(manifest.undescribed) > 1 else ''}; remove "
                "the hooks (model.reset_hooks(), handle.remove()), describe them (a plain function, a "
                "functools.partial, or run_benchmark(settings={'hooks': [...]})), or " + FIXES.split(", ", 1)[1] + ".")
    if stored is not None and stored.digest != manifest.digest:
        what = "made under other settings (then -> now): " + "; ".join(stored.differences(manifest))
    elif all(DIGEST_KEY not in r for r in stale):
        what = "written without a manifest (by an older lens_audio), so what made them is unknown"
    else:
        what = f"made under other settings (their manifest {manifest_path(run_path).name} is missing or another run's)"
    return f"{run_path}: {len(stale)} of {n_records} records were {what}; {FIXES}."
