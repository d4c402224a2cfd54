"""Training the clip-set workshop model (`"workshop"`): the model organism for head selection.

The audio side is the first workshop model's (`"workshop-v1"`): its tokenizer,
feature extractor and audio encoder are copied unchanged and kept frozen, so
every clip's encoder output is computed once, before training. Its projector
is copied scaled by `projector_scale` and trained: v1's audio embeddings have
norm ~80 against ~0.2 for a fresh decoder's token embeddings, and at that
scale nothing the decoder writes at an audio position (such as which clip it
belongs to) survives the next RMSNorm. A new, deeper decoder is trained (8 layers x 8 query heads sharing 4
key/value heads, width 128), on the clip-set task of `organisms/workshop/task.py`:

1. **Reading the right clip** (`steps_audio`): no hints; the answer is the
   class of the clip the question names, the other options including the
   other clips' classes. Prompts hold one, two or three clips (a third each),
   so the decoder first learns to read audio at all, then to pick the clip.
2. **Text prior** (`steps_mixed`): no hint 30% / congruent 50% / conflicting
   20%, labelled by the first model's text-trusting annotator: on a
   conflicting item the label is the named clip's class with probability
   `sigmoid((snr - listen_snr_db) / listen_width_db)` of *that clip's* SNR,
   the hinted choice otherwise. Mostly three clips (70%), as in the benchmark.

The result is a regular `Qwen2AudioForConditionalGeneration` checkpoint that
transformers loads; the same seed on the same torch build and thread count
gives the same weights. Training goes through the one loop of `lens_audio.train`
(stages 1-2 its phase 0, stage 3 its phase 1), resumable from the states it keeps
in the output folder until the checkpoint replaces them.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lens_audio.inputs.batch import AUDIO_PLACEHOLDER, render_chat
from lens_audio.organisms import CHECKPOINT_V1
from lens_audio.organisms.sounds import DOMAINS
from lens_audio.organisms.task import CLASSES, Clip, format_question
from lens_audio.organisms.workshop.task import SECONDS, SET_SIZE, ClipSet, make_set_item
from lens_audio.organisms.workshop_v1.recipe import save_atomically
from lens_audio.train.loop import Phase, StepOutput, Trainer, inputs_fingerprint
from lens_audio.train.run_folder import LoopState, RunFolder

DECODER_CONFIG = dict(n_layers=8, n_heads=8, n_kv_heads=4, d_mlp=256)


@dataclass
class SetsTrainSettings:
    seed: int = 0
    pool_clips_per_class: int = 500
    steps_audio: int = 1000
    steps_mixed: int = 1400
    batch_size: int = 24
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    hint_mix: tuple[float, float, float] = (0.3, 0.5, 0.2)  # none, congruent, conflicting (stage 2)
    # probability of 1, 2 or 3 clips per prompt in stage 1 and stage 2: prompts with one clip teach reading the
    # audio at all (with three clips from the start the decoder stayed at chance for 400+ steps)
    clip_counts_audio: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    clip_counts_mixed: tuple[float, float, float] = (0.1, 0.2, 0.7)
    listen_snr_db: float = 12.0
    listen_width_db: float = 3.0
    train_snr_db: tuple[float, float] = (-5.0, 25.0)
    steps_select: int = 1200  # stage 3: the same mix, plus probes that teach where each clip is (see train_sets)
    select_learning_rate: float = 1e-3
    probe_weight: float = 1.0
    probe_layer: int = 0  # the decoder layer after which the clip probes of training stage 3 read the residual stream
    projector_scale: float = 0.02  # v1's audio embeddings (norm ~80) rescaled to the fresh decoder's token scale
    threads: int = 2


class ClipSetData:
    """A pool of clips with their (frozen) audio embeddings, and a sampler of labelled clip-set batches."""

    def __init__(self, audio_model: Any, processor: Any, settings: SetsTrainSettings, progress: bool) -> None:
        self.processor, self.settings = processor, settings
        self.rng = np.random.default_rng(settings.seed + 1)
        self.clips: list[Clip] = []
        for name in CLASSES:
            for i in range(settings.pool_clips_per_class):
                self.clips.append(Clip(id=f"pool-{name}-{i}", class_name=name,
                                       seconds=round(float(self.rng.uniform(*SECONDS)), 3),
                                       snr_db=round(float(self.rng.uniform(*settings.train_snr_db)), 2),
                                       seed=int(self.rng.integers(2**31))))
        self.by_class = {name: [i for i, c in enumerate(self.clips) if c.class_name == name] for name in CLASSES}
        self.encoded, self.n_tokens = encode_clips(audio_model, processor, self.clips, progress)
        tok = processor.tokenizer
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")
        self.audio_id = processor.audio_token_id
        self.answer_ids = {name: tok.encode(name, add_special_tokens=False)[0] for name in CLASSES}

    def batch(self, stage: int) -> dict[str, Tensor]:
        s, rng = self.settings, self.rng
        mix = (1.0, 0.0, 0.0) if stage == 1 else s.hint_mix
        counts = s.clip_counts_audio if stage == 1 else s.clip_counts_mixed
        rows, answers, chosen, targets_clip = [], [], [], []
        for _ in range(s.batch_size):
            domain = str(rng.choice(list(DOMAINS)))
            n_clips = int(rng.choice([1, 2, SET_SIZE], p=counts))
            classes = rng.permutation(list(DOMAINS[domain]))[:n_clips]
            indices = [int(rng.choice(self.by_class[str(c)])) for c in classes]
            clip_set = ClipSet(id="train", domain=domain, clips=tuple(self.clips[i] for i in indices))
            target = int(rng.integers(n_clips))
            hint = str(rng.choice(["none", "congruent", "conflicting"], p=mix))
            item = make_set_item(clip_set, target, hint, rng, audio_ids=[], split="train")
            rows.append(self.prompt_ids(item, indices))
            answers.append(self.answer_ids[annotator_label(item, s, rng)])
            chosen.append(indices)
            targets_clip.append(target)
        return {**self.pack(rows, answers, chosen), "target_clip": torch.tensor(targets_clip)}

    def prompt_text(self, item: dict[str, Any], indices: list[int]) -> str:
        """`item`'s chat prompt, each clip's `<|AUDIO|>` repeated to its encoder length."""
        text = render_chat(self.processor, format_question(item), len(indices))
        for i in indices:
            text = text.replace(AUDIO_PLACEHOLDER, "\0" * int(self.n_tokens[i]), 1)
        return text.replace("\0", AUDIO_PLACEHOLDER)

    def prompt_ids(self, item: dict[str, Any], indices: list[int]) -> list[int]:
        """The token ids of `item`'s chat prompt (`prompt_text`)."""
        return self.processor.tokenizer.encode(self.prompt_text(item, indices), add_special_tokens=False)

    def pack(self, rows: list[list[int]], answers: list[int], chosen: list[list[int]]) -> dict[str, Tensor]:
        """Right-padded prompts followed by their answer and `<|im_end|>`, with the targets of both, the clips'
        encoder outputs in prompt order, which clip each audio token belongs to and each prompt's final position."""
        length = max(len(r) for r in rows) + 2
        input_ids = torch.full((len(rows), length), self.processor.tokenizer.pad_token_id)
        attention_mask = torch.zeros_like(input_ids)
        targets = torch.full_like(input_ids, -100)
        for row, (ids, answer) in enumerate(zip(rows, answers)):
            full = ids + [answer, self.end_id]
            input_ids[row, : len(full)] = torch.tensor(full)
            attention_mask[row, : len(full)] = 1
            targets[row, len(ids) - 1] = answer  # the final prompt position predicts the answer
            targets[row, len(ids)] = self.end_id
        audio = torch.cat([self.encoded[i, : self.n_tokens[i]] for indices in chosen for i in indices])
        clip_of_token = torch.cat(
            [torch.full((int(self.n_tokens[i]),), j) for indices in chosen for j, i in enumerate(indices)]
        )
        return {"input_ids": input_ids, "attention_mask": attention_mask, "audio_encoded": audio, "targets": targets,
                "clip_of_token": clip_of_token, "final_position": torch.tensor([len(r) - 1 for r in rows])}


