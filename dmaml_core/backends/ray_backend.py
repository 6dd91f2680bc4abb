"""Ray backend: P persistent Ray actors, each hosting several logical workers (see ``host``), on a
local single-node cluster or on an existing (multi-machine) cluster.

- **Cluster**: ``address`` (or the ``RAY_ADDRESS`` environment variable, ``auto`` included)
  connects to a running cluster; otherwise a local one is started with ``num_cpus`` CPUs (default:
  this machine's cores). If Ray is already initialised in this driver (e.g. a test fixture), that
  connection is used as is. ``close()`` shuts down only what this backend started: its actors
  always, and the Ray connection/local cluster only if it opened it. Joining a cluster gives up
  after ``connect_timeout_s`` (30 s) with one line (``BackendConnectionError``, see ``connect``).
- **Driver death**: a normal exit shuts a local cluster down (Ray's atexit hook). After a kill -9,
  Ray alone ends its GCS and raylet at once but the actors only after ~2.5 s and its two agents
  after ~61 s (measured; a fixed timeout inside Ray, no setting), so a small reaper process
  (``_REAPER``) beside the driver kills that cluster's processes within a second instead.
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
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import psutil
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from dmaml_core.backends.base import BackendConnectionError, BackendRun, WorkerError
from dmaml_core.backends.host import (
    WARMUP_TIMEOUT_S,
    HostFailure,
    HostReport,
    InjectedFault,
    RunTimeout,
    WorkerHost,
    assign_workers,
    check_backend_options,
    check_scale,
    describe_host,
    failure_message,
    merged_results,
    run_info,
    task_counts,
)
from dmaml_core.models import NumpyWeights
from dmaml_core.worker import GradientResult, WorkerConfig, WorkerResult

# Without ``timeout_s`` the per-run limit follows the measured runs (``RunTimeout``); this is the
# limit of the first, tracing run of each kind and of requests that are not runs (state transfer).
DEFAULT_TIMEOUT_S = WARMUP_TIMEOUT_S
DEFAULT_START_TIMEOUT_S = 180.0  # actor process start + TensorFlow import + building the workers
DEFAULT_CONNECT_TIMEOUT_S = 30.0  # finding and joining an existing cluster
# Ray documents these for clusters started with RAY_AUTH_MODE=token (ray.exceptions.
# AuthenticationError): the token itself, or a file holding it (default ~/.ray/auth_token).
_AUTH_HINT = (
    "it uses token authentication and no valid token was given: set RAY_AUTH_TOKEN (or "
    "RAY_AUTH_TOKEN_PATH, or put the token in ~/.ray/auth_token) to the cluster's token"
)
_AUTH_MARKERS = ("Unauthenticated", "InvalidAuthToken", "AuthenticationError")
# Joins the cluster in a child process that can be killed at the deadline: ray.init itself
# retries an unreachable address for 10+ minutes and cannot be interrupted.
_PROBE = "import sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); ray.shutdown()"
_verified: set[str] = set()  # addresses a probe has joined in this driver: not probed again
# Runs beside a driver that started a local cluster and, once the driver is gone (its parent pid
# changes), kills every process of that cluster it has seen: Ray's GCS and raylet share the
# driver's fate, but its agents then spend a fixed 60 s reporting that to the dead GCS, and the
# actors take ~2.5 s. psutil's kill() checks the process's identity, so a reused pid is spared.
_REAPER = """
import os, sys, time, psutil
driver, seen = int(sys.argv[1]), {}
roots = []
for pid in sys.argv[2:]:
    try:
        roots.append(psutil.Process(int(pid)))
    except psutil.Error:
        pass
while os.getppid() == driver:
    for root in roots:
        try:
            for proc in [root, *root.children(recursive=True)]:
                seen.setdefault(proc.pid, proc)
        except psutil.Error:
            pass
    time.sleep(0.5)
for proc in seen.values():
    try:
        proc.kill()
    except psutil.Error:
        pass
"""


def default_log_path() -> Path:
    """Where Ray's own output from joining a cluster goes (one file per driver process)."""
    return Path(tempfile.gettempdir()) / "dmaml-bench" / f"ray-connect-{os.getpid()}.log"


