"""The pieces every multi-process backend shares (``backends.host``), run in this process."""

from __future__ import annotations

import pytest

from dmaml_core.backends import SerialBackend
from dmaml_core.backends.host import (
    HostFailure,
    HostReport,
    InjectedFault,
    WorkerHost,
    describe_host,
    failure_message,
    merged_results,
    task_counts,
)
from dmaml_core.maml import MamlConfig
from dmaml_core.tasks import make_domain
from dmaml_core.worker import WorkerConfig

CONFIG = WorkerConfig(make_domain("sinusoid"), MamlConfig(), tasks_per_step=3, seed=1)
# threads=0 keeps TensorFlow's default pools: pinning here would slow the rest of the session.


def test_task_counts_need_one_count_per_worker() -> None:
    assert task_counts([3, 4], 2) == {0: 3, 1: 4}
    with pytest.raises(ValueError, match=r"need one task count per worker \(3\), got 2"):
        task_counts([3, 4], 3)
    with pytest.raises(ValueError, match="need one task count per worker"):
        SerialBackend(CONFIG, 3).gradients(CONFIG.domain.model().init(0), [3, 4], 0)


def test_hosts_are_named_with_pid_and_workers() -> None:
    assert describe_host("process", 1, 123, [1, 3]) == "process 1 (pid 123, logical workers 1, 3)"
    assert describe_host("actor", 0, 9, [0]) == "actor 0 (pid 9, logical worker 0)"
    failed = HostFailure(2, "Traceback ...")
    assert failure_message(failed, "actor 0") == "worker 2 in actor 0 raised:\nTraceback ..."
    assert failure_message(HostFailure(-1, "x"), "process 1") == "process 1 raised:\nx"


def test_a_host_runs_its_workers_in_id_order_and_reports_a_raise() -> None:
    theta = CONFIG.domain.model().init(0)
    host = WorkerHost(CONFIG, [1, 3], threads=0)
    report = host.run(theta, 0)
    assert isinstance(report, HostReport)
    assert [r.worker_id for r in report.results] == [1, 3]
    assert report.busy_s >= 0 and report.pid > 0
    gradients = host.gradients(theta, {1: 2, 3: 4}, 1)
    assert isinstance(gradients, HostReport)
    other = WorkerHost(CONFIG, [0, 2], threads=0).run(theta, 0)
    assert isinstance(other, HostReport)
    assert [r.worker_id for r in merged_results([report, other])] == [0, 1, 2, 3]

    faulty = WorkerHost(CONFIG, [0, 2], threads=0, fault=InjectedFault("raise", 2, 5))
    assert isinstance(faulty.run(theta, 4), HostReport)  # the fault is for run 5 only
    failure = faulty.run(theta, 5)
    assert isinstance(failure, HostFailure)
    assert failure.worker_id == 2 and "injected fault in worker 2, run 5" in failure.detail
