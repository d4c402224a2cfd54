"""Training the workshop model: a small Qwen2-Audio that hears well and still trusts the text too much.

Two stages, one seeded run on a CPU:

1. **Listening** (`steps_audio`): questions without hints, so the only way to
   answer is the audio; encoder, projector and decoder learn together.
2. **Text prior** (`steps_mixed`): a mix of no-hint (30%), congruent (50%)
   and conflicting (20%) items. The annotator behind the labels trusts the
   text: on a conflicting item the label is the audio's class only with
   probability `sigmoid((snr - listen_snr_db) / listen_width_db)`, and the
   hinted (wrong) choice otherwise. So the model learns to answer from the
   hint unless the audio is unmistakable: text dominance whose strength
   varies with how salient the audio is, which is what the listening signal
   and steering of the paper act on. No-hint items keep the audio skill.

The answer is the option's own token followed by `<|im_end|>` (an
option-letter target did not train in a small budget). Clips are drawn from
a pool generated once (SNR from -5 to 25 dB); each step draws fresh
questions, option orders and hints for them. The result is a regular
Hugging Face checkpoint (config.json, model.safetensors, processor files)
plus `metrics.json`, written atomically; training goes through the one loop of
`lens_audio.train`, resumable from the states it keeps in `out_dir` until the checkpoint replaces them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lens_audio.files import atomic_folder, write_atomically
from lens_audio.inputs.batch import AUDIO_PLACEHOLDER, render_chat
from lens_audio.inputs.frames import n_audio_tokens
from lens_audio.inputs.offline_processor import build_offline_processor
from lens_audio.organisms.task import Clip, draw_clips, format_question, make_item, tokenizer_corpus
from lens_audio.train.loop import Phase, StepOutput, Trainer, inputs_fingerprint
from lens_audio.train.run_folder import LoopState, RunFolder

MODEL_CONFIG = dict(
    d_model=128, n_layers=6, n_heads=4, n_kv_heads=2, d_mlp=384,
    audio_d_model=128, audio_layers=3, audio_heads=4, n_mels=64, chunk_seconds=2,
)


@dataclass
class TrainSettings:
    seed: int = 0
    pool_clips: int = 6000
    steps_audio: int = 2000
    steps_mixed: int = 3000
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    hint_mix: tuple[float, float, float] = (0.3, 0.5, 0.2)  # none, congruent, conflicting (stage 2)
    listen_snr_db: float = 12.0
    listen_width_db: float = 3.0
    train_snr_db: tuple[float, float] = (-5.0, 25.0)
    vocab_size: int = 512


class TrainingData:
    """A pool of clips with precomputed features, and a sampler of labelled batches."""

    def __init__(self, processor: Any, settings: TrainSettings, progress: bool) -> None:
        self.processor, self.settings = processor, settings
        self.rng = np.random.default_rng(settings.seed + 1)
        self.clips: list[Clip] = draw_clips(
            self.rng, settings.pool_clips, prefix="train", snr_range=settings.train_snr_db
        )
        features, frames = [], []
        for start in tqdm(range(0, len(self.clips), 500), desc="synthesising training clips", disable=not progress):
            waves = [clip.waveform() for clip in self.clips[start : start + 500]]
            out = processor.feature_extractor(
                waves, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt"
            )
            features.append(out["input_features"])
            frames.append(out["attention_mask"])
        self.features, self.frame_mask = torch.cat(features), torch.cat(frames)
        self.n_tokens = n_audio_tokens(self.frame_mask.sum(-1))
        tok = processor.tokenizer
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")
        self.answer_ids = {
            name: tok.encode(name, add_special_tokens=False)[0] for name in {c.class_name for c in self.clips}
        }

    def batch(self, stage: int) -> dict[str, torch.Tensor]:
        s, rng = self.settings, self.rng
        indices = rng.integers(len(self.clips), size=s.batch_size)
        mix = (1.0, 0.0, 0.0) if stage == 1 else s.hint_mix
        texts, answers = [], []
        for i in indices:
            clip = self.clips[i]
            hint = str(rng.choice(["none", "congruent", "conflicting"], p=mix))
            item = make_item(clip, hint, rng, audio_id="", split="train")
            label = item["answer"]
            if hint == "conflicting":
                p_audio = 1 / (1 + math.exp(-(clip.snr_db - s.listen_snr_db) / s.listen_width_db))
                label = item["answer"] if rng.random() < p_audio else item["hinted_choice"]
            text = render_chat(self.processor, format_question(item), 1)
            texts.append(text.replace(AUDIO_PLACEHOLDER, AUDIO_PLACEHOLDER * int(self.n_tokens[i])))
            answers.append(self.answer_ids[label])
        encoded = [self.processor.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        length = max(len(e) for e in encoded) + 2
        input_ids = torch.full((len(encoded), length), self.processor.tokenizer.pad_token_id)
        attention_mask = torch.zeros_like(input_ids)
        targets = torch.full_like(input_ids, -100)
        for row, (ids, answer) in enumerate(zip(encoded, answers)):
            full = ids + [answer, self.end_id]
            input_ids[row, : len(full)] = torch.tensor(full)
            attention_mask[row, : len(full)] = 1
            targets[row, len(ids) - 1] = answer  # the final prompt position predicts the answer
            targets[row, len(ids)] = self.end_id
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "input_features": self.features[indices],
            "feature_attention_mask": self.frame_mask[indices],
            "targets": targets,
        }


def build_model(settings: TrainSettings) -> tuple[Any, Any]:
    """A freshly initialised workshop-size `Qwen2AudioForConditionalGeneration` and its offline processor."""
    from transformers import Qwen2AudioForConditionalGeneration

    from lens_audio.model.hf_config import qwen2_audio_config

    processor = build_offline_processor(
        tokenizer_corpus(),
        vocab_size=settings.vocab_size,
        n_mels=MODEL_CONFIG["n_mels"],
        chunk_seconds=MODEL_CONFIG["chunk_seconds"],
    )
    tok = processor.tokenizer
    config = qwen2_audio_config(
        vocab_size=len(tok),
        audio_token_id=processor.audio_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        **MODEL_CONFIG,
    )
    config._attn_implementation = "eager"  # faster than SDPA at this size on CPU
    torch.manual_seed(settings.seed)
    return Qwen2AudioForConditionalGeneration(config), processor


RECIPE = "v1"


def train(
    out_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    eval_benchmark: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    checkpoint_every: int = 100,
) -> dict[str, Any] | None:
    """Train, evaluate on `eval_benchmark` (a workshop.json; test split), and save to `out_dir`. Returns the metrics.

    Training runs in `out_dir` as a run folder (`lens_audio.train`): a state every `checkpoint_every` steps, so
    a call on a folder holding a state continues from it (same result as an uninterrupted run); `stop_after` leaves
    after that many steps of this call (returning None). The finished checkpoint then replaces the run folder.
    """
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    model, processor = build_model(settings)
    data = TrainingData(processor, settings, progress)
    total = settings.steps_audio + settings.steps_mixed
    run = RunFolder(Path(out_dir), RECIPE, asdict(settings))
    trainer = Trainer(run, inputs_fingerprint(data.features), sampler=data, progress=progress,
                      checkpoint_every=checkpoint_every, log_every=25, stop_after=stop_after, total_steps=total)

    def step(loop: LoopState) -> StepOutput:
        stage = 1 if loop.step < settings.steps_audio else 2
        batch = data.batch(stage)
        targets = batch.pop("targets")
        logits = model(**batch).logits
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return StepOutput(loss, {"loss": loss.item()}, stage)

    model.train()
    phase = Phase(total, settings.learning_rate, settings.warmup_steps, history="index")
    if not trainer.run_phase(0, phase, {"model": model}, step):
        return None
    model.eval()
    metrics: dict[str, Any] = {
        "settings": asdict(settings),
        "model_config": MODEL_CONFIG,
        "loss_history": trainer.loop.history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    if eval_benchmark is not None:
        metrics.update(evaluate_checkpoint(model, processor, eval_benchmark, progress))
    save_atomically(model, processor, metrics, Path(out_dir), before_swap=run.discard_states)
    return metrics


def evaluate_checkpoint(hf_model: Any, processor: Any, benchmark: str | Path, progress: bool = True) -> dict[str, Any]:
    """Test-split results through the hooked port, with the real audio and with its silence twin."""
    from lens_audio import HookedAudioLM
    from lens_audio.benchmark import load_mmau
    from lens_audio.organisms.evaluate import score_items, summarize

    model = HookedAudioLM.from_hf_model(hf_model, processor)
    items = load_mmau(benchmark, split="test")
    return {
        "test": summarize(score_items(model, items, progress=progress)),
        "test_with_silence": summarize(
            score_items(model, [i for i in items if i["hint"] == "none"], silence=True, progress=progress)
        ),
    }


def save_atomically(model: Any, processor: Any, metrics: dict[str, Any], out_dir: Path,
                    before_swap: Callable[[], None] | None = None) -> None:
    """Write a finished checkpoint (HF files, processor, `metrics.json`) to `out_dir`, whole or not at all.

    `before_swap` runs once the checkpoint is complete in its staging folder, before it replaces `out_dir` (a run
    folder training in `out_dir` discards its states there, so that a kill leaves either the states or none)."""
    with atomic_folder(out_dir) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_atomically(staging / "metrics.json", json.dumps(metrics, indent=1))
        if before_swap is not None:
            before_swap()
