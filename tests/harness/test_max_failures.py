"""``max_failures`` (suite field, ``--max-failures``) and the record selection after a restore
inside an attempt (a lost Ray worker): cheap checks; the real failures are in
tests/dmaml_core/backends/test_ray_faults.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.checkpoint import select_records
from harness.suite import SuiteError, load_suite

ROOT = Path(__file__).resolve().parents[2]


def test_max_failures_defaults_to_3_and_is_not_part_of_the_signature(tiny_suite: Path) -> None:
    default = load_suite(tiny_suite, "smoke")
    assert default.plan.max_failures == 3
    text = tiny_suite.read_text()
    tiny_suite.write_text(
        text.replace("validation_tasks = 8", "validation_tasks = 8\nmax_failures = 0")
    )
    zero = load_suite(tiny_suite, "smoke")
    assert zero.plan.max_failures == 0
    assert zero.signature() == default.signature()  # a resume may change it


@pytest.mark.parametrize("value", ["-1", "1.5", '"3"'])
def test_a_bad_max_failures_names_the_field(tiny_suite: Path, value: str) -> None:
    text = tiny_suite.read_text()
    tiny_suite.write_text(
        text.replace("validation_tasks = 8", f"validation_tasks = 8\nmax_failures = {value}")
    )
    with pytest.raises(SuiteError, match=r"scales\.smoke\.max_failures: must be an integer >= 0"):
        load_suite(tiny_suite, "smoke")


def test_a_negative_max_failures_flag_is_one_line(tiny_suite: Path, tmp_path: Path) -> None:
    args = ["run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "harness", *args, "--max-failures", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "--max-failures must be >= 0, got -1" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def rec(kind: str, attempt: int, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "case_id": "c", "seed": 0, "attempt": attempt, **fields}


def runs(attempt: int, indices: range, tag: str) -> list[dict[str, Any]]:
    return [rec("run", attempt, run_index=i, tag=tag) for i in indices]


def restored(attempt: int, from_run: int) -> list[dict[str, Any]]:
    return [
        rec("worker_failure", attempt, run_index=5, restored_from_run=from_run),
        rec("case_resume", attempt, from_run=from_run, after_failure=True),
    ]


def counted(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(r["run_index"], r["tag"]) for r in select_records(records) if r["kind"] == "run"]


def test_runs_re_done_after_a_restore_within_an_attempt_count_once() -> None:
    records = [
        rec("case_start", 0),
        rec("validation", 0, after_runs=0, tag="v0"),
        *runs(0, range(0, 6), "first"),
        *restored(0, 3),
        *runs(0, range(3, 8), "again"),
        rec("case_end", 0),
    ]
    assert counted(records) == [(i, "first") for i in range(3)] + [
        (i, "again") for i in range(3, 8)
    ]
    assert [r["kind"] for r in select_records(records)].count("validation") == 1


def test_a_restore_within_an_attempt_does_not_carry_an_earlier_attempt() -> None:
    """A fresh attempt (no checkpoint to resume) restored from its own start after a lost worker:
    nothing of the abandoned attempt before it counts."""
    records = [
        rec("case_start", 0),
        *runs(0, range(0, 5), "abandoned"),
        rec("case_start", 1),
        *runs(1, range(0, 2), "lost"),
        *restored(1, 0),
        *runs(1, range(0, 4), "kept"),
    ]
    assert counted(records) == [(i, "kept") for i in range(4)]


def test_a_resumed_attempt_with_a_restore_carries_only_what_precedes_its_resume() -> None:
    records = [
        rec("case_start", 0),
        *runs(0, range(0, 6), "a0"),
        rec("case_start", 1),
        rec("case_resume", 1, from_run=4),
        *runs(1, range(4, 7), "a1"),
        *restored(1, 6),
        *runs(1, range(6, 9), "a1-again"),
    ]
    assert counted(records) == [
        *[(i, "a0") for i in range(4)],
        (4, "a1"),
        (5, "a1"),
        *[(i, "a1-again") for i in range(6, 9)],
    ]
