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
- **Actors**: P = min(W, ``actors`` or the cluster's CPUs); each reserves one CPU (a share of
  one when P exceeds the CPUs) through one bundle of a placement group with Ray's SPREAD strategy,
  so the actors of a multi-node cluster spread over its nodes, and pins TensorFlow to
  ``threads_per_process`` threads (default ``max(1, CPUs // P)``). ``worker_nodes`` names the
  node each logical worker runs on, ``cluster_layout()`` the cluster's nodes.
- **Transport**: theta goes into the object store once per run (``ray.put``); every actor gets
  the same reference and Ray resolves it to numpy arrays in the actor's process.
- **Faults**: a worker that raises and a run that outlives ``timeout_s`` kill every actor of
  this backend and raise ``WorkerError`` naming the run, actor and logical workers. So does an
  actor that dies when ``max_restarts`` is 0 (the default). With ``max_restarts`` > 0 an actor
  whose process or node is lost raises ``WorkerLost`` instead and the backend stays usable:
  ``WorkerLost.recover()`` waits for Ray to restart the actor (``max_restarts``; its placement
  group bundle moves to a surviving node if its node died) or, when the surviving nodes lack the
  CPUs for every bundle, replaces all actors by as many as they have (same threads per actor, so
  the numbers do not change). The restarted workers start from scratch: the caller restores every
  worker's state (``set_state``) from a checkpoint. ``max_task_retries`` is 0, so Ray never
  re-runs a lost run behind the caller's back (the workers' state would silently advance twice).

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
import math
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
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dmaml_core.backends.base import BackendConnectionError, BackendRun, WorkerError, WorkerLost
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
RECOVERY_DEATHS = 3  # an actor that dies this often more while being recovered is given up
# Ray documents these for clusters started with RAY_AUTH_MODE=token (ray.exceptions.
# AuthenticationError): the token itself, or a file holding it (default ~/.ray/auth_token).
# A driver (or `ray start --address`) with RAY_AUTH_MODE unset does not send the token even when
# ~/.ray/auth_token holds the right one (Ray 2.60, seen here): both settings are named.
_AUTH_HINT = (
    "it uses token authentication and no valid token was given: set RAY_AUTH_TOKEN (or "
    "RAY_AUTH_TOKEN_PATH, or put the token in ~/.ray/auth_token) to the cluster's token, and "
    "RAY_AUTH_MODE=token"
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
        # Ray re-runs this constructor when it restarts the actor: a test's injected fault fires
        # in the first incarnation only, or the restarted actor would die at the same run again
        if ray.get_runtime_context().was_current_actor_reconstructed:
            fault = None
        self.host = WorkerHost(config, worker_ids, threads, fault)

    def ready(self) -> tuple[int, int, str, str]:
        """(pid, threads in force, node id, node address)."""
        pid, threads = self.host.ready()
        return pid, threads, ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

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
        max_restarts: int = 0,
        _fault: InjectedFault | None = None,
    ) -> None:
        """``timeout_s``: the per-run limit; None scales it from the measured runs
        (``RunTimeout``). ``connect_timeout_s`` bounds joining an existing cluster (``connect``;
        Ray's output goes to ``log_path``). ``allow_large`` lifts the bounds of ``check_scale``.
        ``max_restarts``: how often Ray may restart each actor after its process or node is lost
        (0: a lost actor ends the backend, as any other fault; see the module docs)."""
        check_backend_options(n_workers, "actors", actors, threads_per_process, timeout_s)
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        check_scale(n_workers, "actors", None, None, 1, allow_large)  # W, before any connection
        start = time.perf_counter()
        self.n_workers = n_workers
        self.limits = RunTimeout(timeout_s)
        self.timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s  # non-run requests
        self._failure: str | None = None
        self._actors: list[Any] = []
        self._pg: PlacementGroup | None = None
        self._config, self._fault, self._requested = config, _fault, actors
        self.max_restarts = max_restarts
        self.start_timeout_s = start_timeout_s
        self.pids: list[int] = []
        self.node_ids: list[str] = []  # the node of each actor
        self.worker_nodes: list[str] = []  # "address/node-id-prefix" of each logical worker
        self.same_node = True
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
        self._start_actors(self.processes, cpus, start, start_timeout_s)
        self.startup_s = time.perf_counter() - start

    def _start_actors(self, processes: int, cpus: float, start: float, timeout_s: float) -> None:
        """Reserve one bundle per actor (SPREAD: over as many nodes as possible), start the actors
        in them and wait until each has built its workers, within ``timeout_s`` of ``start``."""
        self.processes = processes
        self.assignment = assign_workers(self.n_workers, processes)
        # Ray takes resource amounts to 4 decimals; a share of a CPU when P exceeds the CPUs
        self._cpus_per_actor = min(1.0, math.floor(cpus / processes * 1e4) / 1e4)
        self._pg = placement_group([{"CPU": self._cpus_per_actor}] * processes, strategy="SPREAD")
        remaining = max(0.0, start + timeout_s - time.perf_counter())
        placed, _ = ray.wait([self._pg.ready()], timeout=remaining)
        if not placed:
            self._fail(
                f"start-up: the cluster could not place {processes} actors with "
                f"{self._cpus_per_actor:g} CPU each within {timeout_s:g} s (it has "
                f"{self._alive_cpus():g} CPUs on its live nodes)"
            )
        self._actors = [
            RayHost.options(  # type: ignore[attr-defined]
                num_cpus=self._cpus_per_actor,
                max_restarts=self.max_restarts,
                max_task_retries=0,  # a lost run is re-done by the caller from a checkpoint
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self._pg, placement_group_bundle_index=h
                ),
            ).remote(self._config, ids, self.threads_per_process, self._fault)
            for h, ids in enumerate(self.assignment)
        ]
        self.pids, self.node_ids = [-1] * processes, [""] * processes
        calls = [actor.ready.remote() for actor in self._actors]
        self._placed(self._gather(calls, "start-up", start, timeout_s, "the start-up limit"))

    def _placed(self, replies: list[tuple[int, int, str, str]]) -> None:
        """Note where every actor runs (after start-up and after a recovery)."""
        self.pids = [pid for pid, _, _, _ in replies]
        self.threads_per_process = replies[0][1]
        self.node_ids = [node for _, _, node, _ in replies]
        labels = [f"{address}/{node[:8]}" for _, _, node, address in replies]
        self.worker_nodes = [""] * self.n_workers
        for h, ids in enumerate(self.assignment):
            for i in ids:
                self.worker_nodes[i] = labels[h]
        driver_node = ray.get_runtime_context().get_node_id()
        self.same_node = all(node == driver_node for node in self.node_ids)

    @staticmethod
    def _alive_cpus() -> float:
        return float(sum(n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]))

    def cluster_layout(self) -> list[dict[str, Any]]:
        """The cluster's live nodes (id, address, CPUs, GPUs, head or not) and which of this
        backend's actors each hosts: what a record needs to say where the runs ran."""
        return [
            {
                "node": n["NodeID"],
                "address": n["NodeManagerAddress"],
                "hostname": n.get("NodeManagerHostname", ""),
                "cpus": n["Resources"].get("CPU", 0.0),
                "gpus": n["Resources"].get("GPU", 0.0),
                "head": "node:__internal_head__" in n["Resources"],
                "actors": [h for h, node in enumerate(self.node_ids) if node == n["NodeID"]],
            }
            for n in ray.nodes()
            if n["Alive"]
        ]

    def recover(self) -> dict[str, Any]:
        """After a ``WorkerLost``: bring every actor back, live and placed, and return what was
        done. Ray restarts a lost actor by itself (``max_restarts``), on its node or, if the node
        died, wherever its bundle is re-placed; this waits for that. If the live nodes no longer
        have the CPUs for every bundle, Ray would wait forever, so all actors are replaced by
        min(W, ``actors`` or the live CPUs) new ones with the same threads each. Either way the
        workers hold a fresh state: the caller restores it. The next call of each kind traces
        again in the new processes, so it gets the warm-up limit."""
        self._check_open()
        start = time.perf_counter()
        self.limits = RunTimeout(self.limits.fixed_s)
        deadline = start + self.start_timeout_s
        before = dict(zip(self.node_ids, self._labels(), strict=True))
        replies: dict[int, tuple[int, int, str, str]] = {}
        pending = {actor.ready.remote(): h for h, actor in enumerate(self._actors)}
        died: dict[int, int] = {}  # ActorDiedError replies per actor during this recovery
        while pending:
            cpus = self._alive_cpus()
            if cpus + 1e-9 < self._cpus_per_actor * self.processes:
                return {**self._rebuild(cpus, start), "lost_nodes": self._lost_nodes(before)}
            if time.perf_counter() > deadline:
                waiting = ", ".join(self._describe(h) for h in pending.values())
                self._fail(
                    f"recovery: {waiting} did not come back within {self.start_timeout_s:g} s"
                )
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
            for ref in done:
                h = pending.pop(ref)
                try:
                    replies[h] = ray.get(ref)
                except RayActorError as err:
                    # Unavailable: still restarting (Ray's own word for "temporary"); died: it
                    # may have died again while restarting, so ask a few times, not forever
                    died[h] = died.get(h, 0) + isinstance(err, ray.exceptions.ActorDiedError)
                    if died[h] > RECOVERY_DEATHS:
                        self._fail(f"recovery: {self._describe(h)} is gone ({_one_line(err)})")
                    pending[self._actors[h].ready.remote()] = h
                    time.sleep(0.5)
        old = list(self.node_ids)
        self._placed([replies[h] for h in range(self.processes)])
        moved = [h for h in range(self.processes) if self.node_ids[h] != old[h]]
        return {
            "action": "restarted",
            "actors": self.processes,
            "moved_actors": moved,
            "lost_nodes": self._lost_nodes(before),
            "recovery_s": time.perf_counter() - start,
        }

    def _labels(self) -> list[str]:
        """Each actor's node as ``worker_nodes`` names it."""
        return [self.worker_nodes[ids[0]] for ids in self.assignment] if self.worker_nodes else []

    @staticmethod
    def _lost_nodes(labels: dict[str, str]) -> list[str]:
        """Which of the nodes (id -> label) this backend used are no longer alive: a killed raylet
        is declared dead only once its health checks fail (~15 s here), so a failure record's
        ``node_alive`` may still say True where this, after the recovery, names the node."""
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        return sorted(label for node, label in labels.items() if node not in alive)

    def _rebuild(self, cpus: float, start: float) -> dict[str, Any]:
        """Replace every actor by as many as the live CPUs take (see ``recover``)."""
        if cpus <= 0:
            self._fail("recovery: no live node of the cluster has a CPU left for an actor")
        self._kill_actors()
        processes = min(self.n_workers, self._requested or max(1, int(cpus)))
        self._start_actors(processes, cpus, start, self.start_timeout_s)
        return {
            "action": "rebuilt",
            "actors": processes,
            "moved_actors": list(range(processes)),
            "recovery_s": time.perf_counter() - start,
        }

    def run(self, theta: NumpyWeights, run_index: int) -> BackendRun:
        self._check_open()
        start = time.perf_counter()
        ref = ray.put(theta)
        calls = [actor.run.remote(ref, run_index) for actor in self._actors]
        sent = time.perf_counter()
        limit, why = self.limits.limit("run"), self.limits.explain("run")
        reports: list[HostReport] = self._gather(
            calls, f"run {run_index}", start, limit, why, run_index
        )
        received = time.perf_counter()
        self.limits.observe("run", received - start)
        results: list[WorkerResult] = merged_results(reports)
        info = run_info(reports, self.threads_per_process)
        for h, report in enumerate(reports):  # which process ran: a restart shows as a new pid
            info[f"p{h}_pid"] = float(report.pid)
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
        why = self.limits.explain("gradients")
        reports = self._gather(calls, what, start, limit, why, run_index)
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
        self,
        calls: list[Any],
        what: str,
        start: float,
        timeout_s: float,
        why: str = "",
        run_index: int | None = None,
    ) -> list[Any]:
        """Every call's result, in actor order; the first failure ends it, not the slowest
        (``why`` explains the limit in the timeout error). A lost actor raises ``WorkerLost``
        when Ray restarts actors (``max_restarts`` > 0), and ends the backend otherwise."""
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
                if self.max_restarts > 0 and self._actors:
                    self._lost(what, h, err, run_index)
                self._fail(f"{what}: {self._describe(h)} died ({type(err).__name__})")
            except (RayError, GetTimeoutError) as err:
                self._fail(f"{what}: {self._describe(h)} failed:\n{err}")
            if isinstance(reply, HostFailure):
                self._fail(f"{what}: {failure_message(reply, self._describe(h))}")
            replies[h] = reply
        return [replies[h] for h in range(len(calls))]

    def _describe(self, h: int) -> str:
        return describe_host("actor", h, self.pids[h], self.assignment[h])

    def _lost(self, what: str, h: int, err: RayActorError, run_index: int | None) -> NoReturn:
        """Raise ``WorkerLost`` for actor ``h``, naming the node it ran on and whether that node
        is still alive (a dead node means every actor on it is lost, and moves)."""
        node = self.node_ids[h] if h < len(self.node_ids) else ""
        alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
        state = "alive" if alive.get(node) else "lost"
        label = self._labels()[h] if self.worker_nodes else node
        raise WorkerLost(
            f"ray backend, {what}: {self._describe(h)} on node {label} ({state}) died "
            f"({type(err).__name__}: {_one_line(err)})",
            run_index=run_index,
            actor=h,
            pid=self.pids[h],
            node=label,
            node_alive=bool(alive.get(node)),
            recover=self.recover,
        )

    def _check_open(self) -> None:
        if self._failure is not None:
            raise WorkerError(f"ray backend is shut down after a failure: {self._failure}")
        if not self._actors:
            raise WorkerError("ray backend is closed")

    def _fail(self, message: str) -> NoReturn:
        self._failure = message.splitlines()[0]
        self.close()
        raise WorkerError(f"ray backend, {message}")

    def _kill_actors(self) -> None:
        """Kill this backend's actors (Ray does not restart them) and free their bundles."""
        for actor in self._actors:
            with contextlib.suppress(RayError):  # already dead
                ray.kill(actor, no_restart=True)
        self._actors = []
        if self._pg is not None and ray.is_initialized():
            with contextlib.suppress(RayError, ValueError):  # the cluster is gone
                remove_placement_group(self._pg)
        self._pg = None

    def close(self) -> None:
        """Kill this backend's actors (their processes end; Ray does not restart them) and shut
        Ray down only if this backend started or connected it."""
        self._kill_actors()
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


def _one_line(err: BaseException) -> str:
    """The first line of a Ray error, shortened: records and messages stay one line."""
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
