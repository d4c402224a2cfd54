"""Training the clip-chain workshop model (recipe `chains`): a model organism where the audio is read late.

The audio side is the first workshop model's, frozen, as in the clip-set recipe (`organisms/workshop/recipe.py`)
(each clip's encoder output computed once; the projector copied rescaled and
trained). A fresh 16-layer decoder (width 128) learns the clip-chain task of
`workshop_chains/task.py`, with three training aids that are not part of the checkpoint:

- **clip probes at mid-depth**: a linear read-out of which clip each audio
  token is in, after decoder layer `token_probe_layer` (4), and of which clip
  holds the answer, at the final prompt position after layer
  `answer_probe_layer` (8). They help the decoder find the clip (plain answer
  supervision did not on the three-clip task) without asking for it early;
- **adversarial probes on the lower half**: after each decoder layer below
  `adversary_below` (8), a linear probe learns to read the answer clip's class
  (among the item's options) at the final prompt position, and the decoder
  learns to make every such probe's prediction uniform (the maximum-entropy
  form of gradient reversal: it does not reward writing the class in flipped
  form, which a re-fitted probe would still read). Applied on items without a
  hint or with a conflicting one (a congruent hint puts the class in the text).
  So the answer's content is not linearly decodable at the final position
  before layer 8;
- **lookup questions** from step `lookup_from` on: a share `lookup_share` of the
  training items asks "Which clip is the drums one?", answered with the clip's
  number (`make_lookup_item`): the first hop of `after` and `before` with its
  own answer supervision. The first run reached step 3250 without them: direct
  questions at 97%, after/before at 40-46% (a guess that excludes the named
  class scores 33%) and flat from step 2000, so the content lookup was what it
  had not learned. The recipe adds them at step 3250 so that the shipped run is
  that run continued;
- **the annotator's SNR rule**, as before: on a conflicting item the label is
  the answer clip's class with probability `sigmoid((snr - 12 dB) / 3 dB)`.

Two stages, as before: `steps_audio` steps without hints and with 1-4 clips
per prompt (the decoder first learns to read audio at all), then the hint mix
with mostly four clips, up to `steps` in all. Every `monitor_every` steps a
fixed monitor set (fresh clips, not the benchmark) is scored; the run stops
early once the model follows the SNR rule there (`ChainMonitor.follows_rule`).

Training goes through the one loop of `lens_audio.train`, and the run is
resumable: every `checkpoint_every` steps the model, probes, optimizer,
schedule position and random states are saved atomically to the run folder
(safetensors + JSON), and a run started on a folder holding a state continues
from it, giving the same weights as an uninterrupted run (same torch build and
thread count); `resume_from` starts a new run folder from a state kept
elsewhere. The finished model is a regular
`Qwen2AudioForConditionalGeneration` checkpoint in `<run>/final`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lens_audio.organisms.sounds import DOMAINS
from lens_audio.organisms.task import CLASSES, HINT_CONDITIONS
from lens_audio.organisms.workshop.recipe import (
    ClipSetData,
    annotator_label,
    build_model,
    decoder_forward,
    encode_clips,
)
from lens_audio.organisms.workshop.task import ClipSet
from lens_audio.organisms.workshop_chains.task import (
    CHAIN_SIZE,
    draw_chain_sets,
    draw_relation,
    make_chain_item,
    make_lookup_item,
)
from lens_audio.train.loop import Phase, StepOutput, Trainer, inputs_fingerprint
from lens_audio.train.run_folder import LoopState, RunFolder

RECIPE = "chains"
# settings added after the first run had started, with the first step each can change: a state saved before that
# step and without the setting resumes under its value
INTRODUCED_LATER = {"lookup_share": "lookup_from", "lookup_from": "lookup_from"}


@dataclass
class ChainsTrainSettings:
    seed: int = 0
    n_layers: int = 16
    n_heads: int = 8
    n_kv_heads: int = 4
    d_mlp: int = 256
    pool_clips_per_class: int = 500
    steps_audio: int = 1500  # stage 1: no hints, 1-4 clips
    steps: int = 6000  # in all (stage 2 runs from steps_audio to steps, or until the monitor's rule is met)
    batch_size: int = 24
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    hint_mix: tuple[float, float, float] = (0.3, 0.5, 0.2)  # none, congruent, conflicting (stage 2)
    clip_counts_audio: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)  # 1, 2, 3 or 4 clips per prompt
    clip_counts_mixed: tuple[float, ...] = (0.05, 0.05, 0.1, 0.8)
    direct_share_audio: float = 0.5
    direct_share_mixed: float = 0.3
    listen_snr_db: float = 12.0
    listen_width_db: float = 3.0
    train_snr_db: tuple[float, float] = (-5.0, 25.0)
    projector_scale: float = 0.02
    token_probe_layer: int = 4
    answer_probe_layer: int = 8
    adversary_below: int = 8  # adversarial probes after decoder layers 0 .. adversary_below - 1
    # a probe of which clip the question names by its content ("the clip after the drums one": the drums clip),
    # read at the named class word after this decoder layer (None: no such probe, the recipe as first run)
    named_probe_layer: int | None = None
    # training-only "Which clip is the <class> one?" items (answered with the clip's number), from step lookup_from
    lookup_share: float = 0.25
    lookup_from: int = 3250
    probe_weight: float = 1.0
    adversary_weight: float = 1.0
    monitor_sets: int = 48
    monitor_every: int = 250
    min_steps: int = 3000  # the monitor's stopping rule applies from here on
    checkpoint_every: int = 50  # at most ~10 minutes lost on a busy 2-core CPU
    log_every: int = 25
    threads: int = 2

    def decoder_config(self) -> dict[str, int]:
        return dict(n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads, d_mlp=self.d_mlp)

    def check(self) -> None:
        for name in ("token_probe_layer", "answer_probe_layer", "named_probe_layer"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < self.n_layers:
                raise ValueError(f"{name} = {getattr(self, name)} must be a decoder layer (0..{self.n_layers - 1}).")
        if not 0 <= self.adversary_below <= self.n_layers:
            raise ValueError(f"adversary_below = {self.adversary_below} must be in 0..{self.n_layers}.")
        if not 0 <= self.lookup_share < 1:
            raise ValueError(f"lookup_share = {self.lookup_share} must be in [0, 1).")
        if not 0 <= self.steps_audio <= self.steps:
            raise ValueError(f"steps_audio ({self.steps_audio}) must be between 0 and steps ({self.steps}).")


class ChainData(ClipSetData):
    """The training pool (frozen audio embeddings), a sampler of labelled clip-chain batches, and the monitor set."""

    def __init__(self, audio_model: Any, processor: Any, settings: ChainsTrainSettings, progress: bool) -> None:
        super().__init__(audio_model, processor, settings, progress)
        rng = np.random.default_rng(settings.seed + 3)
        self.monitor_sets = draw_chain_sets(rng, settings.monitor_sets, "monitor", (0.0, 20.0))
        monitor_clips = [clip for clip_set in self.monitor_sets for clip in clip_set.clips]
        encoded, n_tokens = encode_clips(audio_model, processor, monitor_clips, progress=False)
        self.encoded = torch.cat([self.encoded, _pad_to(encoded, self.encoded.shape[1])])
        self.n_tokens = torch.cat([self.n_tokens, n_tokens])
        self.n_pool = len(self.clips)
        clips_of = [list(range(self.n_pool + CHAIN_SIZE * s, self.n_pool + CHAIN_SIZE * (s + 1)))
                    for s in range(len(self.monitor_sets))]  # each monitor set's clips, in the pool's indices
        self.monitor_items = [
            (make_chain_item(clip_set, target, draw_relation(rng, target), hint, rng, [], "monitor"), clips_of[s])
            for s, clip_set in enumerate(self.monitor_sets) for target in range(CHAIN_SIZE) for hint in HINT_CONDITIONS
        ]
        self.monitor_lookups = [  # scored apart: the benchmark never asks them
            (make_lookup_item(clip_set, named, "monitor"), clips_of[s])
            for s, clip_set in enumerate(self.monitor_sets) for named in range(CHAIN_SIZE)
        ]
        tok = processor.tokenizer
        self.answer_ids.update({str(k): tok.encode(str(k), add_special_tokens=False)[0]
                                for k in range(1, CHAIN_SIZE + 1)})

    def batch(self, stage: int, lookups: bool = False) -> dict[str, Tensor]:
        """A training batch of `stage`; with `lookups`, a share `lookup_share` of its items are lookup questions."""
        s, rng = self.settings, self.rng
        mix = (1.0, 0.0, 0.0) if stage == 1 else s.hint_mix
        counts = s.clip_counts_audio if stage == 1 else s.clip_counts_mixed
        direct_share = s.direct_share_audio if stage == 1 else s.direct_share_mixed
        items, chosen = [], []
        for _ in range(s.batch_size):
            domain = str(rng.choice(list(DOMAINS)))
            n_clips = int(rng.choice(np.arange(1, len(counts) + 1), p=counts))
            classes = rng.permutation(list(DOMAINS[domain]))[:n_clips]
            indices = [int(rng.choice(self.by_class[str(c)])) for c in classes]
            clip_set = ClipSet(id="train", domain=domain, clips=tuple(self.clips[i] for i in indices))
            target = int(rng.integers(n_clips))
            chosen.append(indices)
            if lookups and rng.random() < s.lookup_share:
                items.append(make_lookup_item(clip_set, target, "train"))
                continue
            relation = draw_relation(rng, target, n_clips, direct_share)
            hint = str(rng.choice(["none", "congruent", "conflicting"], p=mix))
            items.append(make_chain_item(clip_set, target, relation, hint, rng, [], "train"))
        return self.collate(items, chosen, [annotator_label(item, s, rng) for item in items])

    def collate(self, items: list[dict[str, Any]], chosen: list[list[int]], labels: list[str]) -> dict[str, Tensor]:
        rows = [self.prompt_ids(item, indices) for item, indices in zip(items, chosen)]
        batch = self.pack(rows, [self.answer_ids[label] for label in labels], chosen)
        options = torch.zeros(len(items), len(CLASSES), dtype=torch.bool)
        lookup = [item["relation"] == "lookup" for item in items]  # answered with a clip's number, not a class
        for row, item in enumerate(items):
            if not lookup[row]:
                options[row, [CLASSES.index(c) for c in item["choices"]]] = True
        named = [self.named_word(item, indices) for item, indices in zip(items, chosen)]
        return {**batch, "target_clip": torch.tensor([item["target_clip"] - 1 for item in items]),
                "named_clip": torch.tensor([item["named_clip"] - 1 for item in items]),
                "named_position": torch.tensor(named),
                "answer_class": torch.tensor([0 if skip else CLASSES.index(item["answer"])
                                              for item, skip in zip(items, lookup)]),
                "options": options,
                "adversarial": torch.tensor([item["hint"] != "congruent" and not skip
                                             for item, skip in zip(items, lookup)])}


    def named_word(self, item: dict[str, Any], indices: list[int]) -> int:
        """The prompt position of the last token of the class word by which the question names a clip ("drums"
        in "What is in the clip after the drums one?"); -1 for a direct question or without the named probe."""
        if self.settings.named_probe_layer is None or item["relation"] not in ("after", "before"):
            return -1
        named_class = NAMED.search(item["question"]).group(1)
        text = self.prompt_text(item, indices)
        end = text.rindex(f"the {named_class} one?") + len(f"the {named_class}")  # the question's, not the hint's
        offsets = self.processor.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"]
        return max(position for position, (start, _) in enumerate(offsets) if start < end)


NAMED = re.compile(r"What is in the clip (?:after|before) the (.+?) one\?$")


def _pad_to(encoded: Tensor, length: int) -> Tensor:
    if encoded.shape[1] > length:
        raise ValueError(f"monitor clips encode to {encoded.shape[1]} positions, more than the pool's {length}.")
    return F.pad(encoded, (0, 0, 0, length - encoded.shape[1]))


class ChainProbes(torch.nn.Module):
    """The training aids (not part of the checkpoint): clip probes at mid-depth, adversarial class probes below."""

    def __init__(self, d_model: int, settings: ChainsTrainSettings) -> None:
        super().__init__()
        self.settings = settings
        self.token_clip = torch.nn.Linear(d_model, CHAIN_SIZE)
        self.answer_clip = torch.nn.Linear(d_model, CHAIN_SIZE)
        self.adversaries = torch.nn.ModuleList(torch.nn.Linear(d_model, len(CLASSES))
                                               for _ in range(settings.adversary_below))
        if settings.named_probe_layer is not None:
            self.named_clip = torch.nn.Linear(d_model, CHAIN_SIZE)

    def losses(self, hidden_states: tuple[Tensor, ...], batch: dict[str, Tensor],
               audio_id: int) -> tuple[Tensor, dict[str, float]]:
        """The probes' summed loss, and their accuracies (the adversaries' on their own fitting rows)."""
        s = self.settings
        rows = torch.arange(batch["input_ids"].shape[0], device=batch["input_ids"].device)
        at_audio = hidden_states[s.token_probe_layer + 1][batch["input_ids"] == audio_id]
        token_logits = self.token_clip(at_audio)
        answer_logits = self.answer_clip(hidden_states[s.answer_probe_layer + 1][rows, batch["final_position"]])
        total = s.probe_weight * (F.cross_entropy(token_logits, batch["clip_of_token"])
                                  + F.cross_entropy(answer_logits, batch["target_clip"]))
        stats = {"token_clip_acc": _accuracy(token_logits, batch["clip_of_token"]),
                 "answer_clip_acc": _accuracy(answer_logits, batch["target_clip"])}
        named_rows = batch["named_position"] >= 0
        if s.named_probe_layer is not None and bool(named_rows.any()):
            at_word = hidden_states[s.named_probe_layer + 1][rows[named_rows], batch["named_position"][named_rows]]
            named_logits = self.named_clip(at_word)
            total = total + s.probe_weight * F.cross_entropy(named_logits, batch["named_clip"][named_rows])
            stats["named_clip_acc"] = _accuracy(named_logits, batch["named_clip"][named_rows])
        keep = batch["adversarial"]
        if len(self.adversaries) and bool(keep.any()):
            masked_rows = rows[keep]
            options, answer = batch["options"][keep], batch["answer_class"][keep]
            for layer, probe in enumerate(self.adversaries):
                final = hidden_states[layer + 1][masked_rows, batch["final_position"][keep]]
                fit = probe(final.detach()).masked_fill(~options, -1e9)  # the probe learns to read the class...
                total = total + F.cross_entropy(fit, answer)
                # ... and the decoder learns to leave it guessing (uniform over the options), the probe held fixed
                fooled = F.linear(final, probe.weight.detach(), probe.bias.detach()).masked_fill(~options, -1e9)
                uniform = options.float() / options.sum(-1, keepdim=True)
                total = total + s.adversary_weight * F.cross_entropy(fooled, uniform)
                stats[f"adversary_acc_L{layer}"] = _accuracy(fit, answer)
        return total, stats


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean()) if labels.numel() else float("nan")


@dataclass
class ChainMonitor:
    """Results on the monitor set at one step: accuracy by hint and relation, and the SNR rule's measures."""

    step: int
    accuracy: dict[str, float]  # by hint condition
    no_hint_by_relation: dict[str, float]
    conflicting_by_domain: dict[str, float]
    snr_r_by_domain: dict[str, float]  # r(correct, SNR) on conflicting items, per domain
    follows_conflicting_hint: float
    extra: dict[str, Any] = field(default_factory=dict)

    def follows_rule(self) -> bool:
        """The stopping rule: r(correct, SNR) >= 0.5 in every domain, conflicting accuracy within 10 points across
        domains (the issue's +-5), hint following >= 40%, no-hint accuracy >= 85%."""
        spread = max(self.conflicting_by_domain.values()) - min(self.conflicting_by_domain.values())
        return (min(self.snr_r_by_domain.values()) >= 0.5 and spread <= 10 and self.follows_conflicting_hint >= 40
                and self.accuracy["none"] >= 85)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChainMonitor:
        return cls(**data)


