"""The small interface every backend implements; the central learner never knows which one runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from dmaml_core.models import NumpyWeights
from dmaml_core.worker import GradientResult, WorkerResult


class WorkerError(RuntimeError):
    """A worker crashed, hung or vanished; the message names the worker and the run."""


class BackendConnectionError(RuntimeError):
    """The backend could not reach where its workers should run (e.g. no Ray cluster at the given
    address, or a token-auth cluster without the token). The message is one line: what failed,
    where, and what to try; the CLI prints it and exits with status 2 (bad input, not a bug)."""


@dataclass
class BackendRun:
    """What one round trip to the workers returned, with where the time went."""

    results: list[WorkerResult]
    dispatch_s: float = 0.0  # sending theta to every worker
    collect_s: float = 0.0  # waiting for / receiving results after the slowest compute finished
    info: dict[str, float] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    n_workers: int

    def run(self, theta: NumpyWeights, run_index: int) -> BackendRun: ...

    def gradients(
        self, theta: NumpyWeights, tasks_per_worker: list[int], run_index: int
    ) -> list[GradientResult]: ...

    def get_state(self) -> list[dict[str, Any]]:
        """Every logical worker's ``Worker.get_state()``, in worker-id order, pulled back from
        wherever the workers live (for checkpoints)."""
        ...

    def set_state(self, states: list[dict[str, Any]]) -> None:
        """Give every logical worker the state ``get_state`` returned (for resume)."""
        ...

    def close(self) -> None: ...
