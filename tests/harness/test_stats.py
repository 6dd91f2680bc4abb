"""Exact values, computed by hand (t quantiles from tables)."""

import math

import pytest
from scipy.stats import t, ttest_ind

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