@torch.no_grad()
def monitor(model: Any, data: ChainData, step: int) -> ChainMonitor:
    """Choice-score the monitor items (argmax over the options' answer tokens at the final prompt position); the
    lookup questions' accuracy goes in `extra` (`lookup`)."""
    result = summarize_monitor(choice_records(model, data, data.monitor_items), step)
    lookups = choice_records(model, data, data.monitor_lookups)
    result.extra["lookup"] = round(100 * float(np.mean([r["extracted"] == r["answer"] for r in lookups])), 2)
    return result


def choice_records(model: Any, data: ChainData, pairs: list[tuple[dict[str, Any], list[int]]]) -> list[dict[str, Any]]:
    """Each (item, clip indices) pair's item with `extracted`, the option whose answer token scores highest."""
    records = []
    batch_size = data.settings.batch_size
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        items, chosen = [c[0] for c in chunk], [c[1] for c in chunk]
        device = next(model.parameters()).device
        batch = {k: v.to(device) for k, v in data.collate(items, chosen, [item["answer"] for item in items]).items()}
        logits, _ = decoder_forward(model, batch["input_ids"], batch["attention_mask"], batch["audio_encoded"])
        final = logits[torch.arange(len(items)), batch["final_position"]]
        for row, item in enumerate(items):
            scores = [float(final[row, data.answer_ids[c]]) for c in item["choices"]]
            records.append({**item, "extracted": item["choices"][int(np.argmax(scores))]})
    return records


