"""Is the listening signal a listening signal? Controls that separate listening from question type.

A head's audio mass can correlate with correctness without the head listening: when accuracy differs
by question type (MMAU's tasks and sub-categories) and the head attends to audio more for one type,
r is high across types and near zero within them. The controls here:

- `within_stratum_r`: r after demeaning signal and correctness within each stratum (the pooled
  within-stratum r, equal to the partial correlation given the stratum indicators);
  `between_stratum_r`: r of the stratum's average signal alone (what question type explains);
- `clustered_r`: an r with a percentile bootstrap interval that resamples whole clusters (clips);
- `silence_output_effects` / `silence_output_attribution`: the drop of the answer margin when a head's
  output at the final prompt position takes its value from the silence twin's run (exact for chosen
  heads, by attribution patching for all heads at once);
- `asked_clip_share`: each head's share of its audio attention on the clip the question names.

A stratum is any labelling of the items: MMAU's task and sub-category, and any other item field, such as the
hinted class (`hinted_choice`): a hint the model follows for one class more than for another is a confound of its
own, and the within-hinted-class r shows it (`ExperimentProfile.validity_strata`, `--strata`).

The experiment (`lens_audio.paper.experiment.Experiment.validity_controls`) gathers these into
`ValidityControls`; `NoiseSweep` holds the added-noise robustness check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from scipy import stats
from torch import Tensor

from lens_audio.analysis.ablation import ablate_heads, option_margins
from lens_audio.analysis.listening import listening_signal
from lens_audio.analysis.patching import attribution_patching
from lens_audio.analysis.statistics import nan_list, pearson_columns
from lens_audio.model.memory import attribution_bytes, rows_that_fit

if TYPE_CHECKING:
    from lens_audio.inputs.batch import AudioBatch
    from lens_audio.model.hooked_audio_lm import HookedAudioLM


# --- statistics on arrays --------------------------------------------------------------------------------------
def _codes(labels: Sequence[Any]) -> np.ndarray:
    return np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)[1]


def stratum_means(values: np.ndarray, strata: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Each item's stratum mean of `values` (`[n]` or `[n, m]`), same shape."""
    values = np.asarray(values, dtype=float)
    codes = _codes(strata) if not np.issubdtype(np.asarray(strata).dtype, np.integer) else np.asarray(strata)
    if codes.size != values.shape[0]:
        raise ValueError(f"strata must name one stratum per item: {codes.size} names for {values.shape[0]} items.")
    flat = values.reshape(values.shape[0], -1)
    counts = np.bincount(codes).astype(float)
    sums = np.stack([np.bincount(codes, weights=flat[:, j], minlength=counts.size) for j in range(flat.shape[1])], 1)
    return (sums / np.maximum(counts, 1)[:, None])[codes].reshape(values.shape)


def demean_within(values: np.ndarray, strata: Sequence[Any] | np.ndarray) -> np.ndarray:
    """`values` (`[n]` or `[n, m]`) minus their mean within each stratum."""
    return np.asarray(values, dtype=float) - stratum_means(values, strata)


