"""Statistics that can tell: paired tests on the same items, null distributions, and intervals.

- `mcnemar`: exact McNemar test of two classifiers scored on the same items (a two-sided
  binomial test on the discordant pairs) with a paired bootstrap interval of the accuracy
  difference, resampling clusters (e.g. clips asked about several times) rather than items;
- `fisher_ci`: the Fisher-z interval of a Pearson r (beside the percentile bootstrap one);
- `max_r_permutation`: a permutation null for the largest |r| over all heads (correctness
  labels shuffled), giving each head a family-wise adjusted p-value (Westfall-Young max-T);
- `random_head_draws` / `control_distribution`: the random-head control as a distribution of
  seeded draws, with the specialists' percentile and a paired test against the median draw (its kinds:
  plain random, layer-matched, depth-matched and beta-matched draws, `CONTROL_KINDS`);
- `signal_validity`: r of a per-item listening signal with correctness, per condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from lens_audio.checks import check_confidence, check_int, check_seed


@dataclass
class PairedComparison:
    """Two runs over the same items: `a` vs `b` (accuracies in percent, difference a - b)."""

    a: str
    b: str
    n: int
    accuracy_a: float
    accuracy_b: float
    a_only: int  # items `a` gets right and `b` wrong
    b_only: int
    p_value: float  # exact McNemar (two-sided binomial on the discordant pairs)
    difference: float
    ci: list[float]  # paired bootstrap over clusters
    n_clusters: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairedComparison:
        return cls(**data)

    def describe(self) -> str:
        return (
            f"{self.accuracy_a:.1f} vs {self.accuracy_b:.1f}%, {self.difference:+.1f} "
            f"[{self.ci[0]:+.1f}, {self.ci[1]:+.1f}], {self.a_only} gained / {self.b_only} lost, McNemar p = "
            f"{self.p_value:.3g} (n = {self.n})"
        )


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p: under H0 each discordant item is `a`'s with probability 1/2."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(a_only, b_only), n, 0.5)))


def mcnemar(
    correct_a: Sequence[bool] | np.ndarray,
    correct_b: Sequence[bool] | np.ndarray,
    clusters: Sequence[Any] | None = None,
    names: tuple[str, str] = ("a", "b"),
    n_bootstrap: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Exact McNemar test and a cluster-paired bootstrap CI of accuracy(a) - accuracy(b), in points.

    `clusters` names each item's group (e.g. its clip); a bootstrap resample draws whole clusters,
    so items that share a clip are not counted as independent evidence. Default: one item per cluster.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"paired runs must score the same non-empty list of items; got shapes {a.shape} and {b.shape}."
        )
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    return PairedComparison(
        a=names[0],
        b=names[1],
        n=int(a.size),
        accuracy_a=float(100 * a.mean()),
        accuracy_b=float(100 * b.mean()),
        a_only=a_only,
        b_only=b_only,
        p_value=mcnemar_p(a_only, b_only),
        difference=float(100 * (a.mean() - b.mean())),
        ci=cluster_bootstrap_ci(a.astype(float) - b.astype(float), clusters, n_bootstrap, confidence, seed),
        n_clusters=len(set(clusters)) if clusters is not None else int(a.size),
    )


def cluster_bootstrap_ci(
    values: np.ndarray, clusters: Sequence[Any] | None, n_bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0
) -> list[float]:
    """Percentile bootstrap interval (in percent) of the mean of `values`, resampling whole clusters."""
    check_int("n_bootstrap", n_bootstrap, 1)
    check_confidence(confidence)
    values = np.asarray(values, dtype=float)
    if clusters is None:
        clusters = np.arange(values.size)
    if len(clusters) != values.size:
        raise ValueError(f"clusters must name one group per item: {len(clusters)} names for {values.size} items.")
    _, index = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    sums, counts = np.bincount(index, weights=values), np.bincount(index).astype(float)
    draws = np.random.default_rng(check_seed("seed", seed)).integers(0, sums.size, size=(n_bootstrap, sums.size))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return [float(100 * low), float(100 * high)]


def fisher_ci(r: np.ndarray | float, n: int, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Fisher-z interval of Pearson r over `n` examples: tanh(atanh(r) -+ z / sqrt(n - 3)); NaN where r is."""
    if n < 4:
        raise ValueError(f"the Fisher-z interval needs at least 4 examples, got {n}.")
    z = stats.norm.ppf(0.5 + confidence / 2) / np.sqrt(n - 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = np.arctanh(np.clip(np.asarray(r, dtype=float), -1 + 1e-12, 1 - 1e-12))
    return np.tanh(centre - z), np.tanh(centre + z)


def pearson_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of every column of `x` (`[n, m]`) with `y` (`[n]` or `[n, m']` broadcast); NaN where either is
    constant."""
    xc = x - x.mean(0)
    yc = y - y.mean(0)
    if yc.ndim == 1:
        numerator, y_ss = xc.T @ yc, (yc**2).sum()
    else:  # several label vectors at once: `[n, p]` -> `[p, m]`
        numerator, y_ss = yc.T @ xc, (yc**2).sum(0)[:, None]
    denominator = np.sqrt((xc**2).sum(0) * y_ss) * (
        np.ptp(x, axis=0) > 0
    )  # exactly constant columns: no r (not rounding noise)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


@dataclass
class MaxRNull:
    """Permutation null of max |r| over all heads; `p_adjusted[layer, head]` controls the family-wise error."""

    observed_max: float
    p_max: float  # p of the observed max |r| under the null
    p_adjusted: np.ndarray  # [layer, head]: share of permutations whose max |r| reaches the head's |r|
    n_permutations: int
    null_quantile_95: float

    def significant(self, alpha: float = 0.05) -> list[tuple[int, int]]:
        """Heads whose |r| beats the permutation null of the maximum at level `alpha` (family-wise)."""
        return [(int(l), int(h)) for l, h in zip(*np.nonzero(np.nan_to_num(self.p_adjusted, nan=1.0) < alpha))]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "p_adjusted": nan_list(self.p_adjusted)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MaxRNull:
        return cls(**{**data, "p_adjusted": _array(data["p_adjusted"])})


def max_r_permutation(
    audio_mass: np.ndarray, correct: np.ndarray, n_permutations: int = 1000, seed: int = 0
) -> MaxRNull:
    """Shuffle correctness `n_permutations` times; each time record the largest |r| over all heads.

    A head's adjusted p is (1 + #{permutations with max |r| >= its |r|}) / (1 + n_permutations):
    the single-step max-T correction, valid for any dependence between heads.
    """
    check_int("n_permutations", n_permutations, 1)
    check_seed("seed", seed)
    mass = np.asarray(audio_mass, dtype=float)
    y = np.asarray(correct, dtype=float)
    flat = mass.reshape(mass.shape[0], -1)
    observed = np.abs(pearson_columns(flat, y))
    if not np.isfinite(observed).any():  # constant correctness (or heads): no r, nothing to test
        return MaxRNull(float("nan"), 1.0, np.full(mass.shape[1:], np.nan), 0, float("nan"))
    rng = np.random.default_rng(seed)
    maxima = []
    for start in range(0, n_permutations, 250):  # label permutations in chunks: one matrix product each
        labels = np.stack([rng.permutation(y) for _ in range(min(250, n_permutations - start))], axis=1)
        maxima.append(np.nanmax(np.abs(pearson_columns(flat, labels)), axis=1))
    null = np.concatenate(maxima)
    with np.errstate(invalid="ignore"):
        adjusted = np.where(
            np.isnan(observed), np.nan, (1 + (null[:, None] >= observed[None] - 1e-12).sum(0)) / (1 + null.size)
        )
    top = float(np.nanmax(observed)) if np.isfinite(observed).any() else float("nan")
    return MaxRNull(
        top,
        float(np.nanmin(adjusted)) if np.isfinite(adjusted).any() else 1.0,
        adjusted.reshape(mass.shape[1:]),
        int(null.size),
        float(np.quantile(null, 0.95)),
    )


def random_head_draws(
    n_layers: int,
    n_heads: int,
    k: int,
    n_draws: int,
    seed: int = 0,
    exclude: Sequence[tuple[int, int]] = (),
    layer_matched: Sequence[tuple[int, int]] | None = None,
    layers: Sequence[int] | None = None,
) -> list[list[tuple[int, int]]]:
    """`n_draws` seeded draws of `k` distinct heads, none in `exclude`, from one generator seeded by `seed`.

    With `layer_matched` (the specialists), each draw replaces every specialist by another head of the same
    layer, so a draw shares the specialists' layer set (and, for residual steering, their direction).
    With `layers` (e.g. the depth range where the audio has arrived), the heads are drawn from those layers only.
    """
    check_int("k", k, 1, n_layers * n_heads)
    check_int("n_draws", n_draws, 1)
    excluded = {tuple(h) for h in exclude}
    rng = np.random.default_rng(check_seed("seed", seed))
    if layer_matched is None:
        allowed = range(n_layers) if layers is None else sorted({int(l) for l in layers if 0 <= int(l) < n_layers})
        pool = [(l, h) for l in allowed for h in range(n_heads) if (l, h) not in excluded]
        if k > len(pool):
            where = "" if layers is None else f" in layers {list(allowed)}"
            raise ValueError(
                f"cannot draw {k} random heads from {len(pool)} candidates{where} (reduce k or the excluded heads)."
            )
        return [sorted(pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)) for _ in range(n_draws)]
    draws = []
    layers = sorted({l for l, _ in layer_matched})
    need = {l: sum(1 for m, _ in layer_matched if m == l) for l in layers}
    pools = {l: [(l, h) for h in range(n_heads) if (l, h) not in excluded] for l in layers}
    short = [l for l in layers if len(pools[l]) < need[l]]
    if short:
        raise ValueError(
            f"layer {short[0]} has too few non-specialist heads for a layer-matched control; use layer_matched=None."
        )
    for _ in range(n_draws):
        draws.append(
            sorted(pools[l][int(i)] for l in layers for i in rng.choice(len(pools[l]), size=need[l], replace=False))
        )
    return draws


CONTROL_KINDS = ("random", "layer-matched", "depth-matched", "beta-matched")


@dataclass
class ControlDistribution:
    """Accuracy of the specialists' steering against seeded random-head draws, on the same items."""

    items: str  # which items the accuracies are over (e.g. "conflicting")
    specialists_accuracy: float
    accuracies: np.ndarray  # [draw], percent
    draws: list[list[tuple[int, int]]]
    percentile: float  # share of draws below the specialists (ties count half), percent
    median: float
    q05: float
    q95: float
    median_draw: int
    versus_median: PairedComparison
    layer_matched: bool = False
    by_condition: dict[str, dict[str, Any]] | None = None  # condition -> specialists' and the draws' median accuracy
    tied: float = 0.0  # percent of draws with exactly the specialists' accuracy (each counts half in `percentile`)
    detectable: float = float("nan")  # smallest difference (points) vs the median draw these items can show at p<0.05
    kind: str = ""  # one of CONTROL_KINDS ("" in files written before kinds: "random" or "layer-matched")
    layers: list[int] | None = None  # depth-matched: the layers the draws' heads come from
    betas: list[float] | None = None  # beta-matched: each draw's beta, chosen on dev as the specialists' was
    basis: str = ""  # one line: how the draws were made and why (printed beside the numbers)

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = "layer-matched" if self.layer_matched else "random"
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"control kind must be one of {list(CONTROL_KINDS)}, not {self.kind!r}.")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            accuracies=[float(v) for v in self.accuracies],
            draws=[[list(h) for h in d] for d in self.draws],
            versus_median=self.versus_median.to_json(),
        )
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ControlDistribution:
        return cls(
            **{
                **data,
                "accuracies": np.asarray(data["accuracies"], dtype=float),
                "draws": [[tuple(h) for h in d] for d in data["draws"]],
                "versus_median": PairedComparison.from_json(data["versus_median"]),
            }
        )

    def describe(self, subject: str = "specialists") -> str:
        """One line: `subject` (what was compared with the draws) against the draws' distribution and median."""
        kind = "" if self.kind == "random" else f"{self.kind} "
        how = ""
        if self.layers:
            how = f" (heads from layers {_span(self.layers)})"
        elif self.betas:
            counts = {b: self.betas.count(b) for b in sorted(set(self.betas))}
            how = " (each at its own dev-chosen beta: " + ", ".join(f"{b:g} x{n}" for b, n in counts.items()) + ")"
        return (
            f"{subject} {self.specialists_accuracy:.1f}% on {self.items} items vs {len(self.draws)} {kind}random "
            f"draws{how}: "
            f"median {self.median:.1f} (5-95%: {self.q05:.1f}-{self.q95:.1f}), {subject} at percentile "
            f"{self.percentile:.0f} (draws below, ties counted half; {self.tied:.0f}% of draws tie); "
            + "vs the median draw: "
            + self.versus_median.describe()
            + f"; the smallest difference {self.versus_median.n} items can show at p < 0.05: "
            f"{self.detectable:.1f} points"
        )


