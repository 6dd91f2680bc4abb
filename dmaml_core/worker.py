"""A DMAML worker: receives theta, runs E MAML steps of T tasks from its own seeded task stream,
returns its weights and loss history. Backends decide where workers live; this is what they run.

A worker is *logical*: a process may host many of them. Its optimizer state and task stream
persist across runs (so W = 1, E = 1 is exactly plain MAML), while the compiled MAML functions are
shared by every worker of the same (domain, config) in a process, so tracing is paid once per task
shape, across case-seeds too (the runner no longer clears them). The conv-net layout is chosen on
a learner's first step (``dmaml_core.layouts``; cached on disk, so worker processes started later
reuse the measured choice).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmaml_core.maml import CompiledMaml, MamlConfig, to_numpy, to_tensors
from dmaml_core.models import NumpyWeights
from dmaml_core.optim import AdamState, adam_from_numpy, adam_to_numpy
from dmaml_core.tasks.base import Domain


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs; frozen and picklable so it can be sent to another process."""

    domain: Domain
    maml: MamlConfig
    epochs: int = 1  # E: MAML steps per run
    tasks_per_step: int = 10  # T: tasks per MAML step
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.tasks_per_step < 1:
            raise ValueError(f"tasks_per_step must be >= 1, got {self.tasks_per_step}")


@dataclass
class WorkerResult:
    worker_id: int
    weights: NumpyWeights
    loss_sums: np.ndarray  # [E] sum over the T tasks of the post-adaptation query loss, per step
    accuracies: np.ndarray  # [E] mean post-adaptation query accuracy, per step
    compute_s: float  # wall time of this worker's E steps, measured in the worker
    cpu_s: float  # CPU time of the hosting process during those steps


@dataclass
class GradientResult:
    """Task-parallel mode: a worker's summed (or averaged) meta-gradient over its share of tasks."""

    worker_id: int
    grads: NumpyWeights
    n_tasks: int
    loss_sum: float
    accuracy: float
    compute_s: float
    cpu_s: float


def task_stream(seed: int, worker_id: int) -> np.random.Generator:
    """Independent, reproducible stream per (experiment seed, logical worker)."""
    return np.random.default_rng([seed, worker_id])


@functools.lru_cache(maxsize=8)
def compiled_maml(domain: Domain, cfg: MamlConfig) -> CompiledMaml:
    """The compiled learner for a domain, shared by all workers of this process. A domain whose
    meta step is not supervised MAML (e.g. RL) provides its own ``compile(cfg)`` returning an object
    with CompiledMaml's methods (init_optimizer, step, gradients, validate)."""
    custom = getattr(domain, "compile", None)
    if custom is not None:
        return custom(cfg)  # type: ignore[no-any-return]
    return CompiledMaml(domain.model(), cfg)


class Worker:
    def __init__(self, config: WorkerConfig, worker_id: int) -> None:
        self.config = config
        self.worker_id = worker_id
        self.maml = compiled_maml(config.domain, config.maml)
        self.rng = task_stream(config.seed, worker_id)
        self.opt_state: AdamState | None = None  # created from the first theta received

    def get_state(self) -> dict[str, Any]:
        """Everything that carries over from one run to the next (task-stream position and Adam
        state), as numpy arrays and JSON-able values: restoring it with ``set_state`` in a fresh
        worker, in any process, continues the same sequence bit for bit."""
        return {
            "worker_id": self.worker_id,
            "rng": self.rng.bit_generator.state,
            "opt": None if self.opt_state is None else adam_to_numpy(self.opt_state),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state["worker_id"] != self.worker_id:
            raise ValueError(
                f"state of logical worker {state['worker_id']} given to worker {self.worker_id}"
            )
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self.rng = rng
        self.opt_state = None if state["opt"] is None else adam_from_numpy(state["opt"])

    def run(self, theta: NumpyWeights) -> WorkerResult:
        cfg = self.config
        start, cpu_start = time.perf_counter(), time.process_time()
        params = to_tensors(theta)
        opt_state = self.opt_state
        if opt_state is None:
            opt_state = self.maml.init_optimizer(params)
        loss_sums, accuracies = [], []
        for _ in range(cfg.epochs):
            tasks = cfg.domain.sample(self.rng, cfg.tasks_per_step)
            params, opt_state, metrics = self.maml.step(params, opt_state, tasks)
            loss_sums.append(metrics.loss_sum)
            accuracies.append(metrics.accuracy)
        self.opt_state = opt_state
        weights = to_numpy(params)  # reads the result back: the compute is finished here
        return WorkerResult(
            self.worker_id,
            weights,
            np.array([float(x) for x in loss_sums]),
            np.array([float(x) for x in accuracies]),
            time.perf_counter() - start,
            time.process_time() - cpu_start,
        )

    def gradients(self, theta: NumpyWeights, n_tasks: int) -> GradientResult:
        """Meta-gradient of ``n_tasks`` tasks from this worker's stream at ``theta`` (no update)."""
        start, cpu_start = time.perf_counter(), time.process_time()
        tasks = self.config.domain.sample(self.rng, n_tasks)
        grads, metrics = self.maml.gradients(to_tensors(theta), tasks)
        result = to_numpy(grads)
        return GradientResult(
            self.worker_id,
            result,
            n_tasks,
            float(metrics.loss_sum),
            float(metrics.accuracy),
            time.perf_counter() - start,
            time.process_time() - cpu_start,
        )
