"""Summary statistics for timings and accuracies.

ci95 is the half-width of a two-sided 95% Student-t interval with n - 1 degrees of freedom.
Note on the thesis: it used a fixed 2.353 for n = 3 samples, which is the *one-sided* 95% t value
for 3 degrees of freedom; the two-sided value for n = 3 (2 degrees of freedom) is 4.303, so its
intervals were about half as wide as they should have been.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

NOISY_RELATIVE_SD = 0.10  # pyperf-style warning threshold
MIN_SAMPLES = 3


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    sd: float  # sample standard deviation (n - 1)
    ci95: float  # half-width; nan when n < 2

    @property
    def relative_sd(self) -> float:
        return self.sd / abs(self.mean) if self.mean else math.inf

    def warnings(self) -> list[str]:
        """Reasons not to trust this number, as pyperf prints them."""
        notes = []
        if self.n < MIN_SAMPLES:
            notes.append(f"only {self.n} sample(s)")
        if self.n >= 2 and self.relative_sd > NOISY_RELATIVE_SD:
            notes.append(f"noisy: sd is {self.relative_sd:.0%} of the mean")
        return notes

    def format(self, digits: int = 3) -> str:
        """The paper's format: '0.88 ± 0.005'."""
        if math.isnan(self.ci95):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.ci95:.{digits}f}"


def t_critical(dof: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t critical value."""
    return float(scipy_stats.t.ppf(0.5 + confidence / 2.0, dof))


def summarize(values: Sequence[float] | np.ndarray) -> Summary:
    """Mean, sd and ci95 over the finite values (NaN/inf, e.g. from a diverged run, are excluded
    and show up as a smaller n)."""
    data = np.asarray(values, np.float64)
    data = data[np.isfinite(data)]
    n = int(data.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    mean = float(data.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan)
    sd = float(data.std(ddof=1))
    return Summary(n, mean, sd, t_critical(n - 1) * sd / math.sqrt(n))


@dataclass(frozen=True)
class Comparison:
    difference: float  # mean(a) - mean(b)
    ci95: float  # half-width of the Welch interval for the difference
    p_value: float  # two-sided Welch t-test
    dof: float

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def welch(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> Comparison:
    """Welch's unequal-variance t-test of mean(a) against mean(b)."""
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        diff = float(x.mean() - y.mean()) if x.size and y.size else math.nan
        return Comparison(diff, math.nan, math.nan, math.nan)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff = float(x.mean() - y.mean())
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return Comparison(diff, 0.0, 0.0 if diff else 1.0, math.inf)
    dof = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    t = diff / se
    p = float(2.0 * scipy_stats.t.sf(abs(t), dof))
    return Comparison(diff, t_critical_float(dof) * se, p, float(dof))


def t_critical_float(dof: float, confidence: float = 0.95) -> float:
    return float(scipy_stats.t.ppf(0.5 + confidence / 2.0, dof))


def paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> Comparison:
    """Paired t-test of mean(a - b) over matched pairs (the same validation task, or the same
    seed, in both cases): n - 1 degrees of freedom on the differences."""
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    d = (x - y)[np.isfinite(x - y)]
    if d.size < 2:
        return Comparison(float(d.mean()) if d.size else math.nan, math.nan, math.nan, math.nan)
    diff = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    dof = d.size - 1
    if se == 0.0:
        return Comparison(diff, 0.0, 0.0 if diff else 1.0, float(dof))
    p = float(2.0 * scipy_stats.t.sf(abs(diff / se), dof))
    return Comparison(diff, t_critical(dof) * se, p, float(dof))


# Consecutive runs of one process are not independent (caches, frequency, a neighbour's load
# drift together), so timing intervals and tests use the means of BLOCKS consecutive blocks of
# each case-seed's runs (the batch-means method of simulation output analysis) as their units.
BLOCKS = 10


def block_means(runs_by_seed: Mapping[int, Sequence[float]], blocks: int = BLOCKS) -> list[float]:
    """Per seed, the runs (in run order) cut into ``blocks`` consecutive blocks of (nearly)
    equal size, and each block's mean; fewer blocks where a seed has fewer runs."""
    means = []
    for values in runs_by_seed.values():
        data = np.asarray(values, np.float64)
        data = data[np.isfinite(data)]
        if data.size == 0:
            continue
        for part in np.array_split(data, min(blocks, data.size)):
            means.append(float(part.mean()))
    return means


@dataclass(frozen=True)
class Spread:
    """Median and interquartile range: what heavy-tailed timings look like beside their mean."""

    median: float
    q25: float
    q75: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Spread:
        data = np.asarray(values, np.float64)
        data = data[np.isfinite(data)]
        if data.size == 0:
            return cls(math.nan, math.nan, math.nan)
        q25, median, q75 = np.percentile(data, [25, 50, 75])
        return cls(float(median), float(q25), float(q75))

    @property
    def iqr(self) -> float:
        return self.q75 - self.q25
