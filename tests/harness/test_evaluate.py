"""Using what was trained: `evaluate` and `export` on a finished sweep, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.checkpoint import CheckpointStore, checkpoint_dir
from harness.evaluate import load_theta
from tests.harness.cli_helpers import one_clear_line, run_cli

CASE = "w2-e1-t4-sum-o2"


@pytest.fixture
def finished(tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    results = tmp_path / "results"
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke", "--quiet",
                           "--results-dir", str(results))  # fmt: skip
    assert code == 0, err
    (folder,) = (results / "tiny").iterdir()
    return folder


def last_validation(folder: Path, seed: int) -> dict[str, object]:
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    mine = [r for r in records if r["kind"] == "validation" and r["case_id"] == CASE]
    return [r for r in mine if r["seed"] == seed][-1]


def test_evaluate_repeats_the_last_validation(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Default tasks and steps are the run's own held-out ones: the figure equals the last
    validation it recorded, with a ci95 over the tasks."""
    out = tmp_path / "eval.json"
    code, text, err = run_cli(capsys, "evaluate", str(finished), "--case", CASE, "--seed", "1",
                              "--out", str(out))  # fmt: skip
    assert code == 0, err
    result = json.loads(out.read_text())
    (loss,) = result["metrics"]
    recorded = last_validation(finished, 1)
    assert loss["name"] == "loss" and loss["higher_is_better"] is False
    assert loss["by_step"] == pytest.approx(recorded["loss_by_step"], rel=1e-6)
    assert loss["mean"] == pytest.approx(np.mean(recorded["loss_final_per_task"]), rel=1e-6)
    assert loss["n_tasks"] == 8 and loss["ci95"] > 0 and result["runs_done"] == 4
    assert "loss (mean squared error, lower is better)" in text
    code, text, err = run_cli(capsys, "evaluate", str(finished), "--case", CASE, "--seed", "1",
                              "--tasks", "5", "--task-seed", "7")  # fmt: skip
    assert code == 0 and "5 tasks (seed 7)" in text, err


def test_export_writes_the_final_theta_with_its_spec(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "theta.npz"
    code, text, err = run_cli(capsys, "export", str(finished), "--case", CASE, "--seed", "0",
                              "--out", str(out))  # fmt: skip
    assert code == 0 and f"written: {out}" in text, err
    theta, spec = load_theta(out)
    store = CheckpointStore(checkpoint_dir(finished, CASE, 0))
    stored = store.read(store.runs()[-1]).state["theta"]
    assert len(theta) == len(stored) and all(
        np.array_equal(a, b) for a, b in zip(theta, stored, strict=True)
    )
    assert spec["domain"] == "sinusoid" and spec["runs_done"] == 4 and "MLP" in spec["network"]
    assert spec["shapes"] == [list(w.shape) for w in theta]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--case", "w9-e1-t4-sum-o2", "--seed", "0"], "no case 'w9-e1-t4-sum-o2' with seed 0"),
        (["--case", CASE, "--seed", "5"], f"no case '{CASE}' with seed 5"),
        (["--case", CASE, "--seed", "0", "--tasks", "0"], "--tasks must be >= 1"),
    ],
)
def test_bad_evaluate_input_is_one_line(
    finished: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, "evaluate", str(finished), *args)
    assert code == 2 and message in one_clear_line(err)


def test_evaluate_of_a_folder_that_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path), "--case", CASE, "--seed", "0")
    assert code == 2 and "not a results folder" in one_clear_line(err)
