from pathlib import Path

import numpy as np
import pytest

from harness import report
from harness.regression import compare
from harness.runner import run_suite
from harness.store import RunFolder
from harness.suite import load_suite


@pytest.fixture
def results(tiny_suite: Path, tmp_path: Path) -> report.Results:
    suite = load_suite(tiny_suite, "smoke")
    folder = RunFolder.create(tmp_path / "results", suite.name, suite.scale)
    folder.write_manifest(
        {
            "suite": suite.name,
            "scale": suite.scale,
            "baseline": suite.baseline,
            "labels": ["a label"],
        }
    )
    run_suite(suite, folder)
    (loaded,) = report.load([folder])
    return loaded


def test_tables(results: report.Results, tmp_path: Path) -> None:
    timing = {r["case"]: r for r in report.timing_rows(results)}
    base = timing["w1-e1-t4-sum-o2"]
    assert base["relative_pct"] == pytest.approx(100.0) and base["axis"] == "baseline"
    assert timing["w2-e1-t4-sum-o2"]["axis"] == "workers"
    assert timing["w2-e1-t4-sum-o2"]["ratio"] == 2.0
    assert base["n_runs"] == 6  # 3 timed runs x 2 seeds; warm-ups excluded

    case = results.cases["w1-e1-t4-sum-o2"]
    wall = report.timing_summary(case, "wall_s")  # ci95 over block means
    (extra,) = [r for r in report.extrapolation_rows(results, 1000) if r["case"] == case.case_id]
    # every case charged alike: N steady-state runs; the warm-up's extra cost apart
    assert extra["extrapolated_s"] == pytest.approx(1000 * wall.mean)
    assert extra["extrapolated_ci95_s"] == pytest.approx(1000 * wall.ci95)
    medians = {s: np.median(v) for s, v in report.by_seed(case, "wall_s").items()}
    extra_cost = np.mean([r["wall_s"] - medians[r["seed"]] for r in case.warmups])
    assert extra["one_time_s"] == pytest.approx(extra_cost)

    quality = report.quality_rows(results)
    assert {(r["case"], r["after_runs"]) for r in quality} == {
        (c, a) for c in timing for a in (0, 4)
    }
    assert all(r["over"] == "seeds" and r["n"] == 2 for r in quality)
    text = report.render(results, 1000)
    assert "NOTE: a label" in text and "EXTRAPOLATED" in text and "projected" in text
    written = report.write(results, tmp_path / "out", 1000)
    assert {p.suffix for p in written} == {".md", ".csv", ".json", ".png"}


def test_regression_needs_both_size_and_significance() -> None:
    rng = np.random.default_rng(0)
    base = {"w": {"relative": list(1.0 + 0.01 * rng.standard_normal(12))}}

    def now(factor: float, noise: float) -> dict:
        return {"w": {"relative": list(factor + noise * rng.standard_normal(12))}}

    assert compare(base, now(0.6, 0.01), 0.25)[1] is True  # 40% slower, clear
    assert compare(base, now(0.9, 0.01), 0.25)[1] is False  # significant but small
    assert compare(base, now(0.7, 0.9), 0.25)[1] is False  # large but lost in noise
    assert compare(base, now(1.5, 0.01), 0.25)[0][0][-1] == "faster"


def test_ratio_tables_pivot_the_scaling_rows(results: report.Results) -> None:
    timing = report.timing_rows(results)
    seconds, relative = report.ratio_tables(timing)
    assert [r["ratio"] for r in seconds] == ["1", "2"]
    assert list(seconds[0]) == ["ratio", "workers", report.PROJECTED_WORKERS]
    assert relative[0]["workers"] == "100"
    w2 = next(r for r in timing if r["case"] == "w2-e1-t4-sum-o2")
    assert relative[1]["workers"] == f"{w2['relative_pct']:.0f}"
    assert seconds[1][report.PROJECTED_WORKERS] == (
        f"{w2['projected_s']:.4g} ± {w2['projected_ci95_s']:.2g}"
    )
    assert report.seen_tasks_table(timing) == [
        {"ratio": "1", "workers": 4},  # W x E x T = 1 x 1 x 4
        {"ratio": "2", "workers": 8},
    ]
