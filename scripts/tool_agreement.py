"""Issue 19 item 1: do `harness run` and the pytest-benchmark path agree on a case's steady-state
time per run?

Both tools time the same DMAML run of the same suite at the same scale. Their timed loops
differ only in what happens between two runs (the harness writes a record, checks calibration
and progress; pytest-benchmark calls its timer), and that gap matters: TensorFlow's thread pools
sleep when idle, so a run that starts after a few ms of bookkeeping is slower than one started
at once (measured: W = 1 of `main` 3.4 ms back to back, 4.1 ms after a 5 ms pause).

The unit of independence is one *process*: within a process consecutive runs are correlated,
and two processes on this 2-core VM differ by up to 20-30 % (load on the host, thread placement).
So the script runs ``--repeats`` pairs of processes, harness and pytest-benchmark back to back,
alternating which goes first, and per case compares the per-process steady-state medians (over
its seeds' timed runs, the warm-up excluded): the ratio harness / pytest-benchmark per pair, its
geometric mean and a Student-t ci95 over the pairs (n - 1 degrees of freedom) on the log scale.

Verdict, computed per case: "agree" when the ci95 of the ratio contains 1 and lies inside
``--margin`` (default 10 %); "differ" when it excludes 1; else "no difference detected" with the
ci's width (the pairs cannot tell a difference of that size from none: more pairs needed).

    .venv/bin/python scripts/tool_agreement.py --out results/tool_agreement/main-quick.json

A benchmark, not a test: it needs a quiet machine and a few minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.machine import code_fingerprint, machine_info  # noqa: E402
from harness.stats import t_critical  # noqa: E402


def harness_medians(workdir: Path, suite: str, scale: str, timeout: float) -> dict[str, float]:
    """One `harness run` process: per case, the median raw wall time of its timed runs."""
    results = workdir / "harness"
    command = [sys.executable, "-m", "harness", "run", suite, "--scale", scale, "--quiet"]
    command += ["--results-dir", str(results)]
    subprocess.run(command, cwd=ROOT, check=True, timeout=timeout, capture_output=True)
    (records,) = results.glob(f"{suite}/*/records.jsonl")
    walls: dict[str, list[float]] = {}
    for line in records.read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "run" and not record["warmup"]:
            walls.setdefault(record["case_id"], []).append(record["wall_s"])
    return {case: statistics.median(values) for case, values in walls.items()}


def pytest_medians(workdir: Path, suite: str, scale: str, timeout: float) -> dict[str, float]:
    """One pytest-benchmark process: per case, the median over its seeds' timed rounds."""
    out = workdir / "benchmark.json"
    command = [sys.executable, "-m", "pytest", "suites/test_suites.py", "--benchmark-only"]
    command += ["--suite", suite, "--scale", scale, "-q", "-p", "no:cacheprovider"]
    command += ["--benchmark-json", str(out), "--benchmark-save-data"]
    subprocess.run(command, cwd=ROOT, check=True, timeout=timeout, capture_output=True)
    rounds: dict[str, list[float]] = {}
    for bench in json.loads(out.read_text())["benchmarks"]:
        case = bench["extra_info"]["case"]
        case_id = f"w{case['workers']}-e{case['epochs']}-t{case['tasks']}"
        rounds.setdefault(case_id, []).extend(bench["stats"]["data"])
    return {case: statistics.median(values) for case, values in rounds.items()}


def same_case(harness_id: str, short_id: str) -> bool:
    return harness_id == short_id or harness_id.startswith(short_id + "-")


def verdict(ratios: list[float], margin: float) -> dict[str, Any]:
    """The geometric mean of the per-pair ratios and its ci95 (log scale), with the verdict."""
    logs = [math.log(r) for r in ratios]
    centre = statistics.fmean(logs)
    if len(logs) < 2:
        return {"ratio": math.exp(centre), "ci95": None, "verdict": "inconclusive (1 pair)"}
    half = t_critical(len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    low, high = math.exp(centre - half), math.exp(centre + half)
    if low > 1 or high < 1:
        word = "differ"
    elif low >= 1 - margin and high <= 1 + margin:
        word = "agree"
    else:
        word = f"no difference detected (ci95 wider than +-{margin:.0%})"
    return {"ratio": math.exp(centre), "ci95": [low, high], "verdict": word}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="main", help="suite name (default main)")
    parser.add_argument("--scale", default="quick", help="suite scale (default quick)")
    parser.add_argument("--repeats", type=int, default=4, help="pairs of processes (default 4)")
    parser.add_argument("--margin", type=float, default=0.10, help="agreement band (0.10: 10 %%)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    tools = {"harness": harness_medians, "pytest-benchmark": pytest_medians}
    pairs: list[dict[str, dict[str, float]]] = []
    for repeat in range(args.repeats):
        order = list(tools) if repeat % 2 == 0 else list(reversed(tools))
        pair: dict[str, dict[str, float]] = {}
        for tool in order:
            with tempfile.TemporaryDirectory() as tmp:
                begin = time.perf_counter()
                pair[tool] = tools[tool](Path(tmp), args.suite, args.scale, args.timeout)
                took = time.perf_counter() - begin
            print(f"pair {repeat + 1} {tool} ({took:.0f} s): {json.dumps(pair[tool])}", flush=True)
        pairs.append(pair)
    cases: dict[str, Any] = {}
    for case in pairs[0]["harness"]:
        short = next(s for s in pairs[0]["pytest-benchmark"] if same_case(case, s))
        harness = [p["harness"][case] for p in pairs]
        bench = [p["pytest-benchmark"][short] for p in pairs]
        cases[case] = {
            "harness_median_s": harness,
            "pytest_benchmark_median_s": bench,
            **verdict([h / b for h, b in zip(harness, bench, strict=True)], args.margin),
        }
        shown = cases[case]
        ci = shown["ci95"]
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        print(
            f"{case}: harness / pytest-benchmark {shown['ratio']:.3f}, ci95 {ci_text}: "
            f"{shown['verdict']}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "what": "steady-state median time per run, harness vs pytest-benchmark, "
            "per pair of back-to-back processes",
            "suite": args.suite,
            "scale": args.scale,
            "repeats": args.repeats,
            "margin": args.margin,
            "unit_of_independence": "a pair of processes (one per tool), run back to back",
            "cases": cases,
            "machine": machine_info(),
            "code": code_fingerprint(),
        }
        args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
