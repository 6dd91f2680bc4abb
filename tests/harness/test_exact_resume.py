"""Exact resume: a case-seed interrupted at any point and resumed ends with bit-for-bit the same
final theta and the same validation records as an uninterrupted run, on every backend, and the
report counts every run once.

The kill tests run the real CLI in a subprocess and SIGKILL it after k records reached
``records.jsonl``; the uninterrupted reference is a subprocess too, so both ran with the same
TensorFlow thread settings (the precondition for bit-identical float results).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.checkpoint import CheckpointStore, checkpoint_dir, select_records
from harness.progress import ProgressEvent
from harness.report import load
from harness.runner import run_suite
from harness.store import RunFolder, read_records
from harness.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
RUNS = 10  # timed runs; + 1 warm-up = 11 runs per case-seed
TOTAL = RUNS + 1
SUITE = """
name = "resume_{backend}"
description = "exact-resume check"
[domain]
name = "sinusoid"
[base]
tasks = 4
workers = 3
backend = "{backend}"
weight_generator = "loss_moving_average"
{extra}
[scales.smoke]
runs = {runs}
seeds = [0]
checkpoints = [0, 5, {total}]
checkpoint_every = 2
validation_tasks = 8
"""
EXTRA = {"serial": "", "processes": "processes = 2", "ray": ""}
TIMEOUT_S = 240.0


def write_suite(tmp_path: Path, backend: str) -> Path:
    path = tmp_path / f"resume_{backend}.toml"
    path.write_text(SUITE.format(backend=backend, extra=EXTRA[backend], runs=RUNS, total=TOTAL))
    return path


def final_theta(folder: Path) -> list[np.ndarray]:
    suite_case = next(
        r for r in read_records(folder / "records.jsonl") if r["kind"] == "case_start"
    )
    store = CheckpointStore(checkpoint_dir(folder, suite_case["case_id"], 0))
    checkpoint = store.latest({})
    assert checkpoint is not None and checkpoint.runs_done == TOTAL, store.rejected
    return list(checkpoint.state["theta"])


def quality(folder: Path) -> list[tuple[int, Any, Any]]:
    records = select_records(read_records(folder / "records.jsonl"))
    return [
        (r["after_runs"], r["loss_by_step"], r["loss_final_per_task"])
        for r in records
        if r["kind"] == "validation"
    ]


def assert_same_result(got: Path, want: Path) -> None:
    for a, b in zip(final_theta(got), final_theta(want), strict=True):
        assert np.array_equal(a, b)
    assert quality(got) == quality(want)
    assert [v[0] for v in quality(got)] == [0, 5, TOTAL]
    runs = [r["run_index"] for r in select_records(read_records(got / "records.jsonl"))
            if r["kind"] == "run"]  # fmt: skip
    assert runs == list(range(TOTAL))  # every run counted exactly once
    (results,) = load([RunFolder(got)])
    (case,) = results.cases.values()
    assert len(case.runs) == RUNS and len(case.warmups) == 1


def cli(suite: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(suite), "--scale", "smoke", "--quiet", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(proc: subprocess.Popen[bytes]) -> None:
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"harness run did not finish within {TIMEOUT_S:g} s")
    assert proc.returncode == 0, err.decode()[-3000:]


def only_folder(results: Path) -> Path:
    (records,) = results.glob("*/smoke-*/records.jsonl")
    return records.parent


def run_to_end(suite: Path, results: Path) -> Path:
    finish(cli(suite, "--results-dir", str(results)))
    return only_folder(results)


def kill_after(suite: Path, results: Path, n_records: int) -> Path:
    """Start a run and SIGKILL it once ``records.jsonl`` holds ``n_records`` lines."""
    proc = cli(suite, "--results-dir", str(results))
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = list(results.glob("*/smoke-*/records.jsonl"))
        if found and found[0].read_bytes().count(b"\n") >= n_records:
            break
        if proc.poll() is not None:
            pytest.fail(f"run ended before {n_records} records: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        time.sleep(0.005)
    else:
        proc.kill()
        pytest.fail(f"no {n_records} records within {TIMEOUT_S:g} s")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    return only_folder(results)


def killed_and_resumed(suite: Path, results: Path, kill_points: list[int]) -> Path:
    folder = kill_after(suite, results, kill_points[0])
    for n in kill_points[1:]:  # kill the resumed run again, later
        proc = cli(suite, "--resume", str(folder))
        deadline = time.monotonic() + TIMEOUT_S
        while (folder / "records.jsonl").read_bytes().count(b"\n") < n:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate(timeout=30)
                pytest.fail(f"resume ended before {n} records: {err.decode()[-2000:]}")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finish(cli(suite, "--resume", str(folder)))
    return folder


@pytest.mark.parametrize("mode", ["dmaml", "task_parallel"])
def test_serial_interrupted_in_process_resumes_exactly(tmp_path: Path, mode: str) -> None:
    path = write_suite(tmp_path, "serial")
    if mode == "task_parallel":  # gradient averaging: the central learner's own Adam state too
        text = path.read_text().replace('weight_generator = "loss_moving_average"', "")
        path.write_text(text.replace("[base]", '[base]\nmode = "task_parallel"'))
    suite = load_suite(path, "smoke")
    reference = RunFolder.create(tmp_path / "a", suite.name, suite.scale)
    run_suite(suite, reference)
    folder = RunFolder.create(tmp_path / "b", suite.name, suite.scale)
    folder.write_manifest({"suite": suite.name, "scale": suite.scale})  # for report.load

    def interrupt(event: ProgressEvent) -> None:
        if (event.kind, event.run, event.runs) == ("run", 8, TOTAL):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, folder, interrupt)
    run_suite(suite, folder)
    kinds = [r["kind"] for r in folder.records()]
    assert kinds.count("case_resume") == 1 and kinds.count("resume_warmup") == 1
    resume = next(r for r in folder.records() if r["kind"] == "case_resume")
    assert resume["from_run"] == 6  # checkpoint_every = 2: the newest before run 8 was after 6
    assert_same_result(folder.path, reference.path)


@pytest.mark.slow  # three CLI subprocesses, each importing TensorFlow: ~30 s here
def test_serial_sigkill_and_resume_is_bit_exact(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, "serial")
    reference = run_to_end(suite, tmp_path / "reference")
    folder = killed_and_resumed(suite, tmp_path / "killed", [7])
    assert_same_result(folder, reference)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_parallel_backends_sigkill_and_resume_is_bit_exact(tmp_path: Path, backend: str) -> None:
    """The workers' states live in other processes: the checkpoint pulls them back, the resumed
    run pushes them into fresh processes / actors."""
    suite = write_suite(tmp_path, backend)
    reference = run_to_end(suite, tmp_path / "reference")
    folder = killed_and_resumed(suite, tmp_path / "killed", [7])
    assert_same_result(folder, reference)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("backend", ["serial", "processes", "ray"])
def test_killed_at_several_points_still_ends_bit_exact(tmp_path: Path, backend: str) -> None:
    """Killed early (maybe before the first checkpoint), killed again after resuming, resumed."""
    suite = write_suite(tmp_path, backend)
    reference = run_to_end(suite, tmp_path / "reference")
    folder = killed_and_resumed(suite, tmp_path / "killed", [4, 15])
    assert_same_result(folder, reference)
    kinds = [r["kind"] for r in read_records(folder / "records.jsonl")]
    assert kinds.count("case_start") == 3 and kinds.count("case_end") == 1


@pytest.mark.slow
def test_killed_while_writing_a_checkpoint_falls_back_and_ends_bit_exact(tmp_path: Path) -> None:
    """SIGKILL the moment a checkpoint's temporary file appears (the write in progress); if the
    poll misses every write, the kill still lands at a random point of the run."""
    suite = tmp_path / "every_run.toml"
    suite.write_text(
        write_suite(tmp_path, "serial")
        .read_text()
        .replace("checkpoint_every = 2", "checkpoint_every = 1")
    )
    reference = run_to_end(suite, tmp_path / "reference")
    results = tmp_path / "killed"
    proc = cli(suite, "--results-dir", str(results))
    deadline = time.monotonic() + TIMEOUT_S
    hit = False
    while proc.poll() is None and time.monotonic() < deadline:
        if any(results.glob("*/smoke-*/checkpoints/*/seed0/.run*.tmp")):
            hit = True
            break
        if len(list(results.glob("*/smoke-*/checkpoints/*/seed0/run*.npz"))) >= 2 and list(
            results.glob("*/smoke-*/checkpoints/*/seed0/run00001[01].npz")
        ):
            break  # near the end: kill anyway, mid-run
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    folder = only_folder(results)
    finish(cli(suite, "--resume", str(folder)))
    assert_same_result(folder, reference)
    print(f"killed during a checkpoint write: {hit}")
