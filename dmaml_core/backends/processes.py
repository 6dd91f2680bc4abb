"""Processes backend: P persistent spawned processes on this machine, each hosting several logical
workers (see ``host``).

- **spawn**, never fork: TensorFlow's runtime (thread pools, allocator) is not fork-safe.
- **Persistent**: processes start once, import TensorFlow and build their workers in the
  constructor; the first run traces the MAML step (the warm-up) and later runs reuse it.
- **Threads**: each process pins TensorFlow's intra-/inter-op pools to ``threads_per_process``
  (default ``max(1, cores // P)``) so that P processes share the cores without oversubscription.
- **Transport**: one duplex pipe per process carrying standard pickles (protocol 5). Theta is
  pickled once per run and the same bytes are written to every process.
- **Faults**: a process that dies, a worker that raises and a run that outlives its limit all
  shut the whole pool down (no process is left behind) and raise ``WorkerError`` naming the run,
  the process and the logical workers it hosted. The limit is ``timeout_s`` if given, otherwise
  scaled from the measured runs (``host.RunTimeout``).
- **Driver death**: the processes ignore Ctrl-C (the driver stops them), leave within a second
  of a driver killed mid-run (``_leave_with_driver``) and never print a traceback for it.

Where the time goes (``BackendRun``): ``dispatch_s`` is the driver's time to pickle theta and write
it to every pipe. Each process stamps ``time.perf_counter()`` (the system-wide monotonic clock, so
comparable with the driver's on the same machine) when it holds the unpickled request and when its
last worker finishes; ``collect_s`` is from the latest such finish to the moment the driver has
unpickled every result. The lag between the end of dispatch and the last process holding theta is
reported as ``info["receive_lag_s"]``, so that no communication time hides inside "compute".
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, NoReturn

import multiprocess
from multiprocess.connection import wait

from dmaml_core.backends.base import BackendRun, WorkerError
from dmaml_core.backends.host import (
    WARMUP_TIMEOUT_S,
    HostFailure,
    HostReport,
    InjectedFault,
    RunTimeout,
    WorkerHost,
    assign_workers,
    available_cores,
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
DEFAULT_START_TIMEOUT_S = 180.0  # spawn + TensorFlow import + building the workers
_STOP_GRACE_S = 5.0
_DRIVER_POLL_S = 0.5  # how often a worker checks that its driver is still alive


def _dumps(message: object) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _host_main(
    conn: Any,
    config: WorkerConfig,
    worker_ids: list[int],
    threads: int,
    fault: InjectedFault | None,
    driver_pid: int | None = None,
) -> None:
    """Entry point of a spawned process: build the host, then serve requests until told to stop
    (or until the driver's end of the pipe closes, so an orphan never lingers).

    The driver owns Ctrl-C (SIGINT is ignored here, see ``_spawning``) and shuts the processes
    down itself; a driver that vanishes mid-run (kill -9) is noticed by ``_leave_with_driver``.
    Either way the process leaves quietly: no traceback for a closed pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _leave_with_driver(driver_pid)
    try:
        host = WorkerHost(config, worker_ids, threads, fault)
        conn.send_bytes(_dumps(("ready", host.ready())))
    except Exception:
        import traceback

        with contextlib.suppress(OSError):  # the driver is gone: nobody to tell
            conn.send_bytes(_dumps(("failed", HostFailure(-1, traceback.format_exc()))))
        return
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "stop":
            return
        reply: Any
        if kind == "get_state":
            reply = host.get_state()
        elif kind == "set_state":
            reply = host.set_state(message[1])
        elif kind == "run":
            _, run_index, theta = message
            reply = host.run(theta, run_index)
        else:  # "gradients"
            _, run_index, theta, tasks = message
            reply = host.gradients(theta, tasks, run_index)
        status = "failed" if isinstance(reply, HostFailure) else "ok"
        try:
            conn.send_bytes(_dumps((status, reply)))
        except OSError:  # BrokenPipeError: the driver closed the pipe or died; leave quietly
            return


def _leave_with_driver(driver_pid: int | None, poll_s: float = _DRIVER_POLL_S) -> None:
    """End this process within ``poll_s`` once the driver that spawned it is gone.

    A worker busy in a long run never reads its pipe, so it would not see the driver's death
    (kill -9) until the run ended. A daemon thread polls the parent pid instead: spawn starts the
    process as a direct child of the driver, so a different ``getppid()`` means the driver died
    and the process was re-parented. (``prctl(PR_SET_PDEATHSIG)`` would be Linux-only and fires
    when the *thread* that spawned us ends, which would kill pools built outside the main thread.)
    """
    if driver_pid is None:
        return

    def watch() -> None:
        while os.getppid() == driver_pid:
            time.sleep(poll_s)
        os._exit(0)  # no cleanup to do: the driver that wanted our results is gone

    threading.Thread(target=watch, name="dmaml-driver-watch", daemon=True).start()


@contextlib.contextmanager
def _spawning() -> Iterator[None]:
    """What children inherit at spawn: SIGINT ignored and ``TF_CPP_MIN_LOG_LEVEL`` set.

    Both must be in place before the child's first line of Python: unpickling its arguments
    imports TensorFlow (whose C++ start-up logs read the variable once) and a Ctrl-C during that
    import would print a ``KeyboardInterrupt`` traceback from every worker. An ignored signal
    stays ignored across exec (Python installs its SIGINT handler only over the default), so the
    workers never see the terminal's Ctrl-C; the driver handles it and stops them. The driver's
    own handler and environment are restored afterwards (a Ctrl-C that arrives in the
    milliseconds of a spawn is lost)."""
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
        if quiet:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


def _stop(processes: list[Any], conns: list[Any], grace_s: float = _STOP_GRACE_S) -> None:
    """Ask politely (for ``grace_s``), then terminate, then kill; joins everything so no zombie
    or orphan is left. A module function so that ``weakref.finalize`` can call it at exit."""
    for conn in conns:
        with contextlib.suppress(OSError, ValueError):  # already closed or broken: it's gone
            conn.send_bytes(_dumps(("stop",)))
    deadline = time.monotonic() + grace_s
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
            proc.join(1.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
    for conn in conns:
        conn.close()


class ProcessesBackend:
    name = "processes"

    def __init__(
        self,
        config: WorkerConfig,
        n_workers: int,
        processes: int | None = None,
        threads_per_process: int | None = None,
        timeout_s: float | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        allow_large: bool = False,
        _fault: InjectedFault | None = None,
    ) -> None:
        """``timeout_s``: the per-run limit; None scales it from the measured runs
        (``RunTimeout``). ``allow_large`` lifts the size bounds of ``check_scale``."""
        check_backend_options(n_workers, "processes", processes, threads_per_process, timeout_s)
        cores = available_cores()
        check_scale(n_workers, "processes", processes, threads_per_process, cores, allow_large)
        self.n_workers = n_workers
        self.processes = min(n_workers, processes or cores)
        self.threads_per_process = threads_per_process or max(1, cores // self.processes)
        self.limits = RunTimeout(timeout_s)
        self.timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s  # non-run requests
        self.assignment = assign_workers(n_workers, self.processes)
        self.pids: list[int] = []
        self._failure: str | None = None

        start = time.perf_counter()
        ctx = multiprocess.get_context("spawn")
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        # Registered before the first start so that even a failing constructor cleans up.
        self._finalizer = weakref.finalize(self, _stop, self._procs, self._conns)
        for h, ids in enumerate(self.assignment):
            ours, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_host_main,
                args=(theirs, config, ids, self.threads_per_process, _fault, os.getpid()),
                name=f"dmaml-host-{h}",
                daemon=True,  # dies with the driver even if close() is never reached
            )
            with _spawning():
                proc.start()
            theirs.close()  # only the child holds it now, so its death reads as EOF here
            self._procs.append(proc)
            self._conns.append(ours)
        replies = self._gather("start-up", start, start_timeout_s, "the start-up limit")
        self.pids = [pid for pid, _ in replies]
        # What the processes actually pinned (the same everywhere: they are fresh processes).
        self.threads_per_process = replies[0][1]
        self.startup_s = time.perf_counter() - start

    # -- one round trip ---------------------------------------------------------------------

    def run(self, theta: NumpyWeights, run_index: int) -> BackendRun:
        reports, dispatch_s, sent, received = self._round_trip(
            ("run", run_index, theta), f"run {run_index}", "run"
        )
        results: list[WorkerResult] = merged_results(reports)
        info = run_info(reports, self.threads_per_process)
        info["receive_lag_s"] = max(0.0, max(r.received for r in reports) - sent)
        return BackendRun(
            results,
            dispatch_s=dispatch_s,
            collect_s=max(0.0, received - max(r.done for r in reports)),
            info=info,
        )

    def gradients(
        self, theta: NumpyWeights, tasks_per_worker: list[int], run_index: int
    ) -> list[GradientResult]:
        tasks = task_counts(tasks_per_worker, self.n_workers)
        reports, *_ = self._round_trip(
            ("gradients", run_index, theta, tasks), f"task-parallel run {run_index}", "gradients"
        )
        return merged_results(reports)

    def get_state(self) -> list[dict[str, Any]]:
        """Pull every logical worker's state back from the processes (for a checkpoint)."""
        replies: list[Any] = self._round_trip(("get_state",), "get state")[0]
        return sorted((s for host in replies for s in host), key=lambda s: int(s["worker_id"]))

    def set_state(self, states: list[dict[str, Any]]) -> None:
        """Send every logical worker's state to the processes; each restores the ones it hosts."""
        if len(states) != self.n_workers:
            raise ValueError(f"{len(states)} worker states for {self.n_workers} workers")
        self._round_trip(("set_state", states), "set state")

    def _round_trip(
        self, message: tuple[Any, ...], what: str, kind: str | None = None
    ) -> tuple[list[HostReport], float, float, float]:
        """Send one request to every process and wait for every report: within the limit
        ``self.limits`` sets for ``kind`` ("run", "gradients"; timed, so later limits scale),
        or within ``self.timeout_s`` for other requests.
        Returns (reports, dispatch_s, time sending ended, time the last report was in)."""
        if self._failure is not None:
            raise WorkerError(f"processes backend is shut down after a failure: {self._failure}")
        if not self._procs:
            raise WorkerError("processes backend is closed")
        start = time.perf_counter()
        payload = _dumps(message)
        for h, conn in enumerate(self._conns):
            try:
                conn.send_bytes(payload)
            except OSError:
                self._fail(f"{what}: {self._describe(h)} is gone ({self._exit(h)})")
        sent = time.perf_counter()
        if kind is None:
            limit, why = self.timeout_s, "the limit for requests that are not runs"
        else:
            limit, why = self.limits.limit(kind), self.limits.explain(kind)
        reports: list[HostReport] = self._gather(what, start, limit, why)
        received = time.perf_counter()
        if kind is not None:
            self.limits.observe(kind, received - start)
        return reports, sent - start, sent, received

    def _gather(self, what: str, start: float, timeout_s: float, why: str = "") -> list[Any]:
        """One reply per process, in process order, within ``timeout_s`` of ``start``; any death,
        failure or timeout is fatal (``why`` explains the limit in the timeout error)."""
        deadline = start + timeout_s
        replies: dict[int, Any] = {}
        by_conn = {id(conn): h for h, conn in enumerate(self._conns)}
        by_sentinel = {proc.sentinel: h for h, proc in enumerate(self._procs)}
        while len(replies) < len(self._procs):
            pending = [h for h in range(len(self._procs)) if h not in replies]
            waitables = [self._conns[h] for h in pending] + [
                self._procs[h].sentinel for h in pending
            ]
            remaining = deadline - time.perf_counter()
            ready = wait(waitables, timeout=max(0.0, remaining)) if remaining > 0 else []
            if not ready:
                hung = ", ".join(self._describe(h) for h in pending)
                why = f" ({why})" if why else ""
                self._fail(f"{what}: {hung} did not answer within {timeout_s:g} s{why}")
            woken = {by_conn[id(o)] for o in ready if id(o) in by_conn}
            woken |= {by_sentinel[o] for o in ready if o in by_sentinel}
            for h in sorted(woken):
                # Read the pipe first: a process that replied and then died still delivers.
                # A dead process's pipe polls readable too (EOF), so only a read tells them apart.
                try:
                    status, reply = pickle.loads(self._conns[h].recv_bytes())
                except (EOFError, OSError):
                    self._procs[h].join(1.0)
                    self._fail(f"{what}: {self._describe(h)} died ({self._exit(h)})")
                if status == "failed":
                    self._fail(f"{what}: {failure_message(reply, self._describe(h))}")
                replies[h] = reply
        return [replies[h] for h in range(len(self._procs))]

    # -- failure and shutdown -----------------------------------------------------------------

    def _describe(self, h: int) -> str:
        return describe_host("process", h, self._procs[h].pid, self.assignment[h])

    def _exit(self, h: int) -> str:
        code = self._procs[h].exitcode
        return "still running" if code is None else f"exit code {code}"

    def _fail(self, message: str) -> NoReturn:
        """Shut the pool down and raise: after a fault the workers' states no longer agree."""
        self._failure = message.splitlines()[0]
        # No grace: the survivors may be mid-run (or hung), and their results are worthless now.
        if self._finalizer.detach() is not None:
            _stop(self._procs, self._conns, grace_s=0.0)
        self.close()
        raise WorkerError(f"processes backend, {message}")

    def close(self) -> None:
        self._finalizer()  # runs _stop once; later calls are no-ops
        self._procs.clear()
        self._conns.clear()

    def __enter__(self) -> ProcessesBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
