"""`lens-audio demo` (the hooked port end to end on one clip) and `lens-audio hooks` (the hook table, or every hook
of a model with its shape)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lens_audio.checks import output_file
from lens_audio.files import write_atomically


def add_parsers(sub: argparse._SubParsersAction) -> dict:
    """Add `demo` and `hooks` to `sub`; return command -> runner."""
    demo = sub.add_parser("demo", help="run the hooked port end to end on one clip")
    demo.add_argument("--model", help="checkpoint folder or Hub id (default: the shipped workshop model)")
    demo.add_argument(
        "--audio", help="audio file to ask about (default: a bundled clip, asked with no, right and wrong hints)"
    )
    demo.add_argument("--question", default="What is the sound?")
    demo.add_argument("--json", dest="json_path", type=output_file, help="also write the summary as JSON to this file")
    hooks = sub.add_parser("hooks", help="list hook points")
    hooks.add_argument("--model", help="list every hook of this checkpoint with its shape on a short clip")
    return {"demo": run_demo, "hooks": run_hooks}


def run_hooks(args: argparse.Namespace) -> int:
    from lens_audio.model.hook_table import markdown_table

    if not args.model:
        print(markdown_table())
        return 0
    import torch

    model = _load(args.model)
    batch = model.to_batch(_chirp(1.0), "What is the sound?", sampling_rate=16000)
    with torch.no_grad():
        _, cache = model.run_with_cache(batch, names_filter=lambda name: True)
    for name, value in cache.items():
        print(f"{name:50s} {list(value.shape)}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from lens_audio.model.loading import resolve_checkpoint

    started = time.perf_counter()
    model = _load(args.model)
    if args.audio:
        audio, questions, answer = [args.audio], [args.question], None
    else:  # one bundled test clip, asked with no hint, a right hint and a wrong hint
        from lens_audio.benchmark import load_mmau
        from lens_audio.organisms import BENCHMARK
        from lens_audio.organisms.task import format_question

        items = load_mmau(BENCHMARK, split="test")
        clip = [i for i in items if i["audio_id"] == items[0]["audio_id"]]
        audio, questions, answer = (
            [i["audio_path"] for i in clip],
            [format_question(i) for i in clip],
            clip[0]["answer"],
        )
    batch = model.to_batch(audio, questions)
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch)
    tokens = model.generate(batch, max_new_tokens=8, do_sample=False)
    prompt_length = batch.input_ids.shape[1]
    summary = {
        "model": model.cfg.model_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "decoder": f"{model.cfg.n_layers} layers, {model.cfg.n_heads} heads ({model.cfg.n_key_value_heads} "
        "key/value), d_model {model.cfg.d_model}",
        "audio_encoder": f"{model.cfg.audio.n_layers} layers, {model.cfg.audio.n_ctx} positions",
        "audio_tokens_per_example": [sum(e - s for s, e in spans) for spans in batch.audio_spans],
        "hook_points": len(model.hook_dict),
        "cache_megabytes": round(sum(v.numel() * v.element_size() for v in cache.values()) / 2**20, 2),
        "right_answer": answer,
        "answers": [
            {
                "question": q,
                "answer": model.tokenizer.decode(tokens[row, prompt_length:], skip_special_tokens=True).strip(),
            }
            for row, q in enumerate(questions)
        ],
    }
    folder = resolve_checkpoint(args.model or "workshop")
    if folder.is_dir():
        reference = _transformers_logits(folder, batch)
        valid = batch.attention_mask.bool()
        summary["max_abs_logit_diff_vs_transformers"] = float((logits - reference)[valid].abs().max())
        summary["max_abs_logit"] = float(reference[valid].abs().max())
    summary["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(summary, indent=1))
    if args.json_path:
        write_atomically(args.json_path, json.dumps(summary, indent=2))
    return 0


def _load(name: str | None):
    from lens_audio import HookedAudioLM

    return HookedAudioLM.from_pretrained(name or "workshop")


def _transformers_logits(folder: Path, batch):
    """transformers' logits for the same checkpoint folder and batch (padding-aware positions)."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    from lens_audio.model.hooked_audio_lm import position_ids_from_mask

    hf = Qwen2AudioForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        return hf(**batch.model_inputs(), position_ids=position_ids_from_mask(batch.attention_mask)).logits


def _chirp(seconds: float):
    import numpy as np

    t = np.arange(int(seconds * 16000)) / 16000
    return (0.5 * np.sin(2 * np.pi * (300 + 900 * t / seconds) * t)).astype(np.float32)