def control_distribution(
    specialists_correct: np.ndarray,
    draws_correct: np.ndarray,
    draws: list[list[tuple[int, int]]],
    clusters: Sequence[Any] | None = None,
    items: str = "all",
    layer_matched: bool = False,
    seed: int = 0,
    kind: str = "",
) -> ControlDistribution:
    """Summarise `draws_correct` (`[draw, item]` bool) against `specialists_correct` (`[item]`); `kind` names the
    control (`CONTROL_KINDS`; default "random", or "layer-matched" with `layer_matched`)."""
    spec = np.asarray(specialists_correct, dtype=bool)
    matrix = np.asarray(draws_correct, dtype=bool)
    if matrix.ndim != 2 or matrix.shape[1] != spec.size or matrix.shape[0] != len(draws):
        raise ValueError(f"draws_correct must be [draw, item] = [{len(draws)}, {spec.size}], got {matrix.shape}.")
    accuracies = 100 * matrix.mean(1)
    ours = float(100 * spec.mean())
    median = float(np.median(accuracies))
    median_draw = int(np.argmin(np.abs(accuracies - median)))
    percentile = float(100 * ((accuracies < ours).sum() + 0.5 * (accuracies == ours).sum()) / accuracies.size)
    versus = mcnemar(spec, matrix[median_draw], clusters, ("specialists", "median random draw"), seed=seed)
    return ControlDistribution(
        items,
        ours,
        accuracies,
        draws,
        percentile,
        median,
        float(np.quantile(accuracies, 0.05)),
        float(np.quantile(accuracies, 0.95)),
        median_draw,
        versus,
        layer_matched,
        tied=float(100 * (accuracies == ours).mean()),
        detectable=min_detectable_difference(spec.size, versus.a_only + versus.b_only),
        kind=kind,
    )


