"""Ray clusters that survive a lost worker process or node: the case-seed goes on from its newest
checkpoint, every run is counted once, the numbers are the same as without the failure, and
failures beyond ``max_failures`` end the sweep with one line.

A real two-node cluster on this machine (``ray.cluster_utils.Cluster``: a head and a second node,
one CPU each), a sinusoid suite through the real runner, and real deaths: the second node removed
(its raylet and every process on it killed) or an actor's process SIGKILLed, mid-sweep, from the
progress callback. Slow: each actor start imports TensorFlow, each recovery starts processes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from harness.checkpoint import CheckpointStore, checkpoint_dir, select_records  # noqa: E402
from harness.progress import ProgressEvent  # noqa: E402
from harness.report import load  # noqa: E402
from harness.runner import CaseFailed, run_suite  # noqa: E402
from harness.store import RunFolder  # noqa: E402
from harness.suite import Suite, load_suite  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = 10  # timed runs; + the warm-up = 11 per case-seed
TOTAL = RUNS + 1
SUITE = """
name = "ray_faults"
description = "fault tolerance check"
[domain]
name = "sinusoid"
[base]
tasks = 4
workers = 2
backend = "ray"
weight_generator = "loss_moving_average"
[scales.smoke]
runs = {runs}
seeds = [0]
checkpoints = [0, {total}]
checkpoint_every = 3
validation_tasks = 8
max_failures = {max_failures}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head node with one CPU, this driver connected to it; tests add and remove a second."""
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def second_node(cluster: Cluster) -> Iterator[Any]:
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield node
    if node in cluster.worker_nodes:
        cluster.remove_node(node)


def suite(tmp_path: Path, max_failures: int = 3) -> Suite:
    path = tmp_path / "ray_faults.toml"
    path.write_text(SUITE.format(runs=RUNS, total=TOTAL, max_failures=max_failures))
    return load_suite(path, "smoke")


def sweep(
    tmp_path: Path, at_runs: dict[int, Callable[[RunFolder], None]], max_failures: int = 3
) -> RunFolder:
    """Run the suite; when run ``k`` of ``at_runs`` has completed for the first time (progress
    event), call its action (which kills something)."""
    the_suite = suite(tmp_path, max_failures)
    folder = RunFolder.create(tmp_path / "results", the_suite.name, the_suite.scale)
    folder.write_manifest({"suite": the_suite.name, "scale": the_suite.scale})  # for report.load
    pending = dict(at_runs)

    def progress(event: ProgressEvent) -> None:
        if event.kind == "run" and event.run in pending:
            pending.pop(event.run)(folder)

    run_suite(the_suite, folder, progress)
    return folder


def of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def final_theta(folder: RunFolder) -> list[np.ndarray]:
    (start,) = of_kind(folder.records(), "case_start")
    store = CheckpointStore(checkpoint_dir(folder.path, start["case_id"], 0))
    checkpoint = store.latest({})
    assert checkpoint is not None and checkpoint.runs_done == TOTAL, store.rejected
    return list(checkpoint.state["theta"])


def assert_counted_once_and_exact(folder: RunFolder, reference: RunFolder) -> None:
    """Every run counted once, and bit for bit what a sweep without failures gave."""
    records = folder.records()
    assert len(of_kind(records, "case_end")) == 1
    selected = select_records(records)
    assert [r["run_index"] for r in of_kind(selected, "run")] == list(range(TOTAL))
    want = select_records(reference.records())
    for got_run, want_run in zip(of_kind(selected, "run"), of_kind(want, "run"), strict=True):
        assert got_run["loss_sums"] == want_run["loss_sums"]
    got_v = [(v["after_runs"], v["loss_final_per_task"]) for v in of_kind(selected, "validation")]
    want_v = [(v["after_runs"], v["loss_final_per_task"]) for v in of_kind(want, "validation")]
    assert got_v == want_v and [v[0] for v in got_v] == [0, TOTAL]
    for a, b in zip(final_theta(folder), final_theta(reference), strict=True):
        assert np.array_equal(a, b)
    (results,) = load([folder])  # the report counts each run once too
    (case,) = results.cases.values()
    assert len(case.runs) == RUNS and len(case.warmups) == 1


@pytest.fixture(scope="module")
def reference(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """The same sweep without any failure, on the head and a second node."""
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        return sweep(tmp_path_factory.mktemp("reference"), {})
    finally:
        cluster.remove_node(node)


def test_a_lost_node_moves_its_worker_and_the_sweep_goes_on(
    cluster: Cluster, second_node: Any, reference: RunFolder, tmp_path: Path
) -> None:
    folder = sweep(tmp_path, {5: lambda _: cluster.remove_node(second_node)})
    records = folder.records()
    lost = second_node.node_id[:8]
    (start,) = of_kind(records, "case_start")
    assert sorted(n["cpus"] for n in start["cluster"]) == [1.0, 1.0]
    assert sum(n["head"] for n in start["cluster"]) == 1
    runs = of_kind(records, "run")
    before = runs[0]["backend_nodes"]
    assert len(set(before)) == 2, f"W = 2 actors not spread over both nodes: {before}"
    assert any(node.endswith(lost) for node in before)
    (failure,) = of_kind(records, "worker_failure")
    assert failure["run_index"] == 5 and failure["restored_from_run"] == 3
    assert failure["node"].endswith(lost)
    assert failure["node"] in before and before.index(failure["node"]) == failure["actor"]
    assert "died" in failure["error"] and "\n" not in failure["error"]
    resume = next(r for r in of_kind(records, "case_resume") if r.get("after_failure"))
    assert resume["from_run"] == 3 and resume["recovery"]["action"] == "rebuilt"
    assert resume["recovery"]["lost_nodes"] == [failure["node"]]
    after = runs[-1]["backend_nodes"]
    assert len(set(after)) == 1 and not after[0].endswith(lost)  # both on the head now
    assert len(runs) == TOTAL + 2  # runs 3 and 4 were re-done after the restore
    assert_counted_once_and_exact(folder, reference)


def kill_actor(h: int) -> Callable[[RunFolder], None]:
    """SIGKILL the process of actor ``h`` that ran the latest run (its pid is in the record)."""

    def kill(folder: RunFolder) -> None:
        run = of_kind(folder.records(), "run")[-1]
        os.kill(int(run[f"backend_p{h}_pid"]), signal.SIGKILL)

    return kill


def test_a_killed_actor_process_is_restarted_and_the_sweep_goes_on(
    second_node: Any, reference: RunFolder, tmp_path: Path
) -> None:
    folder = sweep(tmp_path, {5: kill_actor(1)})
    records = folder.records()
    runs = of_kind(records, "run")
    (failure,) = of_kind(records, "worker_failure")
    assert failure["run_index"] == 5 and failure["restored_from_run"] == 3
    assert failure["actor"] == 1 and failure["node_alive"] is True
    assert failure["pid"] == runs[4]["backend_p1_pid"]
    resume = next(r for r in of_kind(records, "case_resume") if r.get("after_failure"))
    assert resume["recovery"]["action"] == "restarted"  # by Ray, on the same node
    assert resume["recovery"]["lost_nodes"] == []
    assert runs[-1]["backend_p1_pid"] != failure["pid"]
    assert runs[-1]["backend_nodes"] == runs[0]["backend_nodes"]
    assert_counted_once_and_exact(folder, reference)


def test_failures_beyond_max_failures_end_the_sweep_in_one_line(
    second_node: Any, tmp_path: Path
) -> None:
    with pytest.raises(CaseFailed) as err:
        sweep(tmp_path, {4: kill_actor(0), 8: kill_actor(0)}, max_failures=1)
    message = str(err.value)
    assert "\n" not in message
    assert "that is failure 2 of this case-seed, more than max_failures = 1" in message
    assert "`--max-failures`" in message
    records = RunFolder(next((tmp_path / "results").glob("*/smoke-*"))).records()
    failures = of_kind(records, "worker_failure")
    assert [f["restored_from_run"] for f in failures] == [3, None]
    assert len(of_kind(records, "case_error")) == 1 and not of_kind(records, "case_end")