def summarize_monitor(records: list[dict[str, Any]], step: int) -> ChainMonitor:
    correct = lambda rs: [r["extracted"] == r["answer"] for r in rs]  # noqa: E731
    percent = lambda rs: round(100 * float(np.mean(correct(rs))), 2) if rs else float("nan")  # noqa: E731
    by = lambda key, value, rs: [r for r in rs if r[key] == value]  # noqa: E731
    conflicting = by("hint", "conflicting", records)
    r_by_domain = {}
    for domain in DOMAINS:
        rs = by("task", domain, conflicting)
        x, y = np.array([r["snr_db"] for r in rs]), np.array(correct(rs), dtype=float)
        r_by_domain[domain] = round(float(np.corrcoef(x, y)[0, 1]), 3) if y.std() > 0 and x.std() > 0 else 0.0
    return ChainMonitor(
        step=step,
        accuracy={h: percent(by("hint", h, records)) for h in HINT_CONDITIONS},
        no_hint_by_relation={rel: percent(by("relation", rel, by("hint", "none", records)))
                             for rel in ("direct", "after", "before")},
        conflicting_by_domain={d: percent(by("task", d, conflicting)) for d in DOMAINS},
        snr_r_by_domain=r_by_domain,
        follows_conflicting_hint=round(100 * float(np.mean([r["extracted"] == r["hinted_choice"]
                                                            for r in conflicting])), 2),
    )