def annotator_label(item: dict[str, Any], settings: Any, rng: np.random.Generator) -> str:
    """The text-trusting annotator's label: on a conflicting item the asked-about clip's class with probability
    `sigmoid((snr - listen_snr_db) / listen_width_db)` of that clip's SNR, the hinted choice otherwise."""
    if item["hint"] != "conflicting":
        return item["answer"]
    p_audio = 1 / (1 + math.exp(-(item["snr_db"] - settings.listen_snr_db) / settings.listen_width_db))
    return item["answer"] if rng.random() < p_audio else item["hinted_choice"]


@torch.no_grad()
def encode_clips(audio_model: Any, processor: Any, clips: list[Clip], progress: bool,
                 chunk: int = 250) -> tuple[Float[Tensor, "clips audio_pos d_audio"], Int[Tensor, " clips"]]:
    """Each clip's frozen encoder output (after `ln_post`, before the projector) through the hooked port's `audio`."""
    outputs, counts = [], []
    captured: list[Tensor] = []
    handle = audio_model.audio.ln_post.register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        for start in tqdm(range(0, len(clips), chunk), desc="encoding training clips", disable=not progress):
            waves = [clip.waveform() for clip in clips[start : start + chunk]]
            out = processor.feature_extractor(waves, sampling_rate=16000, return_attention_mask=True,
                                              padding="max_length", return_tensors="pt")
            _, n = audio_model.audio(out["input_features"], out["attention_mask"])
            outputs.append(captured.pop())
            counts.append(n)
    finally:
        handle.remove()
    return torch.cat(outputs), torch.cat(counts)


