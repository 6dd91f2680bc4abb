"""Ray backend: P persistent Ray actors, each hosting several logical workers (see ``host``), on a
local single-node cluster or on an existing (multi-machine) cluster.

- **Cluster**: ``address`` (or the ``RAY_ADDRESS`` environment variable, ``auto`` included)
  connects to a running cluster; otherwise a local one is started with ``num_cpus`` CPUs (default:
  this machine's cores). If Ray is already initialised in this driver (e.g. a test fixture), that
  connection is used as is. ``close()`` shuts down only what this backend started: its actors
  always, and the Ray connection/local cluster only if it opened it.
- **Actors**: P = min(W, ``actors`` or the cluster's CPUs); each reserves one CPU and pins
  TensorFlow to ``threads_per_process`` threads (default ``max(1, CPUs // P)``). Ray places them
  as its resources allow.
- **Transport**: theta goes into the object store once per run (``ray.put``); every actor gets
  the same reference and Ray resolves it to numpy arrays in the actor's process.
- **Faults**: an actor that dies, a worker that raises and a run that outlives ``timeout_s`` kill
  every actor of this backend and raise ``WorkerError`` naming the run, actor and logical workers.

Where the time goes: ``dispatch_s`` is ``ray.put`` plus submitting one call per actor. When every
actor runs on the driver's node, the actors' ``perf_counter`` stamps share the driver's clock and
``collect_s`` is measured exactly as in the processes backend (latest finish -> all results in);
on a multi-node cluster clocks differ, so ``collect_s`` falls back to wall - dispatch - the busiest
actor's in-actor time, which also counts the delivery of theta (flagged by
``info["collect_estimated"] = 1``).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, NoReturn

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from dmaml_core.backends.base import BackendRun, WorkerError
from dmaml_core.backends.host import (
    HostFailure,
    HostReport,
    InjectedFault,
    WorkerHost,
    assign_workers,
    check_backend_options,
    describe_host,
    failure_message,
    merged_results,
    run_info,
    task_counts,
)
from dmaml_core.models import NumpyWeights
from dmaml_core.worker import GradientResult, WorkerConfig, WorkerResult

DEFAULT_TIMEOUT_S = 600.0  # per run; generous because the first run also traces the step
DEFAULT_START_TIMEOUT_S = 180.0  # actor process start + TensorFlow import + building the workers


@ray.remote(num_cpus=1)
class RayHost:
    """A Ray actor around a ``WorkerHost``: one actor process, several logical workers."""

    def __init__(
        self,
        config: WorkerConfig,
        worker_ids: list[int],
        threads: int,
        fault: InjectedFault | None,
    ) -> None:
        self.host = WorkerHost(config, worker_ids, threads, fault)

    def ready(self) -> tuple[int, int, str]:
        pid, threads = self.host.ready()
        return pid, threads, ray.get_runtime_context().get_node_id()

    def run(self, theta: NumpyWeights, run_index: int) -> HostReport | HostFailure:
        return self.host.run(theta, run_index)

    def gradients(
        self, theta: NumpyWeights, tasks: dict[int, int], run_index: int
    ) -> HostReport | HostFailure:
        return self.host.gradients(theta, tasks, run_index)

    def get_state(self) -> list[dict[str, Any]] | HostFailure:
        return self.host.get_state()

    def set_state(self, states: list[dict[str, Any]]) -> int | HostFailure:
        return self.host.set_state(states)


class RayBackend:
    name = "ray"

    def __init__(
        self,
        config: WorkerConfig,
        n_workers: int,
        actors: int | None = None,
        threads_per_process: int | None = None,
        address: str | None = None,
        num_cpus: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        _fault: InjectedFault | None = None,
    ) -> None:
        check_backend_options(n_workers, "actors", actors, threads_per_process, timeout_s)
        start = time.perf_counter()
        self.n_workers = n_workers
        self.timeout_s = timeout_s
        self._failure: str | None = None
        self._actors: list[Any] = []
        self.owns_ray = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address is not None:
                ray.init(address=address)
            else:  # a local single-node cluster, ours to shut down
                ray.init(num_cpus=num_cpus, include_dashboard=False)
            self.owns_ray = True
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.processes = min(n_workers, actors or cpus)
        self.threads_per_process = threads_per_process or max(1, cpus // self.processes)
        self.assignment = assign_workers(n_workers, self.processes)
        self._actors = [
            RayHost.remote(config, ids, self.threads_per_process, _fault)  # type: ignore[attr-defined]
            for ids in self.assignment
        ]
        self.pids: list[int] = [-1] * self.processes
        replies = self._gather(
            [actor.ready.remote() for actor in self._actors], "start-up", start, start_timeout_s
        )
        self.pids = [pid for pid, _, _ in replies]
        self.threads_per_process = replies[0][1]
        driver_node = ray.get_runtime_context().get_node_id()
        self.same_node = all(node == driver_node for _, _, node in replies)
        self.startup_s = time.perf_counter() - start

    def run(self, theta: NumpyWeights, run_index: int) -> BackendRun:
        self._check_open()
        start = time.perf_counter()
        ref = ray.put(theta)
        calls = [actor.run.remote(ref, run_index) for actor in self._actors]
        sent = time.perf_counter()
        reports: list[HostReport] = self._gather(calls, f"run {run_index}", start, self.timeout_s)
        received = time.perf_counter()
        results: list[WorkerResult] = merged_results(reports)
        info = run_info(reports, self.threads_per_process)
        if self.same_node:
            collect = received - max(r.done for r in reports)
            info["receive_lag_s"] = max(0.0, max(r.received for r in reports) - sent)
        else:
            collect = received - sent - max(r.busy_s for r in reports)
            info["collect_estimated"] = 1.0
        return BackendRun(results, dispatch_s=sent - start, collect_s=max(0.0, collect), info=info)

    def gradients(
        self, theta: NumpyWeights, tasks_per_worker: list[int], run_index: int
    ) -> list[GradientResult]:
        tasks = task_counts(tasks_per_worker, self.n_workers)
        self._check_open()
        start = time.perf_counter()
        ref = ray.put(theta)
        calls = [actor.gradients.remote(ref, tasks, run_index) for actor in self._actors]
        reports = self._gather(calls, f"task-parallel run {run_index}", start, self.timeout_s)
        return merged_results(reports)

    def get_state(self) -> list[dict[str, Any]]:
        """Pull every logical worker's state back from the actors (for a checkpoint)."""
        self._check_open()
        calls = [actor.get_state.remote() for actor in self._actors]
        replies = self._gather(calls, "get state", time.perf_counter(), self.timeout_s)
        return sorted((s for host in replies for s in host), key=lambda s: int(s["worker_id"]))

    def set_state(self, states: list[dict[str, Any]]) -> None:
        """Send every logical worker's state to the actors; each restores the ones it hosts."""
        if len(states) != self.n_workers:
            raise ValueError(f"{len(states)} worker states for {self.n_workers} workers")
        self._check_open()
        ref = ray.put(states)
        calls = [actor.set_state.remote(ref) for actor in self._actors]
        self._gather(calls, "set state", time.perf_counter(), self.timeout_s)

    def _gather(self, calls: list[Any], what: str, start: float, timeout_s: float) -> list[Any]:
        """Every call's result, in actor order; the first failure ends it, not the slowest."""
        actor_of = {call: h for h, call in enumerate(calls)}
        replies: dict[int, Any] = {}
        pending = list(calls)
        while pending:
            remaining = start + timeout_s - time.perf_counter()
            done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, remaining))
            if not done:
                hung = ", ".join(self._describe(actor_of[c]) for c in pending)
                self._fail(f"{what}: {hung} did not answer within {timeout_s:g} s")
            h = actor_of[done[0]]
            try:
                reply = ray.get(done[0])
            except RayActorError as err:
                self._fail(f"{what}: {self._describe(h)} died ({type(err).__name__})")
            except (RayError, GetTimeoutError) as err:
                self._fail(f"{what}: {self._describe(h)} failed:\n{err}")
            if isinstance(reply, HostFailure):
                self._fail(f"{what}: {failure_message(reply, self._describe(h))}")
            replies[h] = reply
        return [replies[h] for h in range(len(calls))]

    def _describe(self, h: int) -> str:
        return describe_host("actor", h, self.pids[h], self.assignment[h])

    def _check_open(self) -> None:
        if self._failure is not None:
            raise WorkerError(f"ray backend is shut down after a failure: {self._failure}")
        if not self._actors:
            raise WorkerError("ray backend is closed")

    def _fail(self, message: str) -> NoReturn:
        self._failure = message.splitlines()[0]
        self.close()
        raise WorkerError(f"ray backend, {message}")

    def close(self) -> None:
        """Kill this backend's actors (their processes end; Ray does not restart them) and shut
        Ray down only if this backend started or connected it."""
        for actor in self._actors:
            with contextlib.suppress(RayError):  # already dead
                ray.kill(actor, no_restart=True)
        self._actors = []
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()
        self.owns_ray = False

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