def train_chains(run_dir: str | Path, settings: ChainsTrainSettings = ChainsTrainSettings(), progress: bool = True,
                 stop_after: int | None = None, device: str = "cpu", exact: bool = True,
                 eval_benchmark: str | Path | None = None, resume_from: str | Path | None = None
                 ) -> dict[str, Any] | None:
    """Train (or continue training) the clip-chain model in `run_dir`; returns the final metrics when finished.

    `eval_benchmark`: an MMAU-format JSON whose test split the finished model is scored on (`metrics.json`'s
    `test` and `test_with_silence`, as for the other workshop models).
    `stop_after`: leave after that many steps of this call (saving the state), for budgeted slices of the run.
    `exact=False` resumes even when the training clips encode differently from the saved run's (another torch
    build or thread count), which loses the match with an uninterrupted run.
    `resume_from`: a state kept elsewhere (a `state-NNNNNN` folder, or a run folder) to start an empty `run_dir`
    from.
    """
    from lens_audio import HookedAudioLM
    from lens_audio.organisms.workshop_v1.recipe import save_atomically

    settings.check()
    started = time.perf_counter()
    torch.set_num_threads(settings.threads)
    run = RunFolder(Path(run_dir), RECIPE, asdict(settings))
    if run.finished():
        print(f"{run.final} already holds the finished model; nothing to do.")
        return json.loads((run.final / "metrics.json").read_text())
    if resume_from is not None and run.latest() is None:
        run.adopt(resume_from)
    model, processor = build_model(settings, settings.decoder_config())
    model.eval()
    data = ChainData(HookedAudioLM.from_hf_model(model, processor), processor, settings, progress)
    probes = ChainProbes(model.config.text_config.hidden_size, settings)
    model.to(device)
    probes.to(device)
    trainer = Trainer(run, pool_fingerprint(data), sampler=data, exact=exact, progress=progress,
                      checkpoint_every=settings.checkpoint_every, log_every=settings.log_every, stop_after=stop_after,
                      total_steps=settings.steps, introduced_later=INTRODUCED_LATER,
                      inputs="the training clips' encoder outputs (another torch build or thread count?)",
                      mismatch_advice="pass --allow-inexact-resume (exact=False) to continue anyway.")

    def step(loop: LoopState) -> StepOutput:
        stage = 1 if loop.step < settings.steps_audio else 2
        batch = {k: v.to(device) for k, v in data.batch(stage, lookups=loop.step >= settings.lookup_from).items()}
        logits, hidden_states = decoder_forward(model, batch["input_ids"], batch["attention_mask"],
                                                batch["audio_encoded"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), ignore_index=-100)
        aid, stats = probes.losses(hidden_states, batch, model.config.audio_token_id)
        return StepOutput(loss + aid, {"loss": loss.item(), "aid_loss": aid.item(), **stats}, stage)

    def monitor_now(loop: LoopState) -> None:
        if loop.step % settings.monitor_every == 0 or loop.step == settings.steps:
            model.eval()
            result = monitor(model, data, loop.step)
            model.model.language_model.train()
            loop.monitors.append(result.to_json())
            loop.stopped = loop.step >= settings.min_steps and result.follows_rule()
            run.log({"monitor": result.to_json(), "follows_rule": result.follows_rule()})

    model.model.language_model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    phase = Phase(settings.steps, settings.learning_rate, settings.warmup_steps, label="training (clip chains)")
    # the model and the probes clipped apart: the probes' own (fitting) gradients must not scale down the model's
    finished = trainer.run_phase(0, phase, {"model": model, "probes": probes}, step,
                                 clip_groups=[trainable, list(probes.parameters())], on_step_end=monitor_now)
    if not finished:
        return None
    loop = trainer.loop
    model.eval()
    model.to("cpu")
    metrics = {"steps_trained": loop.step, "stopped_by_rule": loop.stopped,
               **checkpoint_metrics(model, processor, settings, loop, eval_benchmark, progress),
               "train_seconds_this_call": round(time.perf_counter() - started, 1), "device": device}
    save_atomically(model, processor, metrics, run.final)
    run.log({"finished": True, "step": loop.step, "final": str(run.final)})
    return metrics