def min_detectable_difference(n: int, discordant: int | None = None, alpha: float = 0.05) -> float:
    """The smallest accuracy difference (points) on `n` paired items an exact McNemar test can call at p < `alpha`.

    With no discordant count given: every discordant item one way, as few as possible (6 at 0.05, since
    2 * 0.5**5 > 0.05), i.e. 100 * 6 / n. With `discordant` items observed, the smallest |a - b| split of them
    reaching p < `alpha` (or, if none does, the bound for more discordant items), whichever is larger.
    """
    if n <= 0:
        raise ValueError(f"n must be a positive number of items, got {n}.")
    fewest = next(d for d in range(1, 10_000) if mcnemar_p(d, 0) < alpha)
    if discordant is None or discordant < fewest:
        return 100.0 * fewest / n
    splits = [abs(a - (discordant - a)) for a in range(discordant + 1) if mcnemar_p(a, discordant - a) < alpha]
    return 100.0 * min(splits) / n


@dataclass
class Validity:
    """Pearson r of a per-item signal with correctness, with its Fisher-z interval and t-test p."""

    r: float
    ci: list[float]
    p_value: float
    n: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Validity:
        return cls(**data)


def signal_validity(signal: np.ndarray, correct: np.ndarray, confidence: float = 0.95) -> Validity:
    """r of `signal` (`[item]`) with correctness; NaN r (and interval) when either is constant or n < 4."""
    x, y = np.asarray(signal, dtype=float), np.asarray(correct, dtype=float)
    n = int(x.size)
    r = float(pearson_columns(x[:, None], y)[0]) if n >= 2 else float("nan")
    if n < 4 or not np.isfinite(r):
        return Validity(r, [float("nan"), float("nan")], float("nan"), n)
    low, high = fisher_ci(r, n, confidence)
    t = r * np.sqrt((n - 2) / max(1 - r**2, 1e-12))
    return Validity(r, [float(low), float(high)], float(2 * stats.t.sf(abs(t), df=n - 2)), n)


def _span(layers: Sequence[int]) -> str:
    """Layers as text: "9-15" when they run without a gap, else listed."""
    values = sorted(layers)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ", ".join(map(str, values))


def nan_list(array: np.ndarray) -> list:
    """An array as nested lists with NaN as None (strict JSON)."""
    return np.where(np.isnan(array), None, array).tolist()


def _array(nested: list) -> np.ndarray:
    return np.array(nested, dtype=float)
