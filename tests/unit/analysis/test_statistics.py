"""The experiment's statistics against scipy and hand computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lens_audio.analysis.heads import HeadCorrelation, correlate_heads
from lens_audio.analysis.statistics import (
    cluster_bootstrap_ci,
    control_distribution,
    fisher_ci,
    max_r_permutation,
    mcnemar,
    mcnemar_p,
    random_head_draws,
    signal_validity,
)


@pytest.mark.parametrize("a_only, b_only", [(10, 0), (7, 3), (4, 4), (0, 1), (25, 11)])
def test_mcnemar_p_is_scipys_exact_binomial_test(a_only, b_only):
    assert mcnemar_p(a_only, b_only) == pytest.approx(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue, rel=1e-12)


def test_mcnemar_counts_discordant_pairs_and_the_difference():
    rng = np.random.default_rng(0)
    a, b = rng.random(90) < 0.8, rng.random(90) < 0.7
    result = mcnemar(a, b, names=("steered", "baseline"))
    assert (result.a_only, result.b_only) == (
        sum(x and not y for x, y in zip(a, b)),
        sum(y and not x for x, y in zip(a, b)),
    )
    assert result.difference == pytest.approx(100 * (a.mean() - b.mean()))
    assert result.ci[0] <= result.difference <= result.ci[1]
    assert type(result).from_json(result.to_json()) == result


def test_cluster_bootstrap_resamples_whole_clusters():
    # Three items per clip with the same value: clustering must widen the interval relative to treating items as
    # independent.
    values = np.repeat(np.random.default_rng(1).random(30) < 0.5, 3).astype(float)
    clips = np.repeat(np.arange(30), 3)
    independent = cluster_bootstrap_ci(values, None, n_bootstrap=4000)
    clustered = cluster_bootstrap_ci(values, list(clips), n_bootstrap=4000)
    assert clustered[1] - clustered[0] > 1.4 * (independent[1] - independent[0])
    # A resample of whole clusters can only give means that some choice of 30 clip values gives: multiples of 1/30.
    assert all(abs(v * 30 / 100 - round(v * 30 / 100)) < 1e-9 for v in clustered)


def test_fisher_interval_matches_the_formula_and_scipy():
    r, n = 0.3, 50
    low, high = fisher_ci(r, n)
    z = stats.norm.ppf(0.975) / np.sqrt(n - 3)
    assert (low, high) == pytest.approx((np.tanh(np.arctanh(r) - z), np.tanh(np.arctanh(r) + z)))
    x = np.random.default_rng(2).standard_normal(n)
    y = x + 2 * np.random.default_rng(3).standard_normal(n)
    scipy_ci = stats.pearsonr(x, y).confidence_interval(0.95)
    ours = signal_validity(x, y)
    assert ours.r == pytest.approx(stats.pearsonr(x, y).statistic) and ours.p_value == pytest.approx(
        stats.pearsonr(x, y).pvalue
    )
    assert ours.ci == pytest.approx([scipy_ci.low, scipy_ci.high])


def test_max_r_permutation_matches_a_loop_over_shuffles_and_finds_a_planted_head():
    rng = np.random.default_rng(4)
    correct = rng.random(80) < 0.6
    mass = rng.random((80, 3, 2))
    mass[:, 1, 0] += 0.8 * correct  # one head that really tracks correctness
    null = max_r_permutation(mass, correct, n_permutations=300, seed=7)
    # the same null by hand, with the same shuffles
    rng2 = np.random.default_rng(7)
    shuffles = [rng2.permutation(correct.astype(float)) for _ in range(300)]
    by_hand = [
        max(abs(stats.pearsonr(mass[:, l, h], y).statistic) for l in range(3) for h in range(2)) for y in shuffles
    ]
    observed = abs(stats.pearsonr(mass[:, 2, 1], correct).statistic)
    assert null.p_adjusted[2, 1] == pytest.approx((1 + sum(m >= observed - 1e-12 for m in by_hand)) / 301)
    assert null.significant() == [(1, 0)] and null.p_max == pytest.approx(1 / 301)
    assert type(null).from_json(null.to_json()).p_adjusted.tolist() == null.p_adjusted.tolist()


def test_random_head_draws_exclude_the_specialists_and_can_match_layers():
    specialists = [(0, 1), (2, 0), (2, 3)]
    draws = random_head_draws(4, 4, 3, 200, seed=1, exclude=specialists)
    assert len(draws) == 200 and all(len(set(d)) == 3 and not set(d) & set(specialists) for d in draws)
    assert len({tuple(d) for d in draws}) > 100  # the draws differ
    matched = random_head_draws(4, 4, 3, 50, seed=1, exclude=specialists, layer_matched=specialists)
    assert all(sorted(l for l, _ in d) == [0, 2, 2] and not set(d) & set(specialists) for d in matched)
    heads = HeadCorrelation(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)), 10, 0.95)
    assert heads.random_heads(3, seed=1, exclude=specialists) == draws[0]


def test_control_distribution_percentile_and_median_draw():
    rng = np.random.default_rng(5)
    draws_correct = rng.random((201, 60)) < np.linspace(0.5, 0.8, 201)[:, None]
    specialists = rng.random(60) < 0.9
    draws = [[(0, i)] for i in range(201)]
    control = control_distribution(specialists, draws_correct, draws, items="conflicting")
    accuracies = 100 * draws_correct.mean(1)
    ours = 100 * specialists.mean()
    assert control.percentile == pytest.approx(
        100 * (np.sum(accuracies < ours) + 0.5 * np.sum(accuracies == ours)) / 201
    )
    assert control.median == pytest.approx(np.median(accuracies))
    assert accuracies[control.median_draw] == pytest.approx(
        np.median(accuracies)
    )  # odd count: a draw sits at the median
    assert control.versus_median.accuracy_b == pytest.approx(accuracies[control.median_draw])
    back = type(control).from_json(control.to_json())
    assert back.accuracies.tolist() == control.accuracies.tolist() and back.draws == control.draws


def test_head_correlation_json_round_trip_keeps_nan_heads():
    rng = np.random.default_rng(6)
    mass = rng.random((30, 2, 3))
    mass[:, 0, 0] = 0.5  # constant head: r undefined
    heads = correlate_heads(mass, rng.random(30) < 0.5, n_bootstrap=50)
    back = HeadCorrelation.from_json(heads.to_json())
    assert np.isnan(back.r[0, 0]) and np.allclose(back.r[1:], heads.r[1:], equal_nan=True)
    low, high = heads.fisher_ci()
    assert np.all((low[0, 1:] < heads.r[0, 1:]) & (heads.r[0, 1:] < high[0, 1:]))


def test_figures_dodge_series_show_whiskers_and_explain_blank_cells():
    from lens_audio import plots

    fig = plots.grouped_points(
        ["conflicting", "none"],
        {"baseline": ([60, 98], [50, 95], [70, 100]), "steered": ([80, 98], [72, 95], [88, 100])},
        "t",
        "x",
        "y",
    )
    xs = [list(trace.x) for trace in fig.data]
    assert all(a != b for a, b in zip(*xs))  # the same condition sits at different x per series: nothing hides
    assert list(fig.data[1].error_y.array) == [8, 2] and list(fig.data[1].error_y.arrayminus) == [8, 3]
    z = np.array([[np.nan, 0.1], [0.2, -0.3]])
    heatmap = plots.head_heatmap(z, "t", "r", blank_reason="constant head")
    assert (
        heatmap.data[0].text[0][0] == "constant head"
        and "1 grey cell: constant head" in heatmap.layout.annotations[0].text
    )
    control = plots.control_distribution_plot([70.0, 75.0, 75.0, 80.0], 85.0, 100.0, "t", n_items=20)
    line = next(t for t in control.data if t.name.startswith("specialists"))
    assert list(line.x) == [85.0, 85.0]  # the specialists' line sits at their accuracy
    bars = control.data[0]  # one bar per attainable accuracy (100 / n_items = 5 points apart), counting the draws
    assert list(bars.x) == [70.0, 75.0, 80.0] and list(bars.y) == [1, 2, 1]
