"""The pytest-benchmark glue in suites/conftest.py: ``--suite NAME`` collects that suite's cases
and nothing else (issue 19: it ran all 22 benchmarks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_suite_option_selects_only_that_suites_cases() -> None:
    args = ["suites/", "--benchmark-only", "--suite", "main", "--collect-only", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert collected and all("test_suite_case[main/" in line for line in collected), collected
    assert "deselected" in done.stdout
