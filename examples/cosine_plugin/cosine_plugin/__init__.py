"""A worked dmaml-bench plug-in: a task family, a network for it and a merge rule.

- ``Cosine``: regression on y = A cos(f x + b), one (A, f, b) per task (a domain);
- ``FourierMLP``: an MLP on [sin(x), cos(x), x] features (a network, returned by the domain's
  ``model()``);
- ``TrimmedMean``: average the workers after dropping the ``trim`` highest and lowest recent
  losses (a weight generator).

A suite names them as ``cosine_plugin:Cosine`` and ``cosine_plugin:TrimmedMean`` (``cosine.toml``
beside this package); put this folder on ``PYTHONPATH`` or ``pip install`` it. The docs walk
through it: ``docs/plugins.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dmaml_core.metrics import MSE, Metric
from dmaml_core.types import Tasks
from dmaml_core.weight_generators import Merge, mean_of, worker_scores

__version__ = "0.1.0"


@dataclass(frozen=True)
class FourierMLP:
    """A ReLU MLP on the features [sin x, cos x, x]: ``x`` [T, N, 1] -> [T, N, 1]. Its weights
    are a list of arrays; MAML hands ``apply`` one copy per task (a leading task axis)."""

    hidden: tuple[int, ...] = (40, 40)

    def init(self, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        sizes = (3, *self.hidden, 1)
        weights = []
        for n_in, n_out in itertools.pairwise(sizes):
            limit = np.sqrt(6.0 / (n_in + n_out))
            weights.append(rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32))
            weights.append(np.zeros((n_out,), np.float32))
        return weights

    def apply(self, weights: Any, x: Any, *, twice_differentiated: bool = False) -> Any:
        import tensorflow as tf  # only where a network runs: suites load without TensorFlow

        h = tf.concat([tf.sin(x), tf.cos(x), x], axis=-1)
        layers = len(weights) // 2
        for i in range(layers):
            h = tf.matmul(h, weights[2 * i]) + weights[2 * i + 1][:, None, :]
            if i < layers - 1:
                h = tf.nn.relu(h)
        return h


@dataclass(frozen=True)
class Cosine:
    """y = A cos(f x + b) on x in ``x_range``; A, f and b are drawn per task."""

    k_support: int = 10
    k_query: int = 10
    amplitude: tuple[float, float] = (0.5, 3.0)
    frequency: tuple[float, float] = (0.5, 1.5)
    x_range: tuple[float, float] = (-4.0, 4.0)
    hidden: tuple[int, ...] = (40, 40)

    name: ClassVar[str] = "cosine"
    loss: ClassVar[str] = "mse"  # "mse" (regression) or "xent" (classification)
    metrics: ClassVar[tuple[Metric, ...]] = (MSE,)  # what validation reports; first = compared

    def __post_init__(self) -> None:  # bad parameters fail when the suite is loaded
        if self.k_support < 1 or self.k_query < 1:
            raise ValueError(
                f"k_support and k_query must be >= 1, got {self.k_support}, {self.k_query}"
            )
        if not 0 < self.frequency[0] <= self.frequency[1]:
            raise ValueError(
                f"frequency must be (low, high) with 0 < low <= high, got {self.frequency}"
            )

    def model(self) -> FourierMLP:
        return FourierMLP(self.hidden)

    def sample(self, rng: np.random.Generator, n_tasks: int, split: str = "train") -> Tasks:
        """One meta-batch from the seeded stream ``rng``: support and query points per task."""
        amplitude = rng.uniform(*self.amplitude, size=(n_tasks, 1, 1))
        frequency = rng.uniform(*self.frequency, size=(n_tasks, 1, 1))
        phase = rng.uniform(0.0, 2 * np.pi, size=(n_tasks, 1, 1))
        x = rng.uniform(*self.x_range, size=(n_tasks, self.k_support + self.k_query, 1))
        y = amplitude * np.cos(frequency * x + phase)
        x, y = x.astype(np.float32), y.astype(np.float32)
        k = self.k_support
        return Tasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

    def data_description(self) -> dict[str, Any]:
        """What the manifest records as this domain's data."""
        return {"source": "generated in memory (cosine tasks; no data files)"}


@dataclass(frozen=True)
class TrimmedMean:
    """Mean of the workers left after dropping the ``trim`` with the highest and the ``trim``
    with the lowest mean recent loss (workers whose loss is not finite are dropped first). With
    too few workers to trim, every usable worker is averaged."""

    trim: int = 1
    name = "trimmed_mean"

    def merge(
        self, old: list[np.ndarray], workers: Sequence[list[np.ndarray]], history: np.ndarray
    ) -> Merge:
        scores = worker_scores(workers, history)  # mean recent loss per worker, inf if diverged
        usable = [i for i in np.argsort(scores, kind="stable") if np.isfinite(scores[i])]
        if not usable:
            return Merge(old, (), True)
        kept = usable[self.trim : len(usable) - self.trim] or usable
        merged = mean_of(workers, kept)
        diverged = not all(np.isfinite(w).all() for w in merged)
        return Merge(merged, tuple(sorted(int(i) for i in kept)), diverged)
