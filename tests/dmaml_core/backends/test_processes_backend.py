"""The processes backend with real spawned processes: same numbers as serial, faults end cleanly.

Each test starts its own pool (a fault shuts a pool down); pools are kept to 1-2 processes and
sinusoid so the module stays fast.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
from backend_scenario import Gone, assert_same, config, drive, theta

from dmaml_core.backends import ProcessesBackend, SerialBackend, WorkerError, make_backend
from dmaml_core.backends.host import InjectedFault
from dmaml_core.dmaml import CentralLearner
from dmaml_core.weight_generators import make_weight_generator

pytestmark = pytest.mark.integration


def test_same_numbers_as_serial_with_several_workers_per_process(assert_gone: Gone) -> None:
    cfg = config()
    backend = make_backend("processes", cfg, 3, processes=2)
    assert isinstance(backend, ProcessesBackend)
    with backend:
        assert backend.assignment == [[0, 2], [1]]
        assert backend.threads_per_process >= 1
        assert backend.startup_s > 0
        got = drive(backend, cfg)
        record = backend.run(theta(), 5)
        pids = list(backend.pids)
    assert_gone(pids)
    want = drive(SerialBackend(cfg, 3), cfg)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    assert [r.worker_id for r in record.results] == [0, 1, 2]
    assert all(r.compute_s > 0 and r.cpu_s >= 0 for r in record.results)
    assert record.dispatch_s > 0 and record.collect_s >= 0
    assert record.info["processes"] == 2 and record.info["threads_per_process"] >= 1
    assert record.info["p0_peak_rss_mb"] > 50 and record.info["p1_cpu_s"] >= 0


def test_sixty_four_workers_on_two_processes_and_nan_flows_through(assert_gone: Gone) -> None:
    cfg = config(epochs=1)
    with ProcessesBackend(cfg, 64, processes=2) as backend:
        assert [len(ids) for ids in backend.assignment] == [32, 32]
        runs = [backend.run(theta(), i) for i in range(2)]
        # NaN weights are data, not a fault: every worker returns NaN, the pool stays up and the
        # ``plain`` generator reports the merge as diverged (keeping the old weights).
        poisoned = [np.full_like(w, np.nan) for w in theta()]
        learner = CentralLearner(poisoned, backend, make_weight_generator("plain"))
        record = learner.run()
        pids = list(backend.pids)
    assert_gone(pids)
    assert record.diverged and not np.isfinite(record.loss_sums).any()
    assert record.loss_sums.shape == (64, 1)
    serial = SerialBackend(cfg, 64)
    want = [serial.run(theta(), i) for i in range(2)]
    assert [r.worker_id for r in runs[1].results] == list(range(64))
    for got, expected in zip(runs[1].results, want[1].results, strict=True):
        assert_same(got.weights, expected.weights)
    assert runs[1].info["p0_peak_rss_mb"] < 4096


def test_a_worker_that_raises_names_itself_and_the_run(assert_gone: Gone) -> None:
    fault = InjectedFault("raise", worker_id=1, run_index=1)
    backend = ProcessesBackend(config(), 2, processes=1, _fault=fault)
    pids = list(backend.pids)
    learner = CentralLearner(theta(), backend, make_weight_generator("plain"))
    kept = learner.run()
    after_first = learner.theta
    with pytest.raises(WorkerError, match=r"run 1: worker 1 in process 0 \(pid \d+") as err:
        learner.run()
    assert "injected fault in worker 1, run 1" in str(err.value)  # the child's traceback
    assert_gone(pids)
    # The completed run is kept; the learner did not move; the pool refuses further work.
    assert kept.run_index == 0 and learner.runs_done == 1 and learner.theta is after_first
    with pytest.raises(WorkerError, match="shut down after a failure: run 1"):
        backend.run(theta(), 2)
    backend.close()  # idempotent


def test_a_worker_killed_mid_run_is_reported(assert_gone: Gone) -> None:
    # Worker 1 SIGKILLs its own process while process 0 is still busy with the same run.
    fault = InjectedFault("kill", worker_id=1, run_index=0)
    with ProcessesBackend(config(), 2, processes=2, _fault=fault) as backend:
        pids = list(backend.pids)
        with pytest.raises(WorkerError, match=r"run 0: process 1 .*logical worker 1\) died") as err:
            backend.run(theta(), 0)
    assert f"exit code {-signal.SIGKILL}" in str(err.value)
    assert_gone(pids)


def test_a_hung_worker_times_out(assert_gone: Gone) -> None:
    # The hang comes before any tracing, so a short limit cannot catch an honest warm-up instead.
    fault = InjectedFault("hang", worker_id=0, run_index=0)
    with ProcessesBackend(config(), 2, processes=1, timeout_s=1.0, _fault=fault) as backend:
        pids = list(backend.pids)
        with pytest.raises(
            WorkerError, match=r"run 0: process 0 \(pid \d+, logical workers 0, 1\) did not answer"
        ):
            backend.run(theta(), 0)
    assert_gone(pids)