def build_model(settings: Any, decoder_config: dict[str, int] = DECODER_CONFIG) -> tuple[Any, Any]:
    """The v1 workshop model's processor and audio side, with a freshly initialised deeper decoder (`decoder_config`;
    `settings` gives `seed` and `projector_scale`)."""
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    v1 = Qwen2AudioForConditionalGeneration.from_pretrained(CHECKPOINT_V1)
    processor = AutoProcessor.from_pretrained(CHECKPOINT_V1)
    config = copy.deepcopy(v1.config)
    text = config.text_config
    text.num_hidden_layers = decoder_config["n_layers"]
    text.num_attention_heads = decoder_config["n_heads"]
    text.num_key_value_heads = decoder_config["n_kv_heads"]
    text.intermediate_size = decoder_config["d_mlp"]
    text.head_dim = text.hidden_size // text.num_attention_heads
    if hasattr(text, "layer_types"):
        text.layer_types = ["full_attention"] * text.num_hidden_layers
    config._attn_implementation = "eager"
    torch.manual_seed(settings.seed)
    model = Qwen2AudioForConditionalGeneration(config)
    model.model.audio_tower.load_state_dict(v1.model.audio_tower.state_dict())
    projector = v1.model.multi_modal_projector.state_dict()
    model.model.multi_modal_projector.load_state_dict({k: v * settings.projector_scale for k, v in projector.items()})
    model.model.audio_tower.requires_grad_(False)
    return model, processor


