"""The central learner of DMAML: broadcast theta -> W workers train -> merge, one call per run.

Two modes share the backends:
- ``CentralLearner`` (DMAML, weight averaging): each worker runs E MAML steps from theta and the
  weight generator merges the returned weights.
- ``TaskParallelLearner`` (gradient averaging, the thesis' future work): one MAML step's T tasks are
  split over the workers, their meta-gradients are combined and the central learner applies one
  Adam step; mathematically single-worker MAML with T tasks.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dmaml_core.backends.base import Backend
from dmaml_core.maml import MamlConfig, to_numpy, to_tensors
from dmaml_core.models import NumpyWeights
from dmaml_core.optim import AdamState, adam_from_numpy, adam_init, adam_to_numpy, adam_update
from dmaml_core.weight_generators import HISTORY_WINDOW, WeightGenerator, generator_state


@dataclass
class RunRecord:
    """One send-train-merge cycle: what came back, what was kept, where the time went."""

    run_index: int
    loss_sums: np.ndarray  # [W, E] per worker, per MAML step
    accuracies: np.ndarray  # [W, E]
    kept: tuple[int, ...]
    diverged: bool
    wall_s: float
    dispatch_s: float
    compute_s: np.ndarray  # [W] each worker's own compute time
    collect_s: float
    merge_s: float
    worker_cpu_s: np.ndarray  # [W]
    extra: dict[str, float] = field(default_factory=dict)


class LossHistory:
    """The last ``HISTORY_WINDOW`` loss sums of every worker, as the weight generators see them."""

    def __init__(self, n_workers: int, window: int = HISTORY_WINDOW) -> None:
        self._rows = [deque[float](maxlen=window) for _ in range(n_workers)]

    def extend(self, loss_sums: np.ndarray) -> None:
        for row, values in zip(self._rows, loss_sums, strict=True):
            row.extend(float(v) for v in values)

    def array(self) -> np.ndarray:
        return np.array([list(row) for row in self._rows], dtype=np.float64)

    def restore(self, array: np.ndarray) -> None:
        """Refill from ``array()``'s output (float64 holds the float losses exactly)."""
        if len(array) != len(self._rows):
            raise ValueError(
                f"loss history of {len(array)} workers, this learner has {len(self._rows)}"
            )
        for row, values in zip(self._rows, array, strict=True):
            row.clear()
            row.extend(float(v) for v in values)


def _restore_theta(state: dict[str, Any], kind: str, n_workers: int) -> NumpyWeights:
    """Checks shared by both learners' ``set_state``: a checkpoint of another mode or W is refused,
    not half-applied."""
    if state.get("kind") != kind:
        raise ValueError(f"a {state.get('kind')!r} learner state cannot restore a {kind!r} learner")
    if len(state["workers"]) != n_workers:
        raise ValueError(f"state of {len(state['workers'])} workers, this learner has {n_workers}")
    return [np.asarray(w, np.float32) for w in state["theta"]]