def within_stratum_r(signal: np.ndarray, correct: np.ndarray, strata: Sequence[Any]) -> np.ndarray:
    """Pooled within-stratum r of every column of `signal` (`[n, m]`) with correctness (`[m]`; NaN where undefined).

    Signal and correctness are demeaned within each stratum before one Pearson r: the partial correlation
    given the stratum indicators. A stratum where every item is right (or wrong) adds nothing.
    """
    x = np.asarray(signal, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    return pearson_columns(demean_within(x, strata), demean_within(np.asarray(correct, dtype=float), strata))


def between_stratum_r(signal: np.ndarray, correct: np.ndarray, strata: Sequence[Any]) -> np.ndarray:
    """r of each item's stratum-average signal with correctness: how much of r the question type alone gives."""
    x = np.asarray(signal, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    return pearson_columns(stratum_means(x, strata), np.asarray(correct, dtype=float))


@dataclass
class ClusteredR:
    """One r with its percentile bootstrap interval; `ci_unit` says what was resampled ("clip" or "item")."""

    r: float
    ci: list[float]
    n: int
    n_clusters: int
    ci_unit: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "r": _none(self.r), "ci": [_none(v) for v in self.ci]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusteredR:
        return cls(**{**data, "r": _nan(data["r"]), "ci": [_nan(v) for v in data["ci"]]})

    def describe(self) -> str:
        return f"{self.r:.2f} [{self.ci[0]:.2f}, {self.ci[1]:.2f}]"


def clustered_r(
    signal: np.ndarray,
    correct: np.ndarray,
    clusters: Sequence[Any] | None = None,
    strata: Sequence[Any] | None = None,
    between: bool = False,
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ClusteredR:
    """r of `signal` (`[item]`) with correctness, with a bootstrap interval resampling whole clusters.

    With `strata`, the pooled within-stratum r (or, with `between`, the stratum-average r) instead of the plain
    one. Default clusters: one per item (the interval is then item-level and labelled so).
    """
    x, y = np.asarray(signal, dtype=float), np.asarray(correct, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"signal and correct must be [item] of one length; got {x.shape} and {y.shape}.")
    codes = _codes(strata) if strata is not None else np.zeros(x.size, dtype=int)
    group = _codes(clusters) if clusters is not None else np.arange(x.size)
    members = [np.nonzero(group == g)[0] for g in range(group.max() + 1)]

    def r_of(index: np.ndarray) -> float:
        xs, ys = x[index], y[index]
        if strata is None:
            return float(pearson_columns(xs[:, None], ys)[0])
        fn = between_stratum_r if between else within_stratum_r
        return float(fn(xs, ys, codes[index])[0])

    rng = np.random.default_rng(seed)
    boot = np.array(
        [
            r_of(np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))]))
            for _ in range(n_bootstrap)
        ]
    )
    alpha = (1 - confidence) / 2
    finite = boot[np.isfinite(boot)]
    low, high = np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (np.nan, np.nan)
    unit = "clip" if len(members) < x.size else "item"
    return ClusteredR(r_of(np.arange(x.size)), [float(low), float(high)], int(x.size), len(members), unit)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two `[layer, head]` maps over the heads where both are finite (NaN with < 3)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return float("nan")
    return float(stats.spearmanr(a[keep], b[keep]).statistic)


# --- model-side controls ---------------------------------------------------------------------------------------
def _final_margins(model: "HookedAudioLM", batch: "AudioBatch", logits: Tensor, choice_ids, answer_index) -> Tensor:
    rows = torch.arange(batch.batch_size, device=logits.device)
    final = logits[rows, batch.final_position.to(logits.device)]
    choice = torch.as_tensor(choice_ids, device=final.device)
    return option_margins(final, choice, torch.as_tensor(answer_index, device=final.device))[0]


@torch.no_grad()
def answer_margins(
    model: "HookedAudioLM", batch: "AudioBatch", choice_ids: Sequence[Sequence[int]], answer_index: Sequence[int]
) -> Float[Tensor, " batch"]:
    """Answer option's logit minus the best other option's, at the final prompt position (`ablation.option_margins`)."""
    return _final_margins(model, batch, model(batch), choice_ids, answer_index).cpu()


def silence_output_effects(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    choice_ids: Sequence[Sequence[int]],
    answer_index: Sequence[int],
    heads: Sequence[tuple[int, int]],
    heads_per_pass: int = 8,
) -> Float[Tensor, " head"]:
    """Exact: mean drop of the answer margin when each head's final-position output takes its silence-run value.

    Positive = the head's output with the audio helps the answer. One head at a time (`ablate_heads`, kind
    "silence", `final_only`).
    """
    change, _, _, _ = ablate_heads(
        model, batch, choice_ids, answer_index, "silence", [[tuple(h)] for h in heads], heads_per_pass, None, True
    )
    return -change


def silence_output_attribution(
    model: "HookedAudioLM",
    batch: "AudioBatch",
    choice_ids: Sequence[Sequence[int]],
    answer_index: Sequence[int],
) -> Float[Tensor, "layer head"]:
    """`silence_output_effects` of every head at once, by attribution patching (one forward-backward, linear); in
    as many rows at a time as fit the memory limit (`model.memory`), the row-weighted mean of their effects."""
    step = rows_that_fit(model, batch, attribution_bytes(model, batch)) or 1  # one row: the patching's own refusal
    total = 0.0
    for start in range(0, batch.batch_size, step):
        part, rows = batch[start : start + step], slice(start, start + step)
        metric = lambda logits, p=part, r=rows: _final_margins(  # noqa: E731
            model, p, logits, choice_ids[r], answer_index[r]).mean()
        effect = -attribution_patching(model, part.silence_twin(), part, metric, final_only=True).per_head
        total = total + part.batch_size * effect
    return total / batch.batch_size


