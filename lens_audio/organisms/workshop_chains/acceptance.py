"""The clip-chain organism's acceptance checks: is the answer's content read late, and only late?

The clip-chain model (`clip_chains.py`, `train_chains.py`) is built so that the answer clip's content reaches the
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
residual and (in the same forward) the listening signal; a calibration audio forward for the head selection
when the split is not calibration; and for the patching, one silence forward per patched item that keeps every
layer's `resid_post`, restarted from block L + 1 for each L (`model.decoder_state` / `model.run_blocks`, as
`analysis.patching` does) with only the final position changed.

`lens-audio workshop acceptance --model PATH` runs them and prints `AcceptanceChecks.format()`.
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

from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.statistics import pearson_columns
from lens_audio.analysis.validity import ClusteredR, clustered_r, within_stratum_r
from lens_audio.benchmark.prompts import render_prompt
from lens_audio.checks import check_float, check_int, check_seed
from lens_audio.inputs.plain_text import encode_text
from lens_audio.model.hook_point import block_hook_name
from lens_audio.paper.fast_steering import FastSteering, final_state_hooks
from lens_audio.paper.results import head_label

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM

STRATA = ("hint", "task", "relation")  # what `even_subset` keeps the proportions of
L2_GRID = (0.1, 1.0, 10.0)  # the probe's penalties, chosen by nested cross-validation


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
class PatchingCheck:
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

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PatchingCheck:
        return cls(**{**data, **{k: _nan(data[k]) for k in ("audio", "silence", "early_limit", "late_limit")},
                      "by_layer": _floats(data["by_layer"])})


@dataclass(frozen=True)
class ProbeCheck:
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

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeCheck:
        return cls(**{**data, "chance": _nan(data["chance"]), "by_point": _floats(data["by_point"])})


@dataclass(frozen=True)
class SteeringCheck:
    """Accuracy (percent) with one layer's adaptive direction added at the last block, `by_beta[b][L]` for beta
    `betas[b]`, against the unsteered `baseline`; `passed_by_beta[b]` applies the rule at that beta."""

    items: str
    n: int
    baseline: float
    betas: list[float]
    by_beta: list[list[float]]
    passed_by_beta: list[bool]
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SteeringCheck:
        return cls(**{**data, "baseline": _nan(data["baseline"]), "by_beta": [_floats(r) for r in data["by_beta"]]})


@dataclass(frozen=True)
class HeadValidity:
    """One top head: r of its audio mass with correctness on calibration (how it was chosen) and on the split, the
    within-domain r there, the r of its mass in the silence twin's run, and its mean mass in both runs."""

    head: tuple[int, int]
    r_calibration: float
    r: float
    r_within: float
    r_silence: float
    mass_audio: float
    mass_silence: float

    def to_json(self) -> dict[str, Any]:
        return _jsonable({**asdict(self), "head": list(self.head)})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeadValidity:
        values = ("r_calibration", "r", "r_within", "r_silence", "mass_audio", "mass_silence")
        return cls(tuple(data["head"]), *(_nan(data[k]) for k in values))


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
        """A readable report: one row per layer (patching, probe, steering per beta), then validity and verdicts.

        A `!` marks a cell that breaks its check's rule."""
        r, e, late = self.rules, self.early_below, self.late_from
        p, pr, st, v = self.patching, self.probe, self.steering, self.validity
        subset = f"{self.n_items} of {self.n_split} items, even over {' x '.join(STRATA)}" if self.limit else (
            f"{self.n_items} items")
        lines = [
            f"acceptance checks: {self.model}, split {self.split} ({subset}); {self.n_layers} layers, "
            f"early = layers < {e}, late = layers >= {late}",
            f"  patching on {p.items} (n={p.n}): audio {_pct(p.audio)}, silence {_pct(p.silence)} "
            f"(early <= {_pct(p.early_limit)}, late >= {_pct(p.late_limit)})",
            f"  probe on {pr.items} (n={pr.n}), {pr.folds} folds by clip set ({pr.n_groups} sets), "
            f"chance {_pct(pr.chance)}, l2 from {', '.join(f'{v:g}' for v in pr.l2)} by nested CV "
            f"(early <= {r.probe_early_max:g}%)",
            f"  steering on {st.items} (n={st.n}): baseline {_pct(st.baseline)} (early within "
            f"+-{r.steer_early_tolerance:g}, late >= +{r.steer_late_gain:g} points)",
            "",
        ]
        header = ["layer", "patched", "probe"] + [f"steer b={b:g}" for b in st.betas]
        rows = [["emb", "", _cell(pr.by_point[0], 0 < e and not pr.by_point[0] <= r.probe_early_max)]
                + [""] * len(st.betas)]
        for layer in range(self.n_layers):
            early, is_late = layer < e, layer >= late
            patched = p.by_layer[layer]
            bad_patch = (early and not patched <= p.early_limit) or (is_late and not patched >= p.late_limit)
            probe = pr.by_point[layer + 1]
            row = [str(layer), _cell(patched, bad_patch), _cell(probe, early and not probe <= r.probe_early_max)]
            for values in st.by_beta:
                gain = values[layer] - st.baseline
                bad = (early and not abs(gain) <= r.steer_early_tolerance) or (
                    is_late and not gain >= r.steer_late_gain)
                row.append(_cell(values[layer], bad))
            rows.append(row)
        widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
        for row in [header, *rows]:
            lines.append("  " + "  ".join(str(x).rjust(w) for x, w in zip(row, widths)))
        lines += [
            "",
            f"  validity: top {len(v.heads)} heads by |r| on calibration's {v.selection_items} (n={v.n_selection}), "
            f"measured on {v.items} (n={v.n}, {v.n_clusters} clip sets)",
            "    head     r(cal)   r   r within  r silence  mass audio  mass silence",
        ]
        for h in v.heads:
            lines.append(f"    {head_label(h.head):7s} {_r(h.r_calibration):>6s} {_r(h.r):>6s} {_r(h.r_within):>8s} "
                         f"{_r(h.r_silence):>9s}  {h.mass_audio:10.3f}  {h.mass_silence:12.3f}")
        lines.append(f"    signal (mean mass, signed by calibration r): r {v.signal.describe()}, within domains "
                     f"{v.within.describe()} (>= {r.within_r_min:g}), silence twin {v.silence.describe()} "
                     f"(<= {r.silence_r_max:g})")
        if v.within_relation is not None:
            lines.append(f"    (not a rule) signal r within question kinds (direct / after / before): "
                         f"{v.within_relation.describe()}")
        lines.append("")
        verdicts = ", ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in self.passed.items())
        passing = [f"{b:g}" for b, ok in zip(st.betas, st.passed_by_beta) if ok]
        lines.append(f"  {verdicts}" + (f" (steering passes at beta {', '.join(passing)})" if passing else ""))
        if self.seconds:
            lines.append("  seconds: " + ", ".join(f"{k} {s:.0f}" for k, s in self.seconds.items()))
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


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
    option_ids = [[encode_text(model.tokenizer, c)[0] for c in i["choices"]] for i in chosen]
    answers = np.array([i["choices"].index(i["answer"]) for i in chosen])
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
        logits = final_resid_patch_logits(model, batch, audio.points[rows, 1:])
        for layer in range(n_layers):
            patched[layer, start : start + len(rows)] = _choose(logits[layer], [option_ids[i] for i in rows],
                                                                answers[rows])
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
    classes = sorted({c for i in chosen for c in i["choices"]})
    labels = np.array([classes.index(chosen[i]["answer"]) for i in probe_rows])
    options = np.zeros((len(probe_rows), len(classes)), dtype=bool)
    for row, i in enumerate(probe_rows):
        options[row, [classes.index(c) for c in chosen[i]["choices"]]] = True
    groups = [str(chosen[i].get("clip_id", chosen[i]["id"])) for i in probe_rows]
    n_folds = min(folds, len(set(groups)))
    features = audio.points[probe_rows].detach().float().cpu()
    by_point = [
        probe_accuracy(features[:, point], labels, options, groups, n_folds, l2, seed) if n_folds >= 2 else math.nan
        for point in range(n_layers + 1)
    ]
    if n_folds < 2:
        notes.append(f"probe not fitted: {len(set(groups))} clip set(s), cross-validation needs two.")
    probe = ProbeCheck(
        probe_name, len(probe_rows), len(set(groups)), n_folds, _percent(1 / options.sum(1)), l2, by_point,
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
        selection_correct = _option_correct(
            model, selected.points[:, -1], [[encode_text(model.tokenizer, c)[0] for c in i["choices"]]
                                            for i in selection_items],
            np.array([i["choices"].index(i["answer"]) for i in selection_items]))
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


@torch.no_grad()
def final_resid_patch_logits(
    model: HookedAudioLM, corrupted: AudioBatch, clean_final: Float[Tensor, "batch layer d_model"]
) -> Float[Tensor, "layer batch d_vocab"]:
    """Final-position logits of `corrupted` with, for each layer L, the final prompt position's
    `blocks.L.hook_resid_post` replaced by `clean_final[:, L]` (every other position kept).

    One forward of `corrupted` keeping each layer's `resid_post`, then for each L a restart from block L + 1
    (`decoder_state` / `run_blocks`, as `analysis.patching.patch_residual_by_position` does for `resid_pre`;
    `resid_post` of L is `resid_pre` of L + 1) with only the final position changed. For the last layer no block
    runs: the logits are those of the clean final state itself.
    """
    n = model.cfg.n_layers
    if clean_final.shape[:2] != (corrupted.batch_size, n):
        raise ValueError(f"clean_final must be [batch={corrupted.batch_size}, layer={n}, d_model], not "
                         f"{list(clean_final.shape)}.")
    names = [block_hook_name(layer, "hook_resid_post") for layer in range(n)]
    _, cache = model.run_with_cache(corrupted, names_filter=names, return_cache_object=False)
    mask = corrupted.attention_mask.to(model.device)
    out = []
    for layer, name in enumerate(names):
        resid = cache[name].clone()
        rows = torch.arange(resid.shape[0], device=resid.device)
        final = corrupted.final_position.to(resid.device)
        resid[rows, final] = clean_final[:, layer].to(resid)
        resid = model.run_blocks(model.decoder_state(resid, mask.to(resid.device)), layer + 1)
        rows, final = rows.to(resid.device), final.to(resid.device)
        out.append(model.unembed(model.ln_final(resid[rows, final])).float().to(model.device))
    return torch.stack(out)


def probe_accuracy(
    features: Float[Tensor, "item d"] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    options: np.ndarray,
    groups: Sequence[Any],
    folds: int = 5,
    l2: float | Sequence[float] = L2_GRID,
    seed: int = 0,
    max_iter: int = 200,
    inner_folds: int = 3,
) -> float:
    """Cross-validated accuracy (percent) of a multinomial logistic regression from `features` to `labels`, each
    item's prediction restricted to its `options` (`[item, class]` bool; all True for a plain probe).

    Folds hold whole groups (e.g. clip sets), dealt at random (`seed`); features are standardised on each
    training fold; the loss is the mean cross-entropy plus `l2` times the squared weights, minimised by L-BFGS.
    With several `l2`, each training fold picks its own by an inner grouped cross-validation (`inner_folds`) on
    its own items only (nested: the held-out fold plays no part in the choice). Every held-out item is predicted
    once; the accuracy is over all of them.
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    allowed = torch.as_tensor(np.asarray(options, dtype=bool))
    if x.ndim != 2 or y.shape != (x.shape[0],) or allowed.shape[0] != x.shape[0]:
        raise ValueError(f"features [item, d], labels [item] and options [item, class] must agree; got "
                         f"{list(x.shape)}, {list(y.shape)}, {list(allowed.shape)}.")
    if not bool(allowed[torch.arange(len(y)), y].all()):
        raise ValueError("every item's label must be one of its options.")
    grid = [check_float("l2", v, 0) for v in ([l2] if isinstance(l2, (int, float)) else l2)]
    if not grid:
        raise ValueError("l2 must be a penalty or a non-empty list of them.")
    codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)[1]
    check_int("folds", folds, 2, int(codes.max()) + 1)
    check_int("inner_folds", inner_folds, 2)
    fold = _folds(codes, folds, seed)
    right = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        penalty, train_codes = grid[0], codes[train.numpy()]
        if len(grid) > 1 and len(set(train_codes)) >= 2:
            inner = _folds(train_codes, min(inner_folds, len(set(train_codes))), seed + 1)
            scores = [sum(_held_out_right(x[train], y[train], allowed[train], inner != j, inner == j, v, max_iter)
                          for j in range(int(inner.max()) + 1)) for v in grid]
            penalty = grid[int(np.argmax(scores))]
        right += _held_out_right(x, y, allowed, train, test, penalty, max_iter)
    return 100.0 * right / len(y)


def _folds(codes: np.ndarray, folds: int, seed: int) -> Tensor:
    """Each item's fold: whole groups (`codes`) dealt at random to `folds` folds of (nearly) equal group counts."""
    groups = np.unique(codes, return_inverse=True)[1]
    return torch.as_tensor((np.random.default_rng(seed).permutation(groups.max() + 1) % folds)[groups])


def _held_out_right(x: Tensor, y: Tensor, allowed: Tensor, train: Tensor, test: Tensor, l2: float,
                    max_iter: int) -> int:
    """How many `test` items a probe fitted on the `train` items (standardised on them) gets right."""
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    weights, bias = _fit_probe((x[train] - mean) / std, y[train], allowed[train], l2, max_iter)
    with torch.no_grad():
        logits = (((x[test] - mean) / std) @ weights + bias).masked_fill(~allowed[test], -math.inf)
        return int((logits.argmax(-1) == y[test]).sum())


def _fit_probe(x: Tensor, y: Tensor, allowed: Tensor, l2: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Weights `[d, class]` and bias `[class]` minimising the masked cross-entropy plus `l2 * |weights|^2`."""
    weights = torch.zeros(x.shape[1], allowed.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(allowed.shape[1], dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optimizer.zero_grad()
        logits = (x @ weights + bias).masked_fill(~allowed, -1e9)
        value = torch.nn.functional.cross_entropy(logits, y) + l2 * weights.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    return weights.detach(), bias.detach()


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
    points: Tensor  # [item, n_layers + 1, d_model]: resid_pre of each block, then the last resid_post
    mass: np.ndarray  # [item, layer, head]: final-token audio attention mass


@torch.no_grad()
def _final_states(model: HookedAudioLM, items: Sequence[dict[str, Any]], prompt, batch_size: int, silence: bool,
                  progress: bool, description: str) -> _States:
    """One forward per batch (the silence twin's with `silence`) that keeps the final position's residual stream at
    every block input and the last output (`FastSteering`'s layout) and the listening signal of every head."""
    points, masses = [], []
    for start in tqdm(range(0, len(items), batch_size), desc=description, disable=not progress):
        batch = _batch(model, items[start : start + batch_size], prompt)
        batch = batch.silence_twin() if silence else batch
        hooks, collected = final_state_hooks(model, batch)
        with model.hooks(fwd_hooks=hooks):  # under listening_signal's own hooks: one forward for both
            masses.append(listening_signal(model, batch).audio_mass.float().numpy())
        points.append(collected()[0])
    return _States(torch.cat(points), np.concatenate(masses))


def _batch(model: HookedAudioLM, items: Sequence[dict[str, Any]], prompt) -> AudioBatch:
    return model.to_batch([i["audio_path"] for i in items], [render_prompt(i, prompt) for i in items])


def _choose(logits: Tensor, option_ids: Sequence[Sequence[int]], answers: np.ndarray) -> np.ndarray:
    predicted = [int(logits[row, ids].argmax()) for row, ids in enumerate(option_ids)]
    return np.array(predicted) == np.asarray(answers)


def _option_correct(model: HookedAudioLM, final_resid: Tensor, option_ids, answers: np.ndarray) -> np.ndarray:
    """Whether the best option at the final position is the answer, from the final residual (before ln_final)."""
    with torch.no_grad():
        return _choose(model.unembed(model.ln_final(final_resid)), option_ids, answers)


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


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1f}%"


def _cell(value: float, bad: bool) -> str:
    return ("n/a" if not math.isfinite(value) else f"{value:.1f}") + ("!" if bad else " ")


def _r(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.2f}"


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _floats(values: Sequence[float | None]) -> list[float]:
    return [_nan(v) for v in values]


def _jsonable(value: Any) -> Any:
    """NaN as None (strict JSON), tuples as lists, recursively."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
