"""The clip-chain organism's acceptance checks: is the answer's content read late, and only late?

The clip-chain model (`task.py`, `recipe.py` in this folder) is built so that the answer clip's content reaches the
final prompt position only in the upper half of the decoder. Before any head statistics are computed on it, four
checks say whether it does, on one split (dev, then repeated on calibration), reported whatever they show:

1. **Patching restore by layer** (`PatchingCheck`): for each decoder layer L, the final prompt position's
   `blocks.L.hook_resid_post` from the audio run is patched into the silence twin's run (`batch.silence_twin()`),
   the rest of the silence run continues from block L + 1, and the choice is scored (argmax over the options'
   first tokens at the final position). Accuracy per layer on no-hint items (the split's items when it has
   none), beside the silence run's and the audio run's. Pass: every layer below `early_below` at most
   `patch_early_gain` points above silence, every layer from `late_from` on at least `patch_late_share` of the
   audio accuracy.
2. **Linear probe** (`ProbeCheck`): the answer clip's class among the item's options, read from the final
   position of the audio run by a multinomial logistic regression, per point (the embeddings, then each
   layer's `resid_post`), cross-validated in folds grouped by clip set (`clip_id`). No-hint and conflicting
   items (a congruent hint writes the class in the text). Pass: at most `probe_early_max` percent below
   `early_below`.
3. **Single-layer steering** (`SteeringCheck`): accuracy on conflicting items with the adaptive direction of one
   layer (audio minus silence of that layer's final-position `resid_post`) added with `beta` to the last
   block's `resid_post` (`FastSteering.layer_direction` and `FastSteering.correct`), per beta of a small grid,
   against the unsteered accuracy. Pass, at one beta of the grid: every layer below `early_below` within
   `steer_early_tolerance` points of the baseline and every layer from `late_from` on at least `steer_late_gain`
   points above it.
4. **Validity of the top heads** (`ValidityCheck`): the `k_heads` heads whose final-token audio attention mass
   (`listening_signal`) has the highest |r| with correctness on calibration's conflicting items; on the split's
   conflicting items, their signal (the mean of the heads' mass, each signed by its calibration r) must keep
   r >= `within_r_min` within domains (`validity.within_stratum_r`, stratum = `task`) and must lose it when the
   same heads' mass is read from the silence twin's run (r <= `silence_r_max`). Intervals resample clip sets. The
   r within question kinds (`relation`) is reported beside them, not ruled on.

Passes over the items: one audio and one silence forward per item, each keeping every layer's final-position
residual and the listening signal (`analysis.final_position.final_states_and_listening`); a calibration audio
forward for the head selection when the split is not calibration; and for the patching, one silence forward per
patched item, restarted from block L + 1 for each L (`analysis.final_position.final_resid_patch_logits`). The
probe is `analysis.probes.answer_probe`. Here: the rules, the typed results and `acceptance_checks`; their JSON
and table in `acceptance_report`. `lens-audio workshop acceptance --model PATH` runs them and prints the table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from lens_audio.analysis.final_position import (
    best_options,
    final_resid_logits,
    final_resid_patch_logits,
    final_states_and_listening,
)
from lens_audio.analysis.probes import L2_GRID, answer_probe
from lens_audio.analysis.statistics import pearson_columns
from lens_audio.analysis.validity import ClusteredR, clustered_r, within_stratum_r
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.checks import check_float, check_int, check_seed
from lens_audio.inputs.plain_text import encode_text
from lens_audio.organisms.workshop_chains.acceptance_report import JsonFields, format_acceptance
from lens_audio.paper.fast_steering import FastSteering

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

STRATA = ("hint", "task", "relation")  # what `even_subset` keeps the proportions of


# --- rules -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AcceptanceRules:
    """The thresholds of the four checks other than the layer bounds (percent points, shares and r)."""

    patch_early_gain: float = 10.0  # patched accuracy below early_below: at most this many points above silence
    patch_late_share: float = 0.9  # from late_from on: at least this share of the audio accuracy
    probe_early_max: float = 40.0  # probe accuracy (percent) below early_below: at most this
    steer_early_tolerance: float = 3.0  # steered accuracy below early_below: within this many points of baseline
    steer_late_gain: float = 15.0  # from late_from on: at least this many points above baseline
    within_r_min: float = 0.3  # the top heads' signal: within-domain r at least this
    silence_r_max: float = 0.1  # ... and r of the silence twin's signal at most this

    def __post_init__(self) -> None:
        for name in ("patch_early_gain", "probe_early_max", "steer_early_tolerance", "steer_late_gain"):
            check_float(name, getattr(self, name), 0)
        check_float("patch_late_share", self.patch_late_share, 0, 1)
        check_float("within_r_min", self.within_r_min, -1, 1)
        check_float("silence_r_max", self.silence_r_max, -1, 1)


# --- typed results -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchingCheck(JsonFields):
    """Accuracy (percent) after patching layer L's final-position `resid_post` from the audio run into the silence
    twin's run, `by_layer[L]`, on `n` items (`items`: which), beside the silence and audio runs' accuracies."""

    items: str
    n: int
    audio: float
    silence: float
    by_layer: list[float]
    early_limit: float  # silence + patch_early_gain
    late_limit: float  # patch_late_share * audio
    passed: bool


@dataclass(frozen=True)
class ProbeCheck(JsonFields):
    """Cross-validated accuracy (percent) of a linear probe for the answer clip's class among the item's options,
    `by_point[p]`: p = 0 the embeddings, p = L + 1 layer L's `resid_post`, at the final prompt position."""

    items: str
    n: int
    n_groups: int
    folds: int
    chance: float  # percent: the mean of 1 / (number of options)
    l2: list[float]  # the penalties each training fold chose from (nested cross-validation)
    by_point: list[float]
    passed: bool


