"""The worked plug-in example (examples/cosine_plugin) through the CLI, as a user runs it: its
folder on PYTHONPATH, smoke scale, on the serial and the processes backend (spawned workers import
the plug-in by name)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cosine_plugin"


def run_harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["serial", "processes"])
def test_the_example_suite_runs_and_reports_its_own_metric(tmp_path: Path, backend: str) -> None:
    suite = tmp_path / "cosine.toml"
    text = (EXAMPLE / "cosine.toml").read_text()
    suite.write_text(text.replace("[base]\n", f'[base]\nbackend = "{backend}"\n', 1))
    results = tmp_path / "results"
    done = run_harness("run", str(suite), "--scale", "smoke", "--quiet", "--results-dir",
                       str(results), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (results / "cosine_plugin").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {p["class"] for p in manifest["plugins"]} == {"Cosine", "TrimmedMean"}
    assert manifest["data"][0]["source"].startswith("generated in memory (cosine")
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    validation = next(r for r in records if r["kind"] == "validation")
    assert "loss_by_step" in validation and "accuracy_by_step" not in validation
    report = run_harness("report", str(folder), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    text = report.stdout
    assert "validation loss" in text and "accuracy" not in text
    assert "w3-e1-t5-sum-o2-TrimmedMean" in text


def test_trimmed_mean_drops_the_extremes() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from cosine_plugin import TrimmedMean
    finally:
        sys.path.remove(str(EXAMPLE))
    workers = [[np.full(2, float(i), np.float32)] for i in range(4)]
    history = np.array([[1.0], [5.0], [np.nan], [3.0]])  # worker 2 diverged
    merge = TrimmedMean(trim=1).merge([np.zeros(2, np.float32)], workers, history)
    assert merge.kept == (3,) and not merge.diverged  # 1 and 5 trimmed, 2 not finite
    np.testing.assert_allclose(merge.weights[0], [3.0, 3.0])
    few = TrimmedMean(trim=1).merge([np.zeros(2, np.float32)], workers[:2], history[:2])
    assert few.kept == (0, 1)  # too few to trim: every usable worker
