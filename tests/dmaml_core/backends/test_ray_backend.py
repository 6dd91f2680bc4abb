"""The Ray backend on a real local cluster (2 CPUs, shared by the module, shut down at the end):
same numbers as serial, faults end cleanly, and the backend leaves a cluster it did not start up.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")

from backend_scenario import Gone, assert_same, config, drive, theta  # noqa: E402

from dmaml_core.backends import SerialBackend, WorkerError, make_backend  # noqa: E402
from dmaml_core.backends.host import InjectedFault  # noqa: E402
from dmaml_core.backends.ray_backend import RayBackend  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_same_numbers_as_serial_and_the_cluster_is_left_alone(assert_gone: Gone) -> None:
    cfg = config()
    backend = make_backend("ray", cfg, 3)
    assert isinstance(backend, RayBackend)
    with backend:
        assert not backend.owns_ray  # the fixture's cluster: not ours to shut down
        assert backend.processes == 2 and backend.assignment == [[0, 2], [1]]
        assert backend.same_node and backend.threads_per_process == 1
        got = drive(backend, cfg)
        record = backend.run(theta(), 5)
        pids = list(backend.pids)
    assert ray.is_initialized()
    assert_gone(pids)
    want = drive(SerialBackend(cfg, 3), cfg)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    assert [r.worker_id for r in record.results] == [0, 1, 2]
    assert record.dispatch_s > 0 and record.collect_s >= 0
    assert record.info["p1_peak_rss_mb"] > 50 and "collect_estimated" not in record.info


def test_a_worker_that_raises_names_itself_and_the_run(assert_gone: Gone) -> None:
    fault = InjectedFault("raise", worker_id=0, run_index=0)
    backend = RayBackend(config(), 2, actors=1, _fault=fault)
    pids = list(backend.pids)
    with pytest.raises(WorkerError, match=r"ray backend, run 0: worker 0 in actor 0") as err:
        backend.run(theta(), 0)
    assert "injected fault in worker 0, run 0" in str(err.value)
    assert_gone(pids)
    with pytest.raises(WorkerError, match="shut down after a failure"):
        backend.run(theta(), 1)


def test_an_actor_killed_mid_run_is_reported(assert_gone: Gone) -> None:
    fault = InjectedFault("kill", worker_id=1, run_index=0)
    with RayBackend(config(), 2, _fault=fault) as backend:
        pids = list(backend.pids)
        with pytest.raises(WorkerError, match=r"run 0: actor 1 \(pid \d+, logical worker 1\) died"):
            backend.run(theta(), 0)
    assert_gone(pids)


def test_a_hung_actor_times_out(assert_gone: Gone) -> None:
    fault = InjectedFault("hang", worker_id=0, run_index=0)
    with RayBackend(config(), 1, timeout_s=1.0, _fault=fault) as backend:
        pids = list(backend.pids)
        with pytest.raises(WorkerError, match=r"run 0: actor 0 .* did not answer within 1 s"):
            backend.run(theta(), 0)
    assert_gone(pids)


def test_a_hang_after_the_warm_up_is_caught_by_the_scaled_limit(assert_gone: Gone) -> None:
    fault = InjectedFault("hang", worker_id=0, run_index=2)
    with RayBackend(config(epochs=1), 1, _fault=fault) as backend:
        pids = list(backend.pids)
        backend.run(theta(), 0)
        backend.run(theta(), 1)
        backend.limits.floor_s = 1.0  # sinusoid runs take milliseconds: the floor sets the limit
        with pytest.raises(
            WorkerError,
            match=r"run 2: actor 0 .* within 1 s \(max\(1 s, 10 x the slowest run call so far",
        ) as err:
            backend.run(theta(), 2)
    assert "suite field `worker_timeout_s` or the flag `--worker-timeout`" in str(err.value)
    assert_gone(pids)
