import math
from pathlib import Path

import pytest

from harness.progress import ProgressEvent
from harness.runner import build, run_suite
from harness.store import RunFolder, StoreError
from harness.suite import load_suite


def kinds(records: list[dict], key: str = "kind") -> list[str]:
    return [r[key] for r in records]


def test_records_for_every_run_and_checkpoint(tiny_suite: Path, tmp_path: Path) -> None:
    suite = load_suite(tiny_suite, "smoke")
    folder = RunFolder.create(tmp_path / "results", suite.name, suite.scale)
    run_suite(suite, folder)
    records = folder.records()
    one = [r for r in records if (r["case_id"], r["seed"]) == ("w2-e1-t4-sum-o2", 1)]
    # a calibration sample before every timed run (blocks of 1 at 3 runs) and after the last
    bracketed = ["run", "calibration"] * 4
    assert kinds(one) == ["case_start", "validation", *bracketed, "validation", "case_end"]
    runs = [r for r in one if r["kind"] == "run"]
    assert [r["warmup"] for r in runs] == [True, False, False, False]
    run = runs[-1]
    assert len(run["compute_s"]) == 2 and run["wall_s"] > 0 and run["peak_rss_bytes"] > 0
    assert run["gpu"]["available"] is False and run["gpu"]["reason"]
    assert run["tasks_per_s"] == pytest.approx(2 * 4 / run["wall_s"])
    validation = [r for r in one if r["kind"] == "validation"]
    assert [v["after_runs"] for v in validation] == [0, 4]
    assert len(validation[0]["loss_by_step"]) == 2  # before and after 1 adaptation step
    # only the metrics the sinusoid declares (a loss): no accuracy zeros, anywhere
    assert one[0]["metrics"][0]["name"] == "loss" and len(one[0]["metrics"]) == 1
    assert not any("accuracy" in key for r in one for key in r)
    assert run["peak_rss_method"] in ("kernel", "sampled")


def test_interrupted_sweep_resumes_without_repeating(tiny_suite: Path, tmp_path: Path) -> None:
    suite = load_suite(tiny_suite, "smoke")
    folder = RunFolder.create(tmp_path / "results", suite.name, suite.scale)
    seen: list[ProgressEvent] = []

    def interrupt(event: ProgressEvent) -> None:
        seen.append(event)
        if (event.kind, event.case_id, event.seed, event.run) == ("run", "w2-e1-t4-sum-o2", 0, 2):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, folder, interrupt)
    run_suite(suite, folder)
    records = folder.records()
    starts = [(r["case_id"], r["seed"], r["attempt"]) for r in records if r["kind"] == "case_start"]
    assert starts == [
        ("w1-e1-t4-sum-o2", 0, 0),
        ("w1-e1-t4-sum-o2", 1, 0),
        ("w2-e1-t4-sum-o2", 0, 0),
        ("w2-e1-t4-sum-o2", 0, 1),
        ("w2-e1-t4-sum-o2", 1, 0),
    ]
    ends = [(r["case_id"], r["seed"]) for r in records if r["kind"] == "case_end"]
    assert len(ends) == len(set(ends)) == 4
    run_suite(suite, folder)  # nothing left to do
    assert len(folder.records()) == len(records)


def test_resume_refuses_a_changed_config(tiny_suite: Path, tmp_path: Path) -> None:
    suite = load_suite(tiny_suite, "smoke")
    folder = RunFolder.create(tmp_path / "results", suite.name, suite.scale)
    run_suite(suite, folder)
    tiny_suite.write_text(tiny_suite.read_text().replace("alpha = 0.01", "alpha = 0.02"))
    with pytest.raises(StoreError, match="changed since these results were written"):
        run_suite(load_suite(tiny_suite, "smoke"), folder)


def test_divergence_is_recorded_not_a_crash(tiny_suite: Path, tmp_path: Path) -> None:
    tiny_suite.write_text(tiny_suite.read_text().replace("alpha = 0.01", "alpha = 1e6"))
    suite = load_suite(tiny_suite, "smoke")
    folder = RunFolder.create(tmp_path / "results", suite.name, suite.scale)
    run_suite(suite, folder)
    records = folder.records()
    diverged = [r for r in records if r["kind"] == "diverged"]
    assert diverged, "alpha = 1e6 must blow up"
    runs = [r for r in records if r["kind"] == "run" and r["diverged"]]
    assert runs and all(not math.isfinite(r["loss_sum"]) for r in runs)
    assert kinds(records).count("case_end") == 4  # every case-seed still finishes cleanly


@pytest.mark.integration
def test_worker_timeout_reaches_the_backend(tiny_suite: Path) -> None:
    """``worker_timeout_s`` (suite field, or ``--worker-timeout``) fixes the backend's per-run
    limit; without it the backend scales the limit from the measured runs."""
    text = tiny_suite.read_text().replace("tasks = 4", 'tasks = 4\nbackend = "processes"')
    tiny_suite.write_text(
        text.replace("validation_tasks = 8", "validation_tasks = 8\nworker_timeout_s = 7")
    )
    suite = load_suite(tiny_suite, "smoke")
    assert suite.plan.worker_timeout_s == 7.0
    case = suite.cases[0]
    for timeout, expected in ((suite.plan.worker_timeout_s, 7.0), (None, None)):
        _, _, backend = build(case, 0, timeout)
        try:
            assert backend.limits.fixed_s == expected  # type: ignore[attr-defined]
        finally:
            backend.close()