def decoder_logits(model: Any, input_ids: Tensor, attention_mask: Tensor, audio_encoded: Tensor,
                   probe_layer: int | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """The logits with the projected audio written over the `<|AUDIO|>` tokens (as HF does), from the encoder output.

    With `probe_layer`, also the residual stream after that decoder layer (for the clip probes of training stage 3).
    """
    logits, hidden_states = decoder_forward(model, input_ids, attention_mask, audio_encoded)
    return logits if probe_layer is None else (logits, hidden_states[probe_layer + 1])


def decoder_forward(model: Any, input_ids: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"],
                    audio_encoded: Float[Tensor, "audio_pos d_audio"]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The logits and every residual stream (`[l + 1]` after decoder layer `l`, `[0]` the embeddings), with the
    projected audio written over the `<|AUDIO|>` tokens (as HF does)."""
    audio_embeds = model.model.multi_modal_projector(audio_encoded)
    embeds = model.get_input_embeddings()(input_ids)
    slots = (input_ids == model.config.audio_token_id)[..., None]
    embeds = embeds.masked_scatter(slots, audio_embeds.to(embeds.dtype))
    out = model.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask, output_hidden_states=True)
    return model.lm_head(out.last_hidden_state), out.hidden_states


class ClipProbes(torch.nn.Module):
    """Stage 3's training aid (not part of the checkpoint): linear read-outs, after decoder layer 0, of which clip
    each audio token belongs to and which clip the question names, at the final prompt position.

    Without them the decoder reads the audio but not the named clip (no-hint accuracy near chance, nearly every
    error another clip's class): finding the clip takes two steps (audio tokens learn their "Audio k:" label,
    the final position matches k), which plain answer supervision did not find within 2400 steps.
    """

    def __init__(self, d_model: int, n_clips: int = SET_SIZE) -> None:
        super().__init__()
        self.token_clip = torch.nn.Linear(d_model, n_clips)
        self.asked_clip = torch.nn.Linear(d_model, n_clips)

    def loss(self, hidden: Tensor, batch: dict[str, Tensor], audio_id: int) -> Tensor:
        at_audio = hidden[batch["input_ids"] == audio_id]
        rows = torch.arange(hidden.shape[0])
        at_final = hidden[rows, batch["final_position"]]
        return F.cross_entropy(self.token_clip(at_audio), batch["clip_of_token"]) + F.cross_entropy(
            self.asked_clip(at_final), batch["target_clip"])


RECIPE = "clip-sets"


def train_sets(out_dir: str | Path, settings: SetsTrainSettings = SetsTrainSettings(),
               eval_benchmark: str | Path | None = None, progress: bool = True, stop_after: int | None = None,
               checkpoint_every: int = 100) -> dict[str, Any] | None:
    """Train (stages 1-2, then 3), evaluate on `eval_benchmark` (test split) and save to `out_dir`. Returns the
    metrics.

    Training runs in `out_dir` as a run folder (`lens_audio.train`): a state every `checkpoint_every` steps and
    at the end of each phase, so a call on a folder holding a state continues from it (same result as an
    uninterrupted run); `stop_after` leaves after that many steps of this call (returning None). The finished
    checkpoint then replaces the run folder.
    """
    from lens_audio import HookedAudioLM

    started = time.perf_counter()
    torch.set_num_threads(settings.threads)
    model, processor = build_model(settings)
    model.eval()
    data = ClipSetData(HookedAudioLM.from_hf_model(model, processor), processor, settings, progress)
    run = RunFolder(Path(out_dir), RECIPE, asdict(settings))
    total = settings.steps_audio + settings.steps_mixed + settings.steps_select
    trainer = Trainer(run, inputs_fingerprint(data.encoded), sampler=data, progress=progress,
                      checkpoint_every=checkpoint_every, log_every=25, stop_after=stop_after, total_steps=total,
                      inputs="the training clips' encoder outputs (another torch build or thread count?)")
    if not (run_stages(trainer, model, data, settings) and select_stage(trainer, model, data, settings)):
        return None
    model.eval()
    metrics: dict[str, Any] = {"recipe": "clip-sets", "settings": asdict(settings), "decoder_config": DECODER_CONFIG,
                               "audio_side_from": "workshop-v1", "loss_history": trainer.loop.history,
                               "parameters": sum(p.numel() for p in model.parameters()),
                               "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                               "train_seconds": round(time.perf_counter() - started, 1)}
    if eval_benchmark is not None:
        from lens_audio.organisms.workshop_v1.recipe import evaluate_checkpoint

        metrics.update(evaluate_checkpoint(model, processor, eval_benchmark, progress))
    save_atomically(model, processor, metrics, Path(out_dir), before_swap=run.discard_states)
    return metrics


def run_stages(trainer: Trainer, model: Any, data: ClipSetData, settings: SetsTrainSettings) -> bool:
    """Stages 1 (no hints) and 2 (hint mix) with the answer loss only: the trainer's phase 0. False when the
    trainer's budget ran out first."""

    def step(loop: LoopState) -> StepOutput:
        stage = 1 if loop.step < settings.steps_audio else 2
        batch = data.batch(stage)
        logits = decoder_logits(model, batch["input_ids"], batch["attention_mask"], batch["audio_encoded"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-100)
        return StepOutput(loss, {"loss": loss.item()}, stage)

    model.model.language_model.train()
    phase = Phase(settings.steps_audio + settings.steps_mixed, settings.learning_rate, settings.warmup_steps,
                  history="index", label="training (stages 1-2)")
    done = trainer.run_phase(0, phase, {"model": model}, step)
    model.eval()
    return done


def select_stage(trainer: Trainer, model: Any, data: ClipSetData, settings: SetsTrainSettings) -> bool:
    """Stage 3: stage 2's mix with a fresh optimizer and sampler, plus the `ClipProbes` loss after decoder layer
    `settings.probe_layer` (0 for the shipped model): the trainer's phase 1."""
    data.rng = np.random.default_rng(settings.seed + 2)
    torch.manual_seed(settings.seed + 2)
    probes = ClipProbes(model.config.text_config.hidden_size)

    def step(loop: LoopState) -> StepOutput:
        batch = data.batch(2)
        logits, hidden = decoder_logits(model, batch["input_ids"], batch["attention_mask"], batch["audio_encoded"],
                                        probe_layer=settings.probe_layer)
        aid = probes.loss(hidden, batch, model.config.audio_token_id)
        loss = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-100)
        return StepOutput(loss + settings.probe_weight * aid, {"loss": loss.item(), "aid_loss": aid.item()}, 3)

    model.model.language_model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    phase = Phase(settings.steps_select, settings.select_learning_rate, 50, history="index",
                  label="training (stage 3)")
    done = trainer.run_phase(1, phase, {"model": model, "probes": probes}, step,
                             clip_groups=[trainable + list(probes.parameters())])  # clipped together
    model.eval()
    return done
