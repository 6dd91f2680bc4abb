"""What runs inside one worker process (a spawned process or a Ray actor): a *host* serving several
logical workers in turn.

W (the algorithm's number of workers) may far exceed the cores, so a backend starts P <= cores
processes and each hosts the logical workers ``worker_ids`` with their own ``Worker`` object
(optimizer state and task stream persist across runs, exactly as in the serial backend). The
compiled MAML functions are shared by the workers of a process, so tracing is paid once per
process, in the first run (the warm-up).

Both parallel backends use this class so that they measure and fail the same way; only the
transport (pipes or the Ray object store) differs.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the real imports happen in the host process, after the threads are pinned
    from dmaml_core.models import NumpyWeights
    from dmaml_core.worker import GradientResult, Worker, WorkerConfig, WorkerResult

FaultKind = Literal["raise", "kill", "hang"]


@dataclass(frozen=True)
class InjectedFault:
    """Test-only hook: make logical worker ``worker_id`` fail when it starts run ``run_index``.

    ``raise``: the worker raises; ``kill``: its process SIGKILLs itself (a real, abrupt death);
    ``hang``: it sleeps forever, so the backend's timeout has to catch it. Backends accept it as the
    private ``_fault`` constructor argument; nothing else uses it.
    """

    kind: FaultKind
    worker_id: int
    run_index: int

    def trigger(self, worker_id: int, run_index: int) -> None:
        if (worker_id, run_index) != (self.worker_id, self.run_index):
            return
        if self.kind == "raise":
            raise RuntimeError(f"injected fault in worker {worker_id}, run {run_index}")
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "hang":
            while True:
                time.sleep(3600)


@dataclass
class HostReport:
    """One host's answer to a run: its workers' results and what the host itself measured.

    ``received`` and ``done`` are ``time.perf_counter()`` stamps taken in the host: when it had the
    request (theta deserialised) in hand and when its last worker finished. ``perf_counter`` is
    the system-wide monotonic clock on Linux, macOS and Windows, so hosts on the driver's machine
    can be compared with the driver's stamps; ``busy_s = done - received`` is usable anywhere.
    """

    results: list[WorkerResult] | list[GradientResult]
    received: float
    done: float
    cpu_s: float  # CPU time of the whole host process during this request
    peak_rss_mb: float  # peak resident set size of the host process so far
    pid: int

    @property
    def busy_s(self) -> float:
        return self.done - self.received


def peak_rss_mb() -> float:
    """Peak RSS of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def pin_threads(threads: int) -> int:
    """Pin TensorFlow's intra- and inter-op pools so that P hosts share the cores without
    oversubscription. Must run before TensorFlow executes its first op; returns the setting that
    is actually in force (a host process reused after TF started keeps its old pools)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the TF runtime was already initialised in this process
        pass
    return int(tf.config.threading.get_intra_op_parallelism_threads())


@dataclass(frozen=True)
class HostFailure:
    """A hosted worker raised: returned (not raised) so that every transport reports it alike and
    the traceback from the host process reaches the driver as text."""

    worker_id: int
    detail: str


@dataclass
class WorkerHost:
    """Hosts the logical workers ``worker_ids`` of one process; requests run them in id order."""

    config: WorkerConfig
    worker_ids: list[int]
    threads: int
    fault: InjectedFault | None = None
    workers: list[Worker] = field(init=False)

    def __post_init__(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.threads = pin_threads(self.threads)
        from dmaml_core.worker import Worker

        self.workers = [Worker(self.config, i) for i in self.worker_ids]

    def ready(self) -> tuple[int, int]:
        """(pid, threads in force): the backend waits for this so start-up errors surface early."""
        return os.getpid(), self.threads

    def run(self, theta: NumpyWeights, run_index: int) -> HostReport | HostFailure:
        return self._each_worker(run_index, lambda worker: worker.run(theta))

    def gradients(
        self, theta: NumpyWeights, tasks: dict[int, int], run_index: int
    ) -> HostReport | HostFailure:
        """Task-parallel mode: ``tasks[worker_id]`` tasks for each hosted worker."""
        return self._each_worker(
            run_index, lambda worker: worker.gradients(theta, tasks[worker.worker_id])
        )

    def get_state(self) -> list[dict[str, Any]] | HostFailure:
        """The hosted workers' states (see ``Worker.get_state``), in id order."""
        try:
            return [worker.get_state() for worker in self.workers]
        except Exception:
            return HostFailure(-1, traceback.format_exc())

    def set_state(self, states: list[dict[str, Any]]) -> int | HostFailure:
        """Restore each hosted worker from ``states`` (every logical worker's state: each host
        picks its own by ``worker_id``); returns how many it restored."""
        by_id = {state["worker_id"]: state for state in states}
        for worker in self.workers:
            try:
                worker.set_state(by_id[worker.worker_id])
            except Exception:
                return HostFailure(worker.worker_id, traceback.format_exc())
        return len(self.workers)

    def _each_worker(
        self, run_index: int, call: Callable[[Worker], WorkerResult | GradientResult]
    ) -> HostReport | HostFailure:
        """``call`` each hosted worker in id order; the first that raises ends the request."""
        received, cpu_start = time.perf_counter(), time.process_time()
        results: list[Any] = []
        for worker in self.workers:
            try:
                if self.fault is not None:
                    self.fault.trigger(worker.worker_id, run_index)
                results.append(call(worker))
            except Exception:
                return HostFailure(worker.worker_id, traceback.format_exc())
        return HostReport(
            results,
            received,
            time.perf_counter(),
            time.process_time() - cpu_start,
            peak_rss_mb(),
            os.getpid(),
        )