class CentralLearner:
    def __init__(self, theta: NumpyWeights, backend: Backend, generator: WeightGenerator) -> None:
        self.theta = [np.asarray(w, np.float32) for w in theta]
        self.backend = backend
        self.generator = generator
        self.history = LossHistory(backend.n_workers)
        self.runs_done = 0

    def get_state(self) -> dict[str, Any]:
        """Everything the next run depends on: theta, the loss history the generator sees, the run
        counter and every logical worker's state, pulled from wherever the backend keeps them."""
        return {
            "kind": "dmaml",
            "theta": [w.copy() for w in self.theta],
            "history": self.history.array(),
            "runs_done": self.runs_done,
            "generator": generator_state(self.generator),
            "workers": self.backend.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        theta = _restore_theta(state, "dmaml", self.backend.n_workers)
        if state["generator"] != generator_state(self.generator):
            raise ValueError(
                f"state merged with weight generator {state['generator']}, "
                f"this learner uses {generator_state(self.generator)}"
            )
        self.backend.set_state(state["workers"])
        self.theta = theta
        self.history.restore(np.asarray(state["history"], np.float64))
        self.runs_done = int(state["runs_done"])

    def run(self) -> RunRecord:
        start = time.perf_counter()
        round_trip = self.backend.run(self.theta, self.runs_done)
        results = sorted(round_trip.results, key=lambda r: r.worker_id)
        loss_sums = np.stack([r.loss_sums for r in results])
        self.history.extend(loss_sums)
        merge_start = time.perf_counter()
        merged = self.generator.merge(
            self.theta, [r.weights for r in results], self.history.array()
        )
        merge_s = time.perf_counter() - merge_start
        if not merged.diverged:
            self.theta = merged.weights
        record = RunRecord(
            run_index=self.runs_done,
            loss_sums=loss_sums,
            accuracies=np.stack([r.accuracies for r in results]),
            kept=merged.kept,
            diverged=merged.diverged,
            wall_s=time.perf_counter() - start,
            dispatch_s=round_trip.dispatch_s,
            compute_s=np.array([r.compute_s for r in results]),
            collect_s=round_trip.collect_s,
            merge_s=merge_s,
            worker_cpu_s=np.array([r.cpu_s for r in results]),
            extra=dict(round_trip.info),
        )
        self.runs_done += 1
        return record


def split_tasks(n_tasks: int, n_workers: int) -> list[int]:
    """Share T tasks over W workers as evenly as possible (earlier workers take the remainder)."""
    if n_tasks < n_workers:
        raise ValueError(f"task-parallel MAML needs tasks >= workers, got {n_tasks} < {n_workers}")
    base, extra = divmod(n_tasks, n_workers)
    return [base + (i < extra) for i in range(n_workers)]


class TaskParallelLearner:
    """Gradient averaging: the workers compute meta-gradients for shares of one meta-batch."""

    def __init__(
        self, theta: NumpyWeights, backend: Backend, cfg: MamlConfig, tasks_per_step: int
    ) -> None:
        self.theta = [np.asarray(w, np.float32) for w in theta]
        self.backend = backend
        self.cfg = cfg
        self.shares = split_tasks(tasks_per_step, backend.n_workers)
        self.opt_state: AdamState = adam_init(self.theta)
        self.runs_done = 0

    def get_state(self) -> dict[str, Any]:
        """Theta, the central Adam state, the run counter and the workers' task streams."""
        return {
            "kind": "task_parallel",
            "theta": [w.copy() for w in self.theta],
            "opt": adam_to_numpy(self.opt_state),
            "runs_done": self.runs_done,
            "workers": self.backend.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        theta = _restore_theta(state, "task_parallel", self.backend.n_workers)
        self.backend.set_state(state["workers"])
        self.theta = theta
        self.opt_state = adam_from_numpy(state["opt"])
        self.runs_done = int(state["runs_done"])

    def combine(self, grads: list[NumpyWeights], shares: list[int]) -> NumpyWeights:
        """Each worker aggregated its own share with ``cfg.aggregation``; undo that into the
        aggregation over all T tasks: sums add up, means are re-weighted by share size."""
        total = sum(shares)
        weights = [1.0 if self.cfg.aggregation == "sum" else n / total for n in shares]
        return [
            np.sum(
                [w * g[j].astype(np.float64) for w, g in zip(weights, grads, strict=True)], axis=0
            ).astype(np.float32)
            for j in range(len(grads[0]))
        ]

    def run(self) -> RunRecord:
        start = time.perf_counter()
        results = sorted(
            self.backend.gradients(self.theta, self.shares, self.runs_done),
            key=lambda r: r.worker_id,
        )
        merge_start = time.perf_counter()
        grads = self.combine([r.grads for r in results], [r.n_tasks for r in results])
        diverged = not all(np.isfinite(g).all() for g in grads)
        if not diverged:
            new_theta, self.opt_state = adam_update(
                to_tensors(grads), self.opt_state, to_tensors(self.theta), self.cfg.beta
            )
            self.theta = to_numpy(new_theta)
        merge_s = time.perf_counter() - merge_start
        compute = np.array([r.compute_s for r in results])
        wall = time.perf_counter() - start
        record = RunRecord(
            run_index=self.runs_done,
            loss_sums=np.array([[r.loss_sum] for r in results]),
            accuracies=np.array([[r.accuracy] for r in results]),
            kept=tuple(range(len(results))),
            diverged=diverged,
            wall_s=wall,
            dispatch_s=0.0,
            compute_s=compute,
            collect_s=max(0.0, wall - merge_s - float(compute.max())),
            merge_s=merge_s,
            worker_cpu_s=np.array([r.cpu_s for r in results]),
        )
        self.runs_done += 1
        return record
