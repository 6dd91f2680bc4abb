"""Weight generators: how the central learner merges the weights its workers return.

Each generator is a small frozen object with one pure method,
``merge(old, workers, history) -> Merge``, where ``history`` is a [W, h] array holding the last
h <= 5 loss sums of every worker (oldest first; the last column is the run just finished).
A worker whose loss or weights are not finite counts as diverged: loss-filtering generators drop
it, ``plain`` and ``weighted`` report the whole merge as diverged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from dmaml_core.plugins import check_weight_generator
from dmaml_core.registry import build

NumpyWeights = list[np.ndarray]
HISTORY_WINDOW = 5


class Merge(NamedTuple):
    weights: NumpyWeights  # the new central weights
    kept: tuple[int, ...]  # indices of the workers that were averaged
    diverged: bool  # True when the new weights are not finite (or no worker was usable)


class WeightGenerator(Protocol):
    name: str

    def merge(
        self, old: NumpyWeights, workers: Sequence[NumpyWeights], history: np.ndarray
    ) -> Merge: ...


def mean_of(workers: Sequence[NumpyWeights], kept: Sequence[int]) -> NumpyWeights:
    """Arithmetic mean, weight by weight, of the workers in ``kept``."""
    return [
        np.mean(np.stack([workers[i][j] for i in kept]), axis=0, dtype=np.float64).astype(
            workers[kept[0]][j].dtype
        )
        for j in range(len(workers[kept[0]]))
    ]


def _finite(weights: NumpyWeights) -> bool:
    return all(bool(np.isfinite(w).all()) for w in weights)


def worker_scores(workers: Sequence[NumpyWeights], history: np.ndarray) -> np.ndarray:
    """Mean of each worker's recent loss sums; +inf if it diverged (NaN/inf loss or weights)."""
    scores = np.asarray(history, np.float64).mean(axis=1)
    finite = np.array([_finite(w) for w in workers]) & np.isfinite(scores)
    return np.where(finite, scores, np.inf)


def _checked(old: NumpyWeights, workers: Sequence[NumpyWeights], kept: Sequence[int]) -> Merge:
    if not kept:
        return Merge(old, (), True)
    merged = mean_of(workers, kept)
    return Merge(merged, tuple(kept), not _finite(merged))


@dataclass(frozen=True)
class Plain:
    """Arithmetic mean of all workers' weights (federated averaging with equal weights)."""

    name = "plain"

    def merge(
        self, old: NumpyWeights, workers: Sequence[NumpyWeights], history: np.ndarray
    ) -> Merge:
        return _checked(old, workers, range(len(workers)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class LossMedian:
    """Average only the workers whose mean recent loss is no worse than the median worker's.

    Ties with the median are kept; a diverged worker scores +inf and is always dropped unless every
    worker diverged (then the merge is reported as diverged and the old weights stay)."""

    name = "loss_median"

    def merge(
        self, old: NumpyWeights, workers: Sequence[NumpyWeights], history: np.ndarray
    ) -> Merge:
        scores = worker_scores(workers, history)
        usable = np.isfinite(scores)
        if not usable.any():
            return Merge(old, (), True)
        median = np.median(scores)  # +inf scores count as the worst, so they pull the median up
        kept = [i for i in range(len(workers)) if usable[i] and scores[i] <= median]
        return _checked(old, workers, kept)


@dataclass(frozen=True)
class Weighted:
    """Interpolate towards the workers' mean: new = g * mean(workers) + (1 - g) * old."""

    g: float = 0.5
    name = "weighted"

    def __post_init__(self) -> None:
        if not 0.0 < self.g <= 1.0:
            raise ValueError(f"weighted: g must be in (0, 1], got {self.g!r}")

    def merge(
        self, old: NumpyWeights, workers: Sequence[NumpyWeights], history: np.ndarray
    ) -> Merge:
        mean = mean_of(workers, range(len(workers)))  # type: ignore[arg-type]
        merged = [
            (self.g * m.astype(np.float64) + (1.0 - self.g) * o.astype(np.float64)).astype(o.dtype)
            for m, o in zip(mean, old, strict=True)
        ]
        return Merge(merged, tuple(range(len(workers))), not _finite(merged))


@dataclass(frozen=True)
class LossMovingAverage:
    """Keep the workers whose latest loss sum is below the rolling average of all recent loss sums
    (every worker, last 5 runs). If none is below it (losses all equal, or all rising), keep the
    worker(s) with the lowest latest loss: the filter never drops every worker."""

    name = "loss_moving_average"

    def merge(
        self, old: NumpyWeights, workers: Sequence[NumpyWeights], history: np.ndarray
    ) -> Merge:
        history = np.asarray(history, np.float64)
        usable = np.isfinite(worker_scores(workers, history))
        if not usable.any():
            return Merge(old, (), True)
        latest = np.where(usable, history[:, -1], np.inf)
        rolling = history[usable].mean()
        kept = [i for i in range(len(workers)) if latest[i] < rolling]
        if not kept:
            best = latest.min()
            kept = [i for i in range(len(workers)) if latest[i] == best]
        return _checked(old, workers, kept)


WEIGHT_GENERATORS: dict[str, Callable[..., WeightGenerator]] = {
    "plain": Plain,
    "loss_median": LossMedian,
    "weighted": Weighted,
    "loss_moving_average": LossMovingAverage,
}


def generator_state(generator: WeightGenerator) -> dict[str, Any]:
    """What a checkpoint stores of a generator. Generators are pure (their only memory, the loss
    history window, is the learner's ``LossHistory``), so this is their name and parameters: a
    resume checks them instead of silently merging with a different rule."""
    params: dict[str, Any] = asdict(generator) if is_dataclass(generator) else {}  # type: ignore[arg-type]
    return {"name": generator.name, **params}


def make_weight_generator(name: str, **params: Any) -> WeightGenerator:
    """A built-in merge rule by name, or a plug-in (``module:Class`` or an entry point of group
    ``dmaml_bench.weight_generators``), checked against the protocol."""
    generator = build("weight generator", WEIGHT_GENERATORS, name, params)
    check_weight_generator(name, generator)
    return generator