@torch.no_grad()
def asked_clip_share(
    model: "HookedAudioLM", batch: "AudioBatch", target_clip: Sequence[int]
) -> Float[Tensor, "example layer head"]:
    """Share of each head's final-token audio attention that falls on clip `target_clip[i]` (0-based) of example i."""
    cfg = model.cfg
    for row, (spans, target) in enumerate(zip(batch.audio_spans, target_clip)):
        if not 0 <= int(target) < len(spans):
            raise ValueError(f"example {row} has {len(spans)} clips; target_clip {target} (0-based) is not one.")
    heads = [(layer, head) for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    signal = listening_signal(model, batch, heads=heads)
    rows = signal.rows  # [example, head, pos]
    asked = torch.zeros(batch.batch_size, len(heads))
    for row, (spans, target) in enumerate(zip(batch.audio_spans, target_clip)):
        start, end = spans[int(target)]
        asked[row] = rows[row, :, start:end].sum(-1)
    audio = (rows * signal.audio_mask[:, None, :].to(rows)).sum(-1)
    share = asked / audio.clamp_min(1e-12)
    return share.view(batch.batch_size, cfg.n_layers, cfg.n_heads)


# --- typed results ---------------------------------------------------------------------------------------------
@dataclass
class SignalCheck:
    """The specialists' listening signal (their mean final-token audio mass) on one split's focus items.

    `audio`: r with correctness; `silence`: r of the same heads' mass in the silence twin's run with the real
    run's correctness (a listening signal loses it); `within[s]`: pooled within-stratum r for stratum field(s)
    `s`; `between[s]`: r of the stratum average alone. Intervals resample clips (`ci_unit`).
    """

    audio: ClusteredR
    silence: ClusteredR
    within: dict[str, ClusteredR]
    between: dict[str, ClusteredR]
    n_strata: dict[str, int]
    mass_audio: float
    mass_silence: float

    def to_json(self) -> dict[str, Any]:
        return {
            "audio": self.audio.to_json(),
            "silence": self.silence.to_json(),
            "within": {k: v.to_json() for k, v in self.within.items()},
            "between": {k: v.to_json() for k, v in self.between.items()},
            "n_strata": self.n_strata,
            "mass_audio": self.mass_audio,
            "mass_silence": self.mass_silence,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignalCheck:
        return cls(
            ClusteredR.from_json(data["audio"]),
            ClusteredR.from_json(data["silence"]),
            {k: ClusteredR.from_json(v) for k, v in data["within"].items()},
            {k: ClusteredR.from_json(v) for k, v in data["between"].items()},
            data["n_strata"],
            data["mass_audio"],
            data["mass_silence"],
        )


MAPS = ("r_audio", "r_silence", "causal", "mass_audio", "mass_silence")


@dataclass
class ValidityControls:
    """Every head's controls on one split's focus items (`[layer, head]` arrays) and the specialists' summary.

    `causal[l, h]`: mean drop of the answer margin (in logits) when the head's final-position output takes its
    silence-run value, by attribution patching; `causal_exact`: the same computed exactly for the heads named
    (label -> drop); `causal_rank_r`: Spearman's rho between `causal` and `r_audio` over all heads; `causal_skipped`:
    the items left out of both (their options share a first token, so the margin over first tokens is undefined);
    `clip_share`: the share of each head's audio attention on the asked clip (None with one clip per prompt).
    """

    split: str
    items: str
    n: int
    n_clusters: int
    specialists: list[tuple[int, int]]
    signal: SignalCheck
    r_audio: np.ndarray
    r_silence: np.ndarray
    r_within: dict[str, np.ndarray]
    causal: np.ndarray | None
    causal_exact: dict[str, float]
    causal_rank_r: float
    mass_audio: np.ndarray
    mass_silence: np.ndarray
    clip_share: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    causal_skipped: int = 0  # items left out of `causal` (their options share a first token: no answer margin)

    def top_causal(self, k: int) -> list[tuple[int, int]]:
        """The `k` heads whose silence-run output drops the margin most: ranked by the exact drop among the heads
        measured exactly (`causal_exact`: the top by attribution estimate and the specialists), then, past those,
        by the attribution estimate."""
        if self.causal is None:
            return []
        order = np.argsort(np.nan_to_num(self.causal, nan=-np.inf), axis=None)[::-1]
        estimated = [tuple(int(i) for i in np.unravel_index(flat, self.causal.shape)) for flat in order]
        exact = lambda h: self.causal_exact.get(f"L{h[0]}H{h[1]}")  # noqa: E731
        measured = sorted((h for h in estimated if exact(h) is not None and np.isfinite(exact(h))), key=exact,
                          reverse=True)
        return (measured + [h for h in estimated if h not in measured])[:k]

    def head_row(self, head: Sequence[int], stratum: str) -> dict[str, float]:
        """One head's controls: r with audio, with silence, within `stratum`, causal effect, clip share."""
        l, h = head
        pick = lambda a: None if a is None else float(a[l, h])  # noqa: E731
        return {
            "r_audio": pick(self.r_audio),
            "r_silence": pick(self.r_silence),
            "r_within": pick(self.r_within.get(stratum)),
            "causal": self.causal_exact.get(f"L{l}H{h}", pick(self.causal)),
            "clip_share": pick(self.clip_share),
            "mass_audio": pick(self.mass_audio),
            "mass_silence": pick(self.mass_silence),
        }

    def to_json(self) -> dict[str, Any]:
        arr = lambda a: None if a is None else nan_list(np.asarray(a, dtype=float))  # noqa: E731
        return {
            "split": self.split,
            "items": self.items,
            "n": self.n,
            "n_clusters": self.n_clusters,
            "specialists": [list(h) for h in self.specialists],
            "signal": self.signal.to_json(),
            **{name: arr(getattr(self, name)) for name in MAPS},
            "r_within": {k: arr(v) for k, v in self.r_within.items()},
            "causal_exact": self.causal_exact,
            "causal_rank_r": _none(self.causal_rank_r),
            "clip_share": arr(self.clip_share),
            "notes": self.notes,
            "causal_skipped": self.causal_skipped,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValidityControls:
        arr = lambda a: None if a is None else np.array(a, dtype=float)  # noqa: E731
        return cls(
            split=data["split"],
            items=data["items"],
            n=data["n"],
            n_clusters=data["n_clusters"],
            specialists=[tuple(h) for h in data["specialists"]],
            signal=SignalCheck.from_json(data["signal"]),
            r_within={k: arr(v) for k, v in data["r_within"].items()},
            causal_exact=data["causal_exact"],
            causal_rank_r=_nan(data["causal_rank_r"]),
            clip_share=arr(data.get("clip_share")),
            notes=data.get("notes", []),
            causal_skipped=data.get("causal_skipped", 0),
            **{name: arr(data[name]) for name in MAPS},
        )


@dataclass
class NoisePoint:
    """One noise level: accuracy (percent) per hint condition and overall, the specialists' mass and its r.

    `snr_db` None is the clean audio. `mass_right` / `mass_wrong`: the specialists' mean mass on items answered
    right / wrong; `new_errors`: items right on clean audio and wrong here, with their mean mass (`mass_new_errors`)
    against the items right in both (`mass_still_right`).
    """

    snr_db: float | None
    accuracy: dict[str, float]
    mass: float
    mass_right: float
    mass_wrong: float
    r: ClusteredR
    new_errors: int = 0
    mass_new_errors: float = float("nan")
    mass_still_right: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        data = {k: _none(v) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return {**data, "r": self.r.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NoisePoint:
        values = {k: _nan(v) if k.startswith("mass") else v for k, v in data.items()}
        return cls(**{**values, "r": ClusteredR.from_json(data["r"])})


@dataclass
class NoiseSweep:
    """Accuracy and the specialists' signal as white noise is added to every clip at each SNR (dB)."""

    split: str
    items: str  # the items `r` is over (the focus condition)
    specialists: list[tuple[int, int]]
    points: list[NoisePoint]

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "items": self.items,
            "specialists": [list(h) for h in self.specialists],
            "points": [p.to_json() for p in self.points],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NoiseSweep:
        return cls(
            data["split"],
            data["items"],
            [tuple(h) for h in data["specialists"]],
            [NoisePoint.from_json(p) for p in data["points"]],
        )

    def describe(self) -> list[str]:
        lines = [f"noise sweep ({self.split} split; white noise added to every clip; specialists' mean mass):"]
        for p in self.points:
            level = "clean" if p.snr_db is None else f"{p.snr_db:g} dB"
            accuracy = ", ".join(f"{k} {v:.1f}" for k, v in p.accuracy.items())
            lines.append(
                f"  {level:>7s}: accuracy {accuracy}; mass over all items {p.mass:.3f} (right "
                f"{p.mass_right:.3f}, wrong {p.mass_wrong:.3f}); r on {self.items} items {p.r.describe()}"
                + (
                    f"; {p.new_errors} new errors, mass {p.mass_new_errors:.3f} vs {p.mass_still_right:.3f} still right"
                    if p.snr_db is not None
                    else ""
                )
            )
        return lines


def _none(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