@dataclass(frozen=True)
class SteeringCheck(JsonFields):
    """Accuracy (percent) with one layer's adaptive direction added at the last block, `by_beta[b][L]` for beta
    `betas[b]`, against the unsteered `baseline`; `passed_by_beta[b]` applies the rule at that beta."""

    items: str
    n: int
    baseline: float
    betas: list[float]
    by_beta: list[list[float]]
    passed_by_beta: list[bool]
    passed: bool


@dataclass(frozen=True)
class HeadValidity(JsonFields):
    """One top head: r of its audio mass with correctness on calibration (how it was chosen) and on the split, the
    within-domain r there, the r of its mass in the silence twin's run, and its mean mass in both runs."""

    head: tuple[int, int]
    r_calibration: float
    r: float
    r_within: float
    r_silence: float
    mass_audio: float
    mass_silence: float


@dataclass(frozen=True)
class ValidityCheck:
    """The top heads (highest |r| on `n_selection` calibration items) and their signal on the split's `n` items:
    `signal` r, `within` the within-domain r, `silence` the r of the silence twin's signal (intervals by clip set)."""

    selection_items: str
    n_selection: int
    items: str
    n: int
    n_clusters: int
    heads: list[HeadValidity]
    signal: ClusteredR
    within: ClusteredR
    silence: ClusteredR
    passed: bool
    within_relation: ClusteredR | None = None  # reported, not a rule: r within question kinds (direct/after/before)

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in ("selection_items", "n_selection", "items", "n", "n_clusters", "passed")},
            "heads": [h.to_json() for h in self.heads],
            **{k: getattr(self, k).to_json() for k in ("signal", "within", "silence")},
            "within_relation": None if self.within_relation is None else self.within_relation.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidityCheck:
        return cls(
            **{k: data[k] for k in ("selection_items", "n_selection", "items", "n", "n_clusters", "passed")},
            heads=[HeadValidity.from_json(h) for h in data["heads"]],
            **{k: ClusteredR.from_json(data[k]) for k in ("signal", "within", "silence")},
            within_relation=None if data.get("within_relation") is None else ClusteredR.from_json(
                data["within_relation"]),
        )


