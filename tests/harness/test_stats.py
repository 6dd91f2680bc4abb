"""Exact values, computed by hand (t quantiles from tables)."""

import math

import numpy as np
import pytest
from scipy.stats import t, ttest_ind

from harness import stats
from harness.stats import summarize, t_critical, welch


def test_t_critical_two_sided() -> None:
    assert t_critical(2) == pytest.approx(4.302653, abs=1e-6)  # n = 3 samples
    assert t_critical(9) == pytest.approx(2.262157, abs=1e-6)
    # the thesis' 2.353 is the one-sided 95% value for 3 degrees of freedom
    assert t_critical(3, confidence=0.90) == pytest.approx(2.353363, abs=1e-6)


def test_summarize_exact() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.sd == pytest.approx(math.sqrt(5 / 3))
    assert s.ci95 == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6)
    assert s.format(2) == "2.50 ± 2.05"


def test_summarize_drops_non_finite_and_handles_tiny_samples() -> None:
    s = summarize([1.0, float("nan"), 3.0, float("inf")])
    assert (s.n, s.mean) == (2, 2.0)
    one = summarize([5.0])
    assert one.n == 1 and math.isnan(one.ci95) and one.format(1) == "5.0"
    assert summarize([]).n == 0
    assert "only 1 sample(s)" in one.warnings()


def test_noise_warning() -> None:
    assert summarize([1.0, 1.01, 0.99]).warnings() == []
    assert any("noisy" in w for w in summarize([1.0, 2.0, 3.0]).warnings())


def test_welch_exact() -> None:
    # a: mean 2, var 1, n 3; b: mean 5, var 4, n 3 -> se = sqrt(1/3 + 4/3), t = -3/se
    c = welch([1.0, 2.0, 3.0], [3.0, 5.0, 7.0])
    se = math.sqrt(5 / 3)
    dof = (5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    assert c.difference == -3.0
    assert c.dof == pytest.approx(dof)
    assert c.dof == pytest.approx(2.941176, rel=1e-6)
    assert c.p_value == pytest.approx(ttest_ind([1, 2, 3], [3, 5, 7], equal_var=False).pvalue)
    assert c.ci95 == pytest.approx(t.ppf(0.975, dof) * se)
    assert t_critical(3) * se < c.ci95 < t_critical(2) * se  # dof ~2.94, between 2 and 3
    assert not c.significant()
    assert welch([1.0, 1.1, 0.9, 1.0], [2.0, 2.1, 1.9, 2.0]).significant()


def test_paired_test_exact_and_stronger_than_welch_on_shared_tasks() -> None:
    """Two cases on the same validation tasks: the task-to-task spread is shared, so the paired
    test sees a small consistent gain that Welch misses. Hand-computed: differences
    [0.1, 0.2, 0.1, 0.2], mean 0.15, sd 0.0577, se 0.02887, t(3) = 3.182."""
    base = np.array([0.2, 0.9, 0.4, 0.7])
    case = base + np.array([0.1, 0.2, 0.1, 0.2])
    result = stats.paired(case, base)
    assert result.difference == pytest.approx(0.15)
    assert result.ci95 == pytest.approx(3.182446 * 0.0288675, rel=1e-5)
    assert result.dof == 3
    assert result.p_value == pytest.approx(0.013847, rel=1e-4)  # t = 5.196, 3 dof
    assert stats.welch(case, base).p_value > 0.5
    with pytest.raises(ValueError, match="length"):
        stats.paired([1.0, 2.0], [1.0])


def test_block_means_cut_each_seed_in_order() -> None:
    runs = {0: list(range(20)), 1: [1.0, 3.0, np.nan]}
    means = stats.block_means(runs, blocks=4)
    assert means[:4] == [2.0, 7.0, 12.0, 17.0]  # 5 consecutive runs each
    assert means[4:] == [1.0, 3.0]  # fewer runs than blocks: one per block, NaN dropped


def test_autocorrelated_timings_do_not_make_certainty() -> None:
    """600 runs that drift slowly (a neighbour's load), the same in two cases: per-run Welch
    calls a difference certain, block means do not (the issue's p = 1e-309)."""
    rng = np.random.default_rng(0)
    drift = np.repeat(rng.normal(0.0, 1.0, 12), 50)  # 12 slow phases of 50 runs
    a = 10.0 + drift + rng.normal(0.0, 0.05, 600)
    b = 10.0 + drift[::-1] + rng.normal(0.0, 0.05, 600)
    per_run = stats.welch(a, b)
    blocks = stats.welch(stats.block_means({0: a}), stats.block_means({0: b}))
    assert per_run.ci95 < blocks.ci95 / 3
    assert blocks.p_value > 0.01


def test_spread_is_median_and_iqr() -> None:
    spread = stats.Spread.of([1.0, 2.0, 3.0, 4.0, 100.0, np.nan])
    assert spread.median == 3.0 and spread.q25 == 2.0 and spread.q75 == 4.0 and spread.iqr == 2.0