def connect(
    address: str,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    log_path: Path | None = None,
) -> None:
    """Join the Ray cluster at ``address`` ("host:port", "auto", "ray://...") within
    ``timeout_s``, or raise ``BackendConnectionError`` with one line: what failed, where, and
    what to try. Ray's own output (its C++ connection retries) goes to ``log_path``, named in the
    error.

    ``ray.init`` alone retries an unreachable address for more than ten minutes and prints
    C++ warnings and a traceback, so: resolve the address (``auto`` finds no cluster at once), try
    a plain TCP connection (nothing listening fails at once), then join from a child process
    that is killed at the deadline (and whose output shows a token-auth refusal within a second),
    and only then call ``ray.init`` here, on an address known to answer.
    """
    log = log_path or default_log_path()
    deadline = time.monotonic() + timeout_s
    where, resolved = address, address
    if not address.startswith("ray://"):
        from ray._private.services import canonicalize_bootstrap_address_or_die

        try:
            resolved = canonicalize_bootstrap_address_or_die(address)
        except (ConnectionError, ValueError) as err:
            first = str(err).split(". ")[0].rstrip(".")
            raise BackendConnectionError(
                f"ray: no cluster found for address {address!r} ({first}); start one with "
                "`ray start --head` or give its HOST:PORT (--ray-address / RAY_ADDRESS)"
            ) from None
        where = address if resolved == address else f"{address} ({resolved})"
        host, _, port = resolved.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), min(5.0, timeout_s)).close()
        except (OSError, ValueError) as err:
            reason = "connection refused" if isinstance(err, ConnectionRefusedError) else err
            raise BackendConnectionError(
                f"ray: nothing answers at {where} ({reason}); is a cluster running there? "
                f"check with `ray status --address {resolved}`"
            ) from None
    if resolved not in _verified:
        _probe(resolved, where, deadline, timeout_s, log)
        _verified.add(resolved)
    try:
        ray.init(address=resolved, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as err:  # a race with the probe: the cluster went away in between
        _verified.discard(resolved)
        text = " ".join(str(err).split())[:300]
        raise BackendConnectionError(
            f"ray: could not join the cluster at {where} ({type(err).__name__}: {text}); "
            f"check with `ray status --address {resolved}`; Ray's output: {log}"
        ) from None


def _probe(address: str, where: str, deadline: float, timeout_s: float, log: Path) -> None:
    """Join ``address`` from a child process, killed at ``deadline``; fail in one line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"--- joining the Ray cluster at {where}\n")
        out.flush()
        child = subprocess.Popen(
            [sys.executable, "-c", _PROBE, address],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        start = out.tell()
    try:
        while (code := child.poll()) is None and time.monotonic() < deadline:
            if _log_has(log, start, _AUTH_MARKERS):
                break
            time.sleep(0.2)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
    if code == 0:
        return
    check = f"check with `ray status --address {address}`"
    if _log_has(log, start, _AUTH_MARKERS):
        raise BackendConnectionError(
            f"ray: the cluster at {where} refused the connection: {_AUTH_HINT}; Ray's output: {log}"
        )
    if code is None:
        raise BackendConnectionError(
            f"ray: no Ray cluster answered at {where} within {timeout_s:g} s; is one "
            f"running there? {check}; Ray's output: {log}"
        )
    raise BackendConnectionError(
        f"ray: could not join the cluster at {where} (exit code {code}); {check}; "
        f"Ray's output: {log}"
    )


def _log_has(log: Path, start: int, markers: tuple[str, ...]) -> bool:
    """Whether the log, from byte ``start`` on (this probe's part), contains any marker."""
    with log.open("rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return any(marker in text for marker in markers)


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
        timeout_s: float | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        log_path: Path | None = None,
        allow_large: bool = False,
        _fault: InjectedFault | None = None,
    ) -> None:
        """``timeout_s``: the per-run limit; None scales it from the measured runs
        (``RunTimeout``). ``connect_timeout_s`` bounds joining an existing cluster (``connect``;
        Ray's output goes to ``log_path``). ``allow_large`` lifts the bounds of ``check_scale``."""
        check_backend_options(n_workers, "actors", actors, threads_per_process, timeout_s)
        check_scale(n_workers, "actors", None, None, 1, allow_large)  # W, before any connection
        start = time.perf_counter()
        self.n_workers = n_workers
        self.limits = RunTimeout(timeout_s)
        self.timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s  # non-run requests
        self._failure: str | None = None
        self._actors: list[Any] = []
        self._reaper: subprocess.Popen[bytes] | None = None
        self.owns_ray = False
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address is not None:
                connect(address, connect_timeout_s, log_path)
            else:  # a local single-node cluster, ours to shut down
                before = {child.pid for child in psutil.Process().children()}
                ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,  # the actors' output stays in Ray's session logs
                    # Ray warns on every start that it enabled token auth for the local cluster.
                    logging_level=logging.ERROR,
                )
                started = [c.pid for c in psutil.Process().children() if c.pid not in before]
                self._reaper = subprocess.Popen(
                    [sys.executable, "-c", _REAPER, str(os.getpid()), *map(str, started)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # a Ctrl-C for the driver is not for it
                )
            self.owns_ray = True
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        try:
            check_scale(n_workers, "actors", actors, threads_per_process, cpus, allow_large)
        except ValueError:
            self.close()
            raise
        self.processes = min(n_workers, actors or cpus)
        self.threads_per_process = threads_per_process or max(1, cpus // self.processes)
        self.assignment = assign_workers(n_workers, self.processes)
        self._actors = [
            RayHost.remote(config, ids, self.threads_per_process, _fault)  # type: ignore[attr-defined]
            for ids in self.assignment
        ]
        self.pids: list[int] = [-1] * self.processes
        replies = self._gather(
            [actor.ready.remote() for actor in self._actors],
            "start-up",
            start,
            start_timeout_s,
            "the start-up limit",
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
        limit, why = self.limits.limit("run"), self.limits.explain("run")
        reports: list[HostReport] = self._gather(calls, f"run {run_index}", start, limit, why)
        received = time.perf_counter()
        self.limits.observe("run", received - start)
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
        what, limit = f"task-parallel run {run_index}", self.limits.limit("gradients")
        reports = self._gather(calls, what, start, limit, self.limits.explain("gradients"))
        self.limits.observe("gradients", time.perf_counter() - start)
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

    def _gather(
        self, calls: list[Any], what: str, start: float, timeout_s: float, why: str = ""
    ) -> list[Any]:
        """Every call's result, in actor order; the first failure ends it, not the slowest
        (``why`` explains the limit in the timeout error)."""
        actor_of = {call: h for h, call in enumerate(calls)}
        replies: dict[int, Any] = {}
        pending = list(calls)
        while pending:
            remaining = start + timeout_s - time.perf_counter()
            done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, remaining))
            if not done:
                hung = ", ".join(self._describe(actor_of[c]) for c in pending)
                why = f" ({why})" if why else ""
                self._fail(f"{what}: {hung} did not answer within {timeout_s:g} s{why}")
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
        if self._reaper is not None:  # the cluster is shut down: nothing left to watch
            self._reaper.kill()
            self._reaper.wait(10)
            self._reaper = None

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
