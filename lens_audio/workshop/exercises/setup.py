"""The first cell of every session: check the environment, load the workshop model and its benchmark."""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any


def check_setup(model_name: str = "workshop") -> tuple[Any, list[dict[str, Any]]]:
    """Check versions, load `model_name` and its bundled benchmark, run one forward; print "setup OK".

    Returns `(model, items)`. Raises `RuntimeError` saying what to fix when something is missing.
    """
    versions = {}
    for package in ("torch", "transformer_lens", "transformers", "numpy", "plotly", "jaxtyping"):
        try:
            importlib.import_module(package)
            versions[package] = importlib.metadata.version(package)
        except (ImportError, importlib.metadata.PackageNotFoundError) as error:
            raise RuntimeError(
                f"setup failed: cannot import {package} ({error}). Install the workbench with "
                "`pip install -e \".[notebooks]\"` from the repository root, in the kernel's environment."
            ) from error
    major, minor = (int(part) for part in versions["transformer_lens"].split(".")[:2])
    if (major, minor) < (3, 9):
        raise RuntimeError(
            f"setup failed: transformer_lens {versions['transformer_lens']} is installed; lens_audio needs 3.9+ or 4.x "
            "(`pip install -U 'transformer_lens>=3.9,<5'`)."
        )
    import lens_audio
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.benchmark.prompts import render_prompt
    from lens_audio.model.registry import bundled_benchmark

    try:
        model = HookedAudioLM.from_pretrained(model_name)
        items = load_mmau(bundled_benchmark(model_name))
    except Exception as error:
        raise RuntimeError(
            f"setup failed: could not load the shipped model {model_name!r} or its benchmark ({error}). "
            f"lens_audio is imported from {lens_audio.__file__}: is that the checkout you meant?"
        ) from error
    item = items[0]
    logits = model(model.to_batch(item["audio_path"], render_prompt(item, model_name)))
    if not bool(logits.isfinite().all()):
        raise RuntimeError("setup failed: the model's logits are not finite; reinstall torch for this machine.")
    print(" ".join(f"{k} {v}" for k, v in versions.items()), f"| lens_audio from {lens_audio.__file__}")
    print(
        f"model {model_name!r}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}; "
        f"{len(items)} benchmark items"
    )
    print("setup OK")
    return model, items
