"""Serial backend: every logical worker runs in this process, one after another.

The reference for equivalence tests and the simplest way to run DMAML with W workers on one core.
"""

from __future__ import annotations

import time
from typing import Any

from dmaml_core.backends.base import BackendRun
from dmaml_core.backends.host import task_counts
from dmaml_core.models import NumpyWeights
from dmaml_core.worker import GradientResult, Worker, WorkerConfig


class SerialBackend:
    name = "serial"

    def __init__(self, config: WorkerConfig, n_workers: int) -> None:
        if n_workers < 1:
            raise ValueError(f"workers must be >= 1, got {n_workers}")
        self.n_workers = n_workers
        self.workers = [Worker(config, i) for i in range(n_workers)]

    def run(self, theta: NumpyWeights, run_index: int) -> BackendRun:
        start = time.perf_counter()
        results = [w.run(theta) for w in self.workers]
        elapsed = time.perf_counter() - start
        # In-process there is nothing to send or receive; what is left after compute is overhead.
        overhead = max(0.0, elapsed - sum(r.compute_s for r in results))
        return BackendRun(results, dispatch_s=0.0, collect_s=overhead)

    def gradients(
        self, theta: NumpyWeights, tasks_per_worker: list[int], run_index: int
    ) -> list[GradientResult]:
        tasks = task_counts(tasks_per_worker, len(self.workers))
        return [w.gradients(theta, tasks[w.worker_id]) for w in self.workers]

    def get_state(self) -> list[dict[str, Any]]:
        return [w.get_state() for w in self.workers]

    def set_state(self, states: list[dict[str, Any]]) -> None:
        if len(states) != len(self.workers):
            raise ValueError(f"{len(states)} worker states for {len(self.workers)} workers")
        for worker, state in zip(self.workers, states, strict=True):
            worker.set_state(state)

    def close(self) -> None:
        self.workers = []

    def __enter__(self) -> SerialBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