def checkpoint_metrics(model: Any, processor: Any, settings: ChainsTrainSettings, loop: LoopState,
                       eval_benchmark: str | Path | None, progress: bool) -> dict[str, Any]:
    """What a written checkpoint's `metrics.json` says of any clip-chain model, finished or not: recipe, settings,
    sizes, loss history and monitor results, and with `eval_benchmark` its test-split results."""
    from lens_audio.organisms.workshop_v1.recipe import evaluate_checkpoint

    metrics: dict[str, Any] = {
        "recipe": RECIPE, "settings": asdict(settings), "decoder_config": settings.decoder_config(),
        "audio_side_from": "workshop-v1", "loss_history": loop.history, "monitor": loop.monitors,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if eval_benchmark is not None:
        metrics.update(evaluate_checkpoint(model, processor, eval_benchmark, progress))
    return metrics


def pool_fingerprint(data: ChainData) -> str:
    """A digest of the frozen encoder outputs: a resumed run checks it sees the very same training inputs."""
    return inputs_fingerprint(data.encoded)


def export_latest(run_dir: str | Path, out_dir: str | Path, eval_benchmark: str | Path | None = None,
                  progress: bool = False) -> Path:
    """Write the latest checkpoint of an unfinished run in `run_dir` as a regular HF checkpoint (to look at a run in
    progress; `metrics.json` says which step it is from, and with `eval_benchmark` holds its test-split results as
    a finished run's does). Returns `out_dir`. It reads only `state.json` and `weights.safetensors`, so it also
    exports a state written by an older lens_audio (with a pickle `rest.pt`, which a run no longer resumes from)."""
    from safetensors.torch import load_file

    from lens_audio.organisms.workshop_v1.recipe import save_atomically

    latest = RunFolder(Path(run_dir), RECIPE, {}).latest()
    if latest is None:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint (state-NNNNNN/); start the run first.")
    meta = json.loads((latest / "state.json").read_text())
    settings = ChainsTrainSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items()})
    model, processor = build_model(settings, settings.decoder_config())
    weights = load_file(latest / "weights.safetensors")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(weights[f"model.{name}"])
    model.eval()
    loop = LoopState(**meta["loop"])
    metrics = {"partial": True, "step": loop.step,
               **checkpoint_metrics(model, processor, settings, loop, eval_benchmark, progress)}
    save_atomically(model, processor, metrics, Path(out_dir))
    return Path(out_dir)