def assign_workers(n_workers: int, n_hosts: int) -> list[list[int]]:
    """Round-robin: worker i lives in host i % P. Deterministic, and keeps hosts within one worker
    of each other, so the busiest host (which sets the wall time) has ceil(W / P) workers."""
    return [list(range(h, n_workers, n_hosts)) for h in range(n_hosts)]


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def run_info(reports: list[HostReport], threads: int) -> dict[str, float]:
    """Per-host numbers for ``BackendRun.info`` (floats only: the harness records them as is)."""
    info = {"processes": float(len(reports)), "threads_per_process": float(threads)}
    for h, report in enumerate(reports):
        info[f"p{h}_peak_rss_mb"] = report.peak_rss_mb
        info[f"p{h}_cpu_s"] = report.cpu_s
        info[f"p{h}_busy_s"] = report.busy_s
    return info


def check_backend_options(
    n_workers: int,
    slots_name: str,
    slots: int | None,
    threads: int | None,
    timeout_s: float | None,
) -> None:
    """The argument checks every multi-process backend shares, with the same clear messages.
    ``timeout_s`` None means "scaled from the measured runs" (``RunTimeout``)."""
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1, got {n_workers}")
    if slots is not None and slots < 1:
        raise ValueError(f"{slots_name} must be >= 1, got {slots}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads_per_process must be >= 1, got {threads}")
    if timeout_s is not None and not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be > 0 and finite (seconds), got {timeout_s}")


MAX_WORKERS = 4096  # logical workers per backend without ``allow_large``
MAX_PER_CORE = 4  # processes / actors, and threads per process, per core without ``allow_large``
_LIFT = (
    "set DMAML_BENCH_NO_LIMITS=1 (harness) or pass allow_large=True to the backend to lift this "
    "bound"
)


def check_scale(
    n_workers: int,
    slots_name: str,
    slots: int | None,
    threads: int | None,
    cores: int,
    allow_large: bool = False,
) -> None:
    """Refuse sizes that would build for minutes or oversubscribe the machine to a standstill
    (``workers = 1e6``, ``threads = 100000``) before anything starts, instead of hanging silently.

    Bounds: W <= ``MAX_WORKERS``; processes/actors and threads per process <= ``MAX_PER_CORE`` x
    ``cores`` (the machine's cores, or a Ray cluster's CPUs). ``allow_large`` lifts them all.
    """
    if allow_large:
        return
    if n_workers > MAX_WORKERS:
        raise ValueError(
            f"workers = {n_workers} is more than the {MAX_WORKERS} logical workers a backend "
            f"builds by default; {_LIFT}"
        )
    limit = MAX_PER_CORE * max(1, cores)
    for name, value in ((slots_name, slots), ("threads_per_process", threads)):
        if value is not None and value > limit:
            raise ValueError(
                f"{name} = {value} is more than {MAX_PER_CORE} x the {cores} cores available "
                f"({limit}); {_LIFT}"
            )