CHECKS = ("patching", "probe", "steering", "validity")


@dataclass(frozen=True)
class AcceptanceChecks:
    """The four acceptance checks on one split; `passed` says which pass, `format()` prints them as a table."""

    model: str
    split: str
    n_items: int  # evaluated
    n_split: int  # in the split
    limit: int | None
    n_layers: int
    early_below: int
    late_from: int
    rules: AcceptanceRules
    patching: PatchingCheck
    probe: ProbeCheck
    steering: SteeringCheck
    validity: ValidityCheck
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name).passed) for name in CHECKS}

    @property
    def all_passed(self) -> bool:
        return all(self.passed.values())

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in ("model", "split", "n_items", "n_split", "limit", "n_layers",
                                             "early_below", "late_from")},
            "rules": asdict(self.rules),
            **{name: getattr(self, name).to_json() for name in CHECKS},
            "passed": self.passed,
            "seconds": dict(self.seconds),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AcceptanceChecks:
        kinds = {"patching": PatchingCheck, "probe": ProbeCheck, "steering": SteeringCheck, "validity": ValidityCheck}
        return cls(
            **{k: data[k] for k in ("model", "split", "n_items", "n_split", "limit", "n_layers", "early_below",
                                    "late_from")},
            rules=AcceptanceRules(**data["rules"]),
            **{name: kinds[name].from_json(data[name]) for name in CHECKS},
            seconds=dict(data.get("seconds", {})),
            notes=list(data.get("notes", [])),
        )

    def format(self) -> str:
        """A readable report: one row per layer (patching, probe, steering per beta), then validity and verdicts
        (`acceptance_report.format_acceptance`); a `!` marks a cell that breaks its check's rule."""
        return format_acceptance(self, STRATA)


