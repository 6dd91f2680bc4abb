"""The throughput gate: its decision on fixed numbers, its input checks as a user meets them
(exit 2, one line, no traceback), and one real end-to-end check in fresh processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import regression
from harness.cli import main
from harness.regression import compare, gate, judge, load_baseline

ROOT = Path(__file__).resolve().parents[2]
BASE = [1.00, 1.02, 0.98, 1.01, 0.99, 1.00]


def scaled(factor: float, values: list[float] = BASE) -> list[float]:
    return [v * factor for v in values]


def test_median_of_ratios_ignores_a_burst_of_load() -> None:
    # two of six pairs hit by a neighbour (ratios halved): the mean would fall 17 %, the median 1 %
    burst = [1.00, 0.50, 0.99, 1.01, 0.50, 1.00]
    verdict = judge("w", BASE, burst, 0.25)
    assert verdict.now == pytest.approx(0.995)
    assert verdict.change == pytest.approx(-0.005)
    assert not verdict.slower and verdict.label == "ok"


def test_threshold_and_significance() -> None:
    assert judge("w", BASE, scaled(0.70), 0.25).slower  # 30 % slower, clear
    assert not judge("w", BASE, scaled(0.80), 0.25).slower  # clear but under the threshold
    assert judge("w", BASE, scaled(0.80), 0.15).slower  # ... and over a lower one
    wide = [0.2, 1.6, 0.3, 1.5, 0.6, 0.5]  # median 0.55, but lost in noise
    verdict = judge("w", BASE, wide, 0.25)
    assert verdict.change < -0.25 and verdict.p_slower > 0.05 and not verdict.slower
    assert judge("w", BASE, scaled(1.5), 0.25).label == "faster"


def test_compare_reads_relative_lists_and_reports_new_workloads() -> None:
    rows, regressed = compare(
        {"a": {"relative": BASE}}, {"a": {"relative": scaled(0.6)}, "b": {"relative": BASE}}, 0.25
    )
    assert regressed
    assert rows[0][0] == "a" and rows[0][3] == "-40.0%" and rows[0][-1] == "REGRESSION"
    assert rows[1][0] == "b" and rows[1][-1] == "new"


class FixedRounds:
    """Measurement on fixed numbers: round i gives workload "a" the baseline scaled by factors[i]
    and every other workload the baseline itself; records which workloads each round measured."""

    def __init__(self, *factors: float) -> None:
        self.factors = list(factors)
        self.asked: list[str] = []

    def __call__(self, names: list[str]) -> dict[str, list[float]]:
        self.asked.extend(names)
        f = self.factors.pop(0)
        return {n: scaled(f) if n == "a" else BASE for n in names}


def test_a_suspect_that_recovers_on_re_measurement_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    measure = FixedRounds(0.6, 1.0)
    rounds, regressed = gate({"a": BASE, "b": BASE}, measure, ["a", "b"], 0.25)
    assert regressed == set()
    assert measure.asked == ["a", "b", "a"]  # only the suspect is measured again
    assert [v.slower for v in rounds[0]] == [True, False] and not rounds[1][0].slower
    assert "measuring again (2/3)" in capsys.readouterr().out


def test_a_regression_must_persist_through_every_round() -> None:
    rounds, regressed = gate({"a": BASE, "b": BASE}, FixedRounds(0.6, 0.6, 0.6), ["a", "b"], 0.25)
    assert regressed == {"a"} and len(rounds) == 3
    assert gate({"a": BASE}, FixedRounds(0.6, 0.6, 0.95), ["a"], 0.25)[1] == set()
    assert gate({"a": BASE}, FixedRounds(0.6), ["a"], 0.25, repeats=0)[1] == {"a"}


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--samples", "0"], "--samples must be an integer >= 3 (got 0)"),
        (["--samples", "2"], "--samples must be an integer >= 3 (got 2)"),
        (["--threshold", "-0.1"], "--threshold must be a fraction in (0, 1)"),
        (["--threshold", "0"], "--threshold must be a fraction in (0, 1)"),
        (["--threshold", "1.5"], "--threshold must be a fraction in (0, 1)"),
        (["--threshold", "nan"], "--threshold must be a fraction in (0, 1)"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, err = run_check(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "no baseline at"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "the baseline must be a JSON object, not list"),
        ('{"schema": 1, "workloads": {}}', "baseline schema 1, this gate reads schema 2"),
        ('{"schema": 2}', "'workloads' must be a non-empty object"),
        ('{"schema": 2, "workloads": [1]}', "'workloads' must be a non-empty object"),
        ('{"schema": 2, "workloads": {"w": 3}}', "workloads.w must be an object"),
        ('{"schema": 2, "workloads": {"w": {}}}', "workloads.w.relative must be a list of at"),
        ('{"schema": 2, "workloads": {"w": {"relative": [1, 2]}}}', "at least 3 numbers"),
        (
            '{"schema": 2, "workloads": {"w": {"relative": [1, "x", 2]}}}',
            "workloads.w.relative must hold positive finite numbers only",
        ),
        (
            '{"schema": 2, "workloads": {"w": {"relative": [1, 0, 2]}}}',
            "positive finite numbers only",
        ),
    ],
)
def test_bad_baselines_exit_2_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "throughput.json"
    if content is not None:
        path.write_text(content)
    code, err = run_check(capsys, "--baseline", str(path))
    assert code == 2
    assert err.startswith("error: ") and str(path) in err and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_slowdown_factor_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(regression.SLOWDOWN_ENV, "0.5")
    code, err = run_check(capsys, "--update-baseline", "--baseline", "/nonexistent/x.json")
    assert code == 2
    assert err.startswith(f"error: {regression.SLOWDOWN_ENV} must be a number >= 1, e.g. 1.5")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_committed_baseline_is_readable() -> None:
    ratios = load_baseline(ROOT / "results" / "baselines" / "throughput.json")
    assert set(ratios) == {w.name for w in regression.WORKLOADS}


def harness_check(*args: str, slowdown: str = "") -> subprocess.CompletedProcess[str]:
    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if slowdown:
        env[regression.SLOWDOWN_ENV] = slowdown
    return subprocess.run(
        [sys.executable, "-m", "harness", "check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow
def test_end_to_end_baseline_then_pass_then_injected_regression(tmp_path: Path) -> None:
    path = tmp_path / "throughput.json"
    update = harness_check("--update-baseline", "--samples", "5", "--baseline", str(path))
    assert update.returncode == 0, update.stderr
    written = json.loads(path.read_text())
    assert written["schema"] == 2 and written["threads"] == 1 and written["layout"] == "per_task"
    assert set(written["load"]) >= {"loadavg_1_5_15", "cpu_percent", "cpu_percent_others"}
    assert all(len(w["relative"]) == 5 for w in written["workloads"].values())
    assert "machine load: load average" in update.stdout

    same = harness_check("--samples", "5", "--baseline", str(path))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no throughput regression" in same.stdout

    slowed = harness_check("--samples", "5", "--baseline", str(path), slowdown="2")
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    assert "throughput regression in" in slowed.stderr and "in each of 3 rounds" in slowed.stderr
    # at least one workload: under heavy load the sinusoid ratio can miss a round (README there)
    assert "REGRESSION" in slowed.stdout


def test_the_gate_says_when_its_baseline_comes_from_another_cpu(tmp_path: Path) -> None:
    from harness import regression
    from harness.machine import cpu_model

    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"machine": {"cpu_model": cpu_model()}}))
    assert "this CPU model" in regression.baseline_machine_line(path)
    path.write_text(json.dumps({"machine": {"cpu_model": "Some Other CPU 9000"}}))
    line = regression.baseline_machine_line(path)
    assert line.startswith("NOTE: baseline measured on another CPU model (Some Other CPU 9000")
