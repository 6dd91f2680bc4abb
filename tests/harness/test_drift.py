"""Drift control (harness/calibration.py, harness/drift.py): calibration samples bracket every
block of timed runs, the report divides each run by its block's drift, and a ratio between a
loaded case and a quiet one comes out as if both had run at one speed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from harness import published, report
from harness.calibration import Calibrator, kind_for
from harness.calibration import calibration as calibration_job
from harness.checkpoint import select_records
from harness.drift import normalise, references
from harness.runner import run_suite
from harness.store import RunFolder
from harness.suite import SuiteError, load_suite
from tests.harness.cli_helpers import one_clear_line, run_cli


def run(seed: int, index: int, wall: float, warmup: bool = False) -> dict[str, Any]:
    return {"kind": "run", "seed": seed, "run_index": index, "warmup": warmup,
            "wall_s": wall, "projected_s": wall / 2}  # fmt: skip


def calibration(seed: int, before: int, seconds: float) -> dict[str, Any]:
    return {"kind": "calibration", "seed": seed, "before_run": before, "seconds": seconds,
            "calibration": "conv", "load1": 1.0}  # fmt: skip


def test_each_run_is_divided_by_its_blocks_drift() -> None:
    # blocks of 2 runs: samples before runs 1, 3 and after the last (5); the second block ran
    # at half speed (samples 2.0 and 2.0 against a reference 1.0 ... median of 1, 1, 2, 2: 1.5)
    cals = [calibration(0, 1, 1.0), calibration(0, 3, 1.0), calibration(0, 5, 2.0)]
    cals.append(calibration(1, 1, 2.0))
    refs = references(cals)
    assert refs["conv"].seconds == pytest.approx(1.5) and refs["conv"].samples == 4
    runs = [run(0, 0, 9.0, warmup=True), run(0, 1, 1.0), run(0, 2, 1.0), run(0, 3, 1.5),
            run(0, 4, 1.5)]  # fmt: skip
    drift = normalise(runs, cals[:3], refs)
    # block 1: (1 + 1) / 2 / 1.5; block 2: (1 + 2) / 2 / 1.5 = 1.0
    assert [b[:2] for b in drift.blocks] == [(1, pytest.approx(2 / 3)), (3, pytest.approx(1.0))]
    assert [r["wall_s"] for r in runs] == pytest.approx([13.5, 1.5, 1.5, 1.5, 1.5])
    assert [r["wall_raw_s"] for r in runs] == [9.0, 1.0, 1.0, 1.5, 1.5]
    assert runs[1]["projected_s"] == pytest.approx(0.75)
    assert drift.worst == pytest.approx(1.5)
    normalise(runs, cals[:3], refs)  # a second pass changes nothing
    assert runs[1]["wall_s"] == pytest.approx(1.5)


def test_records_without_calibration_keep_their_raw_times() -> None:
    runs = [run(0, 1, 1.0)]
    drift = normalise(runs, [], {})
    assert drift.blocks == [] and runs[0]["wall_s"] == 1.0 and "wall_raw_s" not in runs[0]


def test_calibrator_brackets_every_block_and_resumes_with_its_own() -> None:
    c = Calibrator("mlp", lambda s: calibration_job("mlp", s), 0.01, block_runs=3)
    total = 8  # warm-up + 7 timed runs
    assert [i for i in range(total + 1) if c.due(i, 0, total)] == [1, 4, 7, 8]
    assert [i for i in range(5, total + 1) if c.due(i, 5, total)] == [5, 7, 8]
    assert kind_for("sinusoid") == "mlp" and kind_for("omniglot") == "conv"
    sample = c.sample(1)
    assert sample["seconds"] > 0 and sample["calibration"] == "mlp" and "load1" in sample


def test_resume_drops_the_calibrations_it_takes_again() -> None:
    base = {"case_id": "c", "seed": 0}
    records = [
        {**base, "kind": "case_start", "attempt": 0},
        *({**base, **calibration(0, b, 1.0), "attempt": 0} for b in (1, 3, 5)),
        {**base, "kind": "case_start", "attempt": 1},
        {**base, "kind": "case_resume", "attempt": 1, "from_run": 3},
        {**base, **calibration(0, 3, 2.0), "attempt": 1},
    ]
    kept = [(r["before_run"], r["seconds"]) for r in select_records(records)
            if r["kind"] == "calibration"]  # fmt: skip
    assert sorted(kept) == [(1, 1.0), (3, 2.0)]


def test_runner_writes_bracketing_samples(tiny_suite: Path, tmp_path: Path) -> None:
    suite = load_suite(tiny_suite, "smoke")  # 3 runs: blocks of 1
    folder = RunFolder.create(tmp_path / "results", suite.name, suite.scale)
    run_suite(suite, folder)
    folder.write_manifest({"suite": suite.name, "scale": suite.scale})  # for report.load
    one = [r for r in folder.records() if (r["case_id"], r["seed"]) == ("w1-e1-t4-sum-o2", 0)]
    cals = [r for r in one if r["kind"] == "calibration"]
    assert [c["before_run"] for c in cals] == [1, 2, 3, 4]
    # the default job: a step of the baseline case (the first of the sweep here)
    assert all(c["calibration"] == "baseline step w1-e1-t4-sum-o2" for c in cals)
    assert all(c["seconds"] > 0 for c in cals)
    (results,) = report.load([folder])
    case = results.cases["w1-e1-t4-sum-o2"]
    assert all("wall_raw_s" in r for r in case.runs) and case.drift[0].blocks
    text = report.render(results, 100, wide=True)
    assert "DRIFT-NORMALISED" in text and "one_time_s" in text
    # the warm-up counts as a steady-state run in time to target / quality against wall time
    runs = published.seed_runs(case)[0]
    timed = sorted(r["wall_s"] for i, r in runs.items() if i > 0)
    assert runs[0]["wall_s"] == pytest.approx(timed[1])


def write_folder(tmp_path: Path, records: list[dict[str, Any]]) -> RunFolder:
    folder = RunFolder.create(tmp_path / "results", "drift", "quick")
    folder.write_manifest(
        {
            "suite": "drift",
            "scale": "quick",
            "baseline": "w1",
            "cases": ["w1", "w2"],
            "plan": {"runs": 4, "seeds": [0], "checkpoints": [], "drift_threshold": 1.25},
            "status": "complete",
        }
    )
    for r in records:
        folder.append(r)
    return folder


def test_a_loaded_baseline_does_not_move_the_ratio(tmp_path: Path) -> None:
    # W = 2 does twice the work; the W = 1 case ran while the machine was 2x slower, and its
    # calibration samples say so: the ratio is 200 %, not 100 %
    records: list[dict[str, Any]] = []
    for case, step, slow in (("w1", 1.0, 2.0), ("w2", 2.0, 1.0)):
        start = {"kind": "case_start", "case_id": case, "seed": 0, "case": {
            "backend": "serial", "workers": int(case[1]), "epochs": 1, "tasks": 4,
            "inner_steps": 1, "domain": "random_images"}}  # fmt: skip
        records.append(start)
        records.append({**run(0, 0, 5.0, warmup=True), "case_id": case})
        for i in (1, 2, 3, 4):
            if i in (1, 3):
                records.append({**calibration(0, i, 0.01 * slow), "case_id": case})
            records.append({**run(0, i, step * slow), "case_id": case})
        records.append({**calibration(0, 5, 0.01 * slow), "case_id": case})
        records.append({"kind": "case_end", "case_id": case, "seed": 0})
    (results,) = report.load([write_folder(tmp_path, records)])
    rows = {r["case"]: r for r in report.timing_rows(results)}
    assert rows["w2"]["relative_pct"] == pytest.approx(200.0)
    assert rows["w1"]["wall_raw_s"] == pytest.approx(2.0)
    # reference: the median sample, 0.015; drift 4/3 for W = 1, 2/3 for W = 2
    assert "DRIFT beyond x1.25: seed 0 x1.33" in rows["w1"]["notes"]
    assert "seed 0 x1.50" in rows["w2"]["notes"]
    assert rows["w1"]["one_time_s"] == pytest.approx((5.0 - 2.0) * 0.75)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("calibration", '"bogus"', "must be baseline, matched, off"),
        ("calibration_s", "0", "must be seconds in [0.01, 10.0]"),
        ("calibration_s", "inf", "must be seconds in [0.01, 10.0]"),
        ("block_runs", "-1", "must be an integer in [0, runs = 3]"),
        ("block_runs", "4", "must be an integer in [0, runs = 3]"),
        ("drift_threshold", "1.0", "must be a speed ratio in [1.01, 10.0]"),
        ("drift_threshold", "nan", "must be a speed ratio in [1.01, 10.0]"),
    ],
)
def test_bad_drift_settings_are_one_line_errors(
    tiny_suite: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    value: str,
    says: str,
) -> None:
    text = tiny_suite.read_text().replace("runs = 3\n", f"runs = 3\n{field} = {value}\n")
    tiny_suite.write_text(text)
    with pytest.raises(SuiteError, match=rf"scales\.smoke\.{field}: .*{re.escape(says)}"):
        load_suite(tiny_suite, "smoke")
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(tmp_path / "r")
    )
    assert code == 2 and field in one_clear_line(err)
    assert not (tmp_path / "r").exists()
