"""The command line as a user meets it: real subprocesses, exit codes, no tracebacks."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.integration
def test_run_then_report(tiny_suite: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    run = harness("run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(results))
    assert run.returncode == 0, run.stderr
    assert "Seconds per run (warm-up and diverged runs excluded" in run.stdout
    assert "EXTRAPOLATED" in run.stdout
    assert f"results stored in {results}" in run.stdout
    out = tmp_path / "reports"
    report = harness("report", "--results-dir", str(results), "--out", str(out))
    assert report.returncode == 0, report.stderr
    written = sorted(p.name for p in out.iterdir())
    assert "tiny-smoke.md" in written and "tiny-smoke-timing.csv" in written
    assert "tiny-smoke-quality.png" in written and "tiny-smoke.json" in written


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "nope"], "error: no suite 'nope': not a .toml file, nor one of:"),
        (["run", "main", "--data-dir", "/no/such/dir"], "error: --data-dir /no/such/dir: no such"),
        (["report", "--results-dir", "/no/such/dir"], "error: no results under"),
        (["run", "main", "--resume", "/no/such/folder"], "not a dmaml-bench results folder"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    result = harness(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_suite_field_exits_non_zero_without_traceback(tmp_path: Path, tiny_suite: Path) -> None:
    tiny_suite.write_text(tiny_suite.read_text().replace("workers = [1, 2]", "workers = [0]"))
    result = harness("run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(tmp_path))
    assert result.returncode == 2
    assert "tiny.toml: sweep.workers: workers must be >= 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_list_and_help() -> None:
    listing = harness("list")
    assert listing.returncode == 0 and "time_measurement" in listing.stdout
    help_text = harness("run", "--help")
    assert "--resume" in help_text.stdout and "smoke" in help_text.stdout