# --- the checks --------------------------------------------------------------------------------------------------
def acceptance_checks(
    model: HookedAudioLM,
    items: Sequence[dict[str, Any]],
    split: str = "dev",
    *,
    limit: int | None = None,
    early_below: int = 8,
    late_from: int = 10,
    betas: Sequence[float] = (1.0, 2.0, 3.0),
    k_heads: int = 4,
    folds: int = 5,
    l2: float | Sequence[float] = L2_GRID,
    rules: AcceptanceRules = AcceptanceRules(),
    selection_split: str = "calibration",
    prompt: str | Callable[[dict[str, Any]], str] | None = None,
    batch_size: int = 16,
    n_bootstrap: int = 1000,
    seed: int = 0,
    model_label: str = "",
    progress: bool = False,
) -> AcceptanceChecks:
    """The four acceptance checks of a clip-chain model on `split` of the benchmark `items` (all splits, as
    `load_mmau` gives them; the head selection reads `selection_split`).

    `limit`: evaluate an even, stratified subset of that many of the split's items (`even_subset`), not the
    first ones. `prompt`: the workshop profile's by default. Every option must be one token (choice scoring at
    the final position).
    """
    from lens_audio.organisms.evaluate import PROFILE

    started = time.perf_counter()
    n_layers = model.cfg.n_layers
    check_int("early_below", early_below, 1, n_layers)
    check_int("late_from", late_from, early_below, n_layers - 1)
    check_int("k_heads", k_heads, 1, n_layers * model.cfg.n_heads)
    check_int("folds", folds, 2)
    check_int("batch_size", batch_size, 1)
    check_int("n_bootstrap", n_bootstrap, 2)
    check_seed("seed", seed)
    l2 = [check_float("l2", v, 0) for v in ([l2] if isinstance(l2, (int, float)) else l2)]
    betas = [check_float(f"betas[{i}]", b) for i, b in enumerate(betas)]
    if not betas:
        raise ValueError("betas must hold at least one steering strength.")
    prompt = PROFILE.prompt if prompt is None else prompt
    in_split = [i for i in items if i.get("split") == split]
    selection = [i for i in items if i.get("split") == selection_split]
    if not in_split:
        raise ValueError(f"no items of split {split!r} (splits here: {sorted({str(i.get('split')) for i in items})}).")
    if not selection:
        raise ValueError(f"no items of the selection split {selection_split!r}: the top heads are chosen there.")
    chosen = even_subset(in_split, limit) if limit is not None else list(in_split)
    if not FastSteering.applies(model, chosen + selection, "choice"):
        raise ValueError("the acceptance checks score choices by their first token: every option must be one token.")
    notes: list[str] = []
    seconds: dict[str, float] = {}

    tick = time.perf_counter()
    audio = _final_states(model, chosen, prompt, batch_size, False, progress, "audio runs")
    silence = _final_states(model, chosen, prompt, batch_size, True, progress, "silence runs")
    seconds["audio and silence runs"] = time.perf_counter() - tick
    option_ids, answers = _choices(model, chosen)
    fast = FastSteering(model, audio.points, silence.points, None, option_ids, answers)
    correct = fast.correct()
    silence_correct = _option_correct(model, silence.points[:, -1], option_ids, answers)

    # 1. patching restore by layer
    tick = time.perf_counter()
    patch_rows, patch_name = _rows(chosen, ("none",), "no-hint items")
    patched = np.zeros((n_layers, len(patch_rows)), dtype=bool)
    for start in tqdm(range(0, len(patch_rows), batch_size), desc="patching", disable=not progress):
        rows = patch_rows[start : start + batch_size]
        batch = _batch(model, [chosen[i] for i in rows], prompt).silence_twin()
        logits = final_resid_patch_logits(model, batch, audio.points[rows, 1:])  # [layer, batch, vocab]
        patched[:, start : start + len(rows)] = best_options(logits, [option_ids[i] for i in rows]) == answers[rows]
    audio_acc, silence_acc = _percent(correct[patch_rows]), _percent(silence_correct[patch_rows])
    by_layer = [_percent(patched[layer]) for layer in range(n_layers)]
    early_limit, late_limit = silence_acc + rules.patch_early_gain, rules.patch_late_share * audio_acc
    patching = PatchingCheck(
        patch_name, len(patch_rows), audio_acc, silence_acc, by_layer, early_limit, late_limit,
        all(v <= early_limit for v in by_layer[:early_below]) and all(v >= late_limit for v in by_layer[late_from:]),
    )
    seconds["patching"] = time.perf_counter() - tick

    # 2. linear probe of the answer clip's class
    tick = time.perf_counter()
    probe_rows, probe_name = _rows(chosen, ("none", "conflicting"), "no-hint and conflicting items")
    groups = [str(chosen[i].get("clip_id", chosen[i]["id"])) for i in probe_rows]
    n_folds = min(folds, len(set(groups)))
    fitted, chance, why = answer_probe(  # the analysis layer's probe of the answer's class, at every point
        audio.points[probe_rows], [chosen[i]["choices"] for i in probe_rows], [chosen[i]["answer"] for i in probe_rows],
        groups, folds, l2, seed, max_classes=10_000, min_items=1)
    by_point = fitted if fitted is not None else [math.nan] * (n_layers + 1)
    if why is not None:
        notes.append(f"{why}.")
    probe = ProbeCheck(
        probe_name, len(probe_rows), len(set(groups)), n_folds, chance, l2, by_point,
        all(v <= rules.probe_early_max for v in by_point[: early_below + 1]),  # the embeddings, then layers < early
    )
    seconds["probe"] = time.perf_counter() - tick

    # 3. single-layer steering
    tick = time.perf_counter()
    steer_rows, steer_name = _rows(chosen, ("conflicting",), "conflicting items")
    subset = FastSteering(model, audio.points[steer_rows], silence.points[steer_rows], None,
                          [option_ids[i] for i in steer_rows], answers[steer_rows])
    baseline = _percent(subset.correct())
    by_beta = [[_percent(subset.correct(subset.layer_direction([layer]), beta)) for layer in range(n_layers)]
               for beta in betas]
    passed_by_beta = [
        all(abs(v - baseline) <= rules.steer_early_tolerance for v in values[:early_below])
        and all(v - baseline >= rules.steer_late_gain for v in values[late_from:])
        for values in by_beta
    ]
    steering = SteeringCheck(steer_name, len(steer_rows), baseline, betas, by_beta, passed_by_beta,
                             any(passed_by_beta))
    seconds["steering"] = time.perf_counter() - tick

    # 4. validity of the top heads
    tick = time.perf_counter()
    selection_rows, selection_name = _rows(selection, ("conflicting",), "conflicting items")
    selection_items = [selection[i] for i in selection_rows]
    ids = {item["id"]: row for row, item in enumerate(chosen)}
    if all(item["id"] in ids for item in selection_items):  # the split is the selection split: reuse its runs
        index = [ids[item["id"]] for item in selection_items]
        selection_mass, selection_correct = audio.mass[index], correct[index]
    else:
        selected = _final_states(model, selection_items, prompt, batch_size, False, progress, "selection runs")
        selection_mass = selected.mass
        selection_correct = _option_correct(model, selected.points[:, -1], *_choices(model, selection_items))
    shape = selection_mass.shape[1:]
    r_calibration = pearson_columns(selection_mass.reshape(len(selection_items), -1),
                                    selection_correct.astype(float)).reshape(shape)
    heads = _top_abs(r_calibration, k_heads)
    validity = _validity(
        chosen, correct, audio.mass, silence.mass, heads, r_calibration, selection_name, len(selection_items),
        rules, n_bootstrap, seed,
    )
    if not np.isfinite(r_calibration).any():
        notes.append("no head's calibration r is defined (correctness or mass constant): the heads are arbitrary.")
    seconds["validity"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    return AcceptanceChecks(
        model=model_label or str(model.cfg.model_name), split=split, n_items=len(chosen), n_split=len(in_split),
        limit=limit, n_layers=n_layers, early_below=early_below, late_from=late_from, rules=rules,
        patching=patching, probe=probe, steering=steering, validity=validity,
        seconds={k: round(v, 1) for k, v in seconds.items()}, notes=notes,
    )


def even_subset(items: Sequence[dict[str, Any]], limit: int, keys: Sequence[str] = STRATA) -> list[dict[str, Any]]:
    """`limit` of `items`, deterministic and spread evenly: the items sorted (stably) by `keys` (those every item
    has), then every (len / limit)-th, from the middle of each step. So each group of the first key, and each group
    of the first two, ..., gets its share of `limit` to within one item, taken evenly through the group's own order.
    Returned in item order. (The first `limit` items would be a few clip sets' questions only.)"""
    check_int("limit", limit, 1)
    items = list(items)
    if limit >= len(items):
        return items
    keys = [k for k in keys if all(k in i for i in items)]
    order = sorted(range(len(items)), key=lambda i: tuple(str(items[i][k]) for k in keys))
    picked = [order[int((j + 0.5) * len(items) / limit)] for j in range(limit)]
    return [items[i] for i in sorted(picked)]


# --- pieces ------------------------------------------------------------------------------------------------------
@dataclass
class _States:
    points: Float[Tensor, "item point d_model"]  # resid_pre of each block, then the last resid_post
    mass: Float[np.ndarray, "item layer head"]  # final-token audio attention mass


@torch.no_grad()
def _final_states(model: HookedAudioLM, items: Sequence[dict[str, Any]], prompt, batch_size: int, silence: bool,
                  progress: bool, description: str) -> _States:
    """One forward per batch (the silence twin's with `silence`) that keeps the final position's residual stream at
    every block input and the last output (`FastSteering`'s layout) and the listening signal of every head."""
    points, masses = [], []
    for start in tqdm(range(0, len(items), batch_size), desc=description, disable=not progress):
        batch = _batch(model, items[start : start + batch_size], prompt)
        state, mass = final_states_and_listening(model, batch.silence_twin() if silence else batch)
        points.append(state)
        masses.append(mass.numpy())
    return _States(torch.cat(points), np.concatenate(masses))


def _batch(model: HookedAudioLM, items: Sequence[dict[str, Any]], prompt) -> AudioBatch:
    return model.to_batch([i["audio_path"] for i in items], [render_prompt(i, prompt) for i in items])


def _choices(model: HookedAudioLM, items: Sequence[dict[str, Any]]) -> tuple[list[list[int]], np.ndarray]:
    """Each item's options as their first tokens, and the index of its answer among them."""
    return ([[encode_text(model.tokenizer, c)[0] for c in i["choices"]] for i in items],
            np.array([i["choices"].index(i["answer"]) for i in items]))


def _option_correct(model: HookedAudioLM, final_resid: Tensor, option_ids, answers: np.ndarray) -> np.ndarray:
    """Whether the best option at the final position is the answer, from the final residual (before ln_final)."""
    return best_options(final_resid_logits(model, final_resid), option_ids) == np.asarray(answers)


def _rows(items: Sequence[dict[str, Any]], hints: Sequence[str], name: str) -> tuple[list[int], str]:
    """Indices of the items with one of `hints`, and their name; when none has one, all items, named by the hint
    conditions they have and marked as the fallback."""
    rows = [row for row, item in enumerate(items) if item.get("hint") in hints]
    if rows:
        return rows, name
    present = sorted({str(item.get("hint")) for item in items})
    return list(range(len(items))), f"{' and '.join(present)} items, as the split has no {name}"


def _top_abs(r: np.ndarray, k: int) -> list[tuple[int, int]]:
    order = np.argsort(np.nan_to_num(np.abs(r), nan=-np.inf), axis=None)[::-1][:k]
    return [tuple(int(i) for i in np.unravel_index(flat, r.shape)) for flat in order]


def _validity(items, correct, mass_audio, mass_silence, heads, r_calibration, selection_name, n_selection, rules,
              n_bootstrap, seed) -> ValidityCheck:
    rows, name = _rows(items, ("conflicting",), "conflicting items")
    y = correct[rows].astype(float)
    strata = [str(items[i].get("task")) for i in rows]
    clusters = [str(items[i].get("clip_id", items[i]["id"])) for i in rows]
    audio, silent = mass_audio[rows], mass_silence[rows]
    per_head = []
    for layer, head in heads:
        a, s = audio[:, layer, head].astype(float), silent[:, layer, head].astype(float)
        per_head.append(HeadValidity(
            (layer, head), float(r_calibration[layer, head]), float(pearson_columns(a[:, None], y)[0]),
            float(within_stratum_r(a, y, strata)[0]), float(pearson_columns(s[:, None], y)[0]),
            float(a.mean()), float(s.mean()),
        ))
    signs = [1.0 if not r_calibration[h] < 0 else -1.0 for h in heads]
    signal = lambda mass: np.mean([s * mass[:, l, h] for s, (l, h) in zip(signs, heads)], axis=0)  # noqa: E731
    common = {"clusters": clusters, "n_bootstrap": n_bootstrap, "seed": seed}
    plain = clustered_r(signal(audio), y, **common)
    within = clustered_r(signal(audio), y, strata=strata, **common)
    silence = clustered_r(signal(silent), y, **common)
    by_relation = None
    if all("relation" in items[i] for i in rows):
        by_relation = clustered_r(signal(audio), y, strata=[str(items[i]["relation"]) for i in rows], **common)
    return ValidityCheck(selection_name, n_selection, name, len(rows), len(set(clusters)), per_head, plain, within,
                         silence, within.r >= rules.within_r_min and silence.r <= rules.silence_r_max, by_relation)


def _percent(correct) -> float:
    values = np.asarray(correct, dtype=float)
    return float(100 * values.mean()) if values.size else math.nan