WARMUP_TIMEOUT_S = 600.0  # the first call of each kind: it traces the MAML step (98 s seen here)
TIMEOUT_FLOOR_S = 60.0  # later calls: never less than this, whatever the runs measured
TIMEOUT_FACTOR = 10.0  # later calls: this many times the slowest call of that kind so far
_RAISE = "raise it with the suite field `worker_timeout_s` or the flag `--worker-timeout`"


@dataclass
class RunTimeout:
    """How long one request to the workers may take before they count as hung.

    A fixed 600 s catches a hung worker only after ten minutes, and may be too short for a huge
    warm-up. So, unless the user fixes the limit (``fixed_s``, from ``worker_timeout_s`` /
    ``--worker-timeout``), it follows what was measured, per kind of request ("run",
    "gradients"), because each kind is traced on its own first call:

    - the first call of a kind (the warm-up, which traces) gets ``warmup_s`` (600 s);
    - later calls get ``max(floor_s, factor x the slowest later call so far)`` (60 s, 10x); until
      a later call has been measured, the warm-up's own duration stands in for it (an upper bound:
      the warm-up is a run plus tracing), so only the second call can get a looser limit.
    """

    fixed_s: float | None = None
    warmup_s: float = WARMUP_TIMEOUT_S
    floor_s: float = TIMEOUT_FLOOR_S
    factor: float = TIMEOUT_FACTOR
    warmups: dict[str, float] = field(default_factory=dict)
    slowest: dict[str, float] = field(default_factory=dict)

    def limit(self, kind: str) -> float:
        if self.fixed_s is not None:
            return self.fixed_s
        measured = self.slowest.get(kind, self.warmups.get(kind))
        return self.warmup_s if measured is None else max(self.floor_s, self.factor * measured)

    def observe(self, kind: str, seconds: float) -> None:
        """Record a completed call of ``kind`` that took ``seconds`` (dispatch to last result)."""
        if kind not in self.warmups:
            self.warmups[kind] = seconds
        else:
            self.slowest[kind] = max(self.slowest.get(kind, 0.0), seconds)

    def explain(self, kind: str) -> str:
        """Why the limit is what it is, and how to change it (for the timeout error)."""
        if self.fixed_s is not None:
            why = "the limit set for this case"
        elif kind not in self.warmups:
            why = "the limit for the first, tracing call"
        else:
            measured = self.slowest.get(kind, self.warmups[kind])
            why = (
                f"max({self.floor_s:g} s, {self.factor:g} x the slowest {kind} call so far, "
                f"{measured:.3g} s)"
            )
        return f"{why}; {_RAISE}"


def task_counts(tasks_per_worker: list[int], n_workers: int) -> dict[int, int]:
    """``{worker_id: tasks}`` for a task-parallel run, checking there is one count per worker."""
    if len(tasks_per_worker) != n_workers:
        raise ValueError(
            f"need one task count per worker ({n_workers}), got {len(tasks_per_worker)}"
        )
    return dict(enumerate(tasks_per_worker))


def merged_results(reports: list[HostReport]) -> list[Any]:
    """Every host's worker results (run or gradient results) in logical-worker order."""
    return sorted((r for report in reports for r in report.results), key=lambda r: r.worker_id)


def describe_host(kind: str, index: int, pid: int | None, worker_ids: list[int]) -> str:
    """How errors name a host: ``process 1 (pid 123, logical workers 1, 3)``."""
    noun = "logical worker" if len(worker_ids) == 1 else "logical workers"
    return f"{kind} {index} (pid {pid}, {noun} {', '.join(map(str, worker_ids))})"


def failure_message(failure: HostFailure, host: str) -> str:
    """The error text for a hosted worker that raised, with its traceback from the host."""
    who = f"worker {failure.worker_id} in " if failure.worker_id >= 0 else ""
    return f"{who}{host} raised:\n{failure.detail}"
