"""``plan``: makespan packing, estimates from earlier records, calibration, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli, plan
from harness.suite import load_suite


def test_packed_time_is_the_longest_first_makespan() -> None:
    assert plan.packed_time([1.0, 1.0, 1.0, 1.0], 4) == 1.0
    assert plan.packed_time([1.0, 1.0, 1.0, 1.0], 2) == 2.0
    assert plan.packed_time([3.0, 2.0, 2.0], 2) == 4.0  # 3 | 2+2
    assert plan.packed_time([0.5], 16) == 0.5


def test_projected_run_adds_dispatch_collect_merge_except_collect_in_serial() -> None:
    run = {"compute_s": [1.0, 1.0], "dispatch_s": 0.1, "collect_s": 0.2, "merge_s": 0.3}
    assert plan.projected_run_s({**run, "backend": "processes"}, 2) == pytest.approx(1.6)
    assert plan.projected_run_s({**run, "backend": "serial"}, 2) == pytest.approx(1.4)
    assert plan.projected_run_s({**run, "backend": "serial"}, 1) == pytest.approx(2.4)


def test_estimate_uses_the_records_of_the_same_cases(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "results"
    assert cli.main(["run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root),
                     "--quiet"]) == 0  # fmt: skip
    suite = load_suite(tiny_suite, "smoke")
    estimates = plan.estimate(suite, cores=2, roots=[root])
    assert [e.case_id for e in estimates] == [c.case_id for c in suite.cases]
    for e in estimates:
        assert e.source.startswith("records: smoke-")
        assert e.seeds == 2 and e.runs == 3 and e.validations == 2
        assert e.run_s > 0 and e.warmup_s > 0 and e.peak_rss_bytes > 0
        per_seed = e.setup_s + e.warmup_s + 3 * e.run_s + 2 * e.validation_s
        tracing = max(0.0, e.validation_first_s - e.validation_s)  # paid once, not per seed
        assert e.total_s == pytest.approx(2 * per_seed + tracing)
        assert e.total_projected_s <= e.total_s + 1e-9  # 2 cores never slower than serial here
    capsys.readouterr()
    assert cli.main(["plan", str(tiny_suite), "--scale", "smoke", "--results-dir",
                     str(root), "--cores", "8"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "PROJECTED for a parallel backend on 8 cores" in out and "TOTAL" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_estimates_prefer_this_machine_and_name_another(tiny_suite: Path, tmp_path: Path) -> None:
    """Issue 19: records from another CPU model are used only where this one has none, and the
    estimate says so; `list` marks such an estimate with '*'."""
    import json

    roots = []
    for name, cpu in (("other", "Some Other CPU 9000"), ("here", None)):
        root = tmp_path / name
        assert cli.main(["run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root),
                         "--quiet"]) == 0  # fmt: skip
        if cpu:
            (manifest_path,) = root.glob("tiny/smoke-*/manifest.json")
            manifest = json.loads(manifest_path.read_text())
            manifest["machine"]["cpu_model"] = cpu
            manifest_path.write_text(json.dumps(manifest))
        roots.append(root)
    suite = load_suite(tiny_suite, "smoke")
    (other,) = {e.source for e in plan.estimate(suite, cores=2, roots=roots[:1])}
    assert "another machine: Some Other CPU 9000" in other
    both = plan.estimate(suite, cores=2, roots=roots)
    assert all("another machine" not in e.source for e in both)
    assert cli._list_estimate(suite, [roots[0].parent / "other"]).endswith("*")


def test_estimate_calibrates_cases_without_records(tiny_suite: Path, tmp_path: Path) -> None:
    suite = load_suite(tiny_suite, "smoke")
    (first, second) = plan.estimate(suite, cores=1, roots=[tmp_path / "none"], calibrate_runs=1)
    assert first.source == second.source == "calibrated: 1 runs"
    assert first.validation_s > 0 and first.setup_s > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cores", "0"], "--cores must be >= 1"),
        (["--ray-nodes", "0"], "--ray-nodes must be >= 1"),
        (["--cores", "2", "--ray-nodes", "2"], "not both"),
        (["--calibrate-runs", "0"], "--calibrate-runs must be >= 1"),
    ],
)
def test_bad_plan_flags_are_one_line(
    tiny_suite: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli.main(["plan", str(tiny_suite), "--scale", "smoke", *args]) == 2
    assert message in capsys.readouterr().err
