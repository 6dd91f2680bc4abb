"""The small interface every backend implements; the central learner never knows which one runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dmaml_core.models import NumpyWeights
from dmaml_core.worker import GradientResult, WorkerResult


class WorkerError(RuntimeError):
    """A worker crashed, hung or vanished; the message names the worker and the run."""


class WorkerLost(WorkerError):
    """A worker process or its node was lost, and the backend can bring its workers back:
    ``recover()`` (which returns what it did) leaves every worker running again but with a fresh
    state, so the caller restores the state from a checkpoint and re-does the runs after it. Only a
    backend that can recover raises it (Ray with actor restarts); any other ``WorkerError`` ends
    the backend. The message is one line."""

    def __init__(
        self,
        message: str,
        *,
        run_index: int | None,
        actor: int,
        pid: int,
        node: str,
        node_alive: bool,
        recover: Callable[[], dict[str, Any]],
    ) -> None:
        super().__init__(message)
        self.run_index, self.actor, self.pid = run_index, actor, pid
        self.node, self.node_alive, self.recover = node, node_alive, recover


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
