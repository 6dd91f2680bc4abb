"""Issue 19's drift experiment, automated: does a ratio between two cases survive a neighbour
that loads the machine while only one of them runs?

A 2-case serial sweep (W = 1 and W = 2 workers, 32 Omniglot-shaped random-image tasks each, 40
timed runs) is run twice or more per condition, each time in a fresh process and results folder:

- quiet: nothing else runs;
- hogged: ``--hogs`` CPU-bound processes run from the start of the sweep until the W = 2 case
  starts, i.e. while the W = 1 (baseline) case runs.

For each sweep it reports W = 2's relative_pct and projected relative_pct against W = 1, from
the raw wall times (what the harness reported before drift control) and from the
drift-normalised ones (harness/drift.py; what the report uses now). Pass: the hogged figure is
within ``--tolerance`` (15 %) of the quiet one, for the normalised relative and projected columns.

    .venv/bin/python scripts/drift_experiment.py --out results/drift/experiment.json

A benchmark, not a test: it needs a quiet machine apart from its own hogs, and minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import report  # noqa: E402
from harness.machine import code_fingerprint, machine_info  # noqa: E402
from harness.store import RunFolder  # noqa: E402

SUITE = """
name = "drift_experiment"
description = "issue 19: W = 1 vs W = 2 on Omniglot-shaped random images, serial backend"
baseline = "w1-e1-t32-sum-o1"

[domain]
name = "random_images"
n_way = 5
k_shot = 1
k_query = 1

[base]
workers = 1
epochs = 1
tasks = 32
inner_steps = 1
order = 1
alpha = 0.4
beta = 0.01
jit_compile = false

[sweep]
workers = [1, 2]

[run]
checkpoints = []

[scales.quick]
runs = {runs}
seeds = [0]
block_runs = {block}
calibration = "{calibration}"
"""
HOG = "while True: pass"
W1, W2 = "w1-e1-t32-sum-o1", "w2-e1-t32-sum-o1"


def sweep(workdir: Path, args: argparse.Namespace, hogs: int) -> dict[str, Any]:
    """One sweep in a fresh process; ``hogs`` CPU-bound processes while the W = 1 case runs."""
    suite = workdir / "drift_experiment.toml"
    suite.write_text(SUITE.format(runs=args.runs, block=args.block, calibration=args.calibration))
    timeout_s = args.timeout
    results = workdir / "results"
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--scale", "quick",
           "--results-dir", str(results), "--quiet"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hogged = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
    hog_s = 0.0
    try:
        while proc.poll() is None:
            if time.monotonic() - started > timeout_s:
                proc.kill()
                raise SystemExit(f"drift experiment: a sweep took over {timeout_s:.0f} s; stopped")
            if hogged and _w2_started(results):
                hog_s = time.monotonic() - started
                for h in hogged:
                    h.kill()
                hogged = []
            time.sleep(0.05)
    finally:
        for h in hogged:
            h.kill()
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"drift experiment: the sweep failed ({proc.returncode}): {err[-500:]}")
    (folder,) = list(results.glob("drift_experiment/quick-*"))
    (results_,) = report.load([RunFolder(folder)])
    rows = {r["case"]: r for r in report.timing_rows(results_)}
    base, w2 = rows[W1], rows[W2]
    cases = results_.cases

    def raw(case_id: str, key: str) -> float:
        return statistics.fmean(r[key.replace("_s", "_raw_s")] for r in cases[case_id].runs)

    return {
        "hogs": hogs,
        "hogged_s": round(hog_s, 1),
        "normalised": {
            "relative_pct": w2["relative_pct"],
            "projected_pct": 100 * w2["projected_s"] / base["projected_s"],
        },
        "raw": {
            "relative_pct": 100 * raw(W2, "wall_s") / raw(W1, "wall_s"),
            "projected_pct": 100 * raw(W2, "projected_s") / raw(W1, "projected_s"),
        },
        "drift_max": {"w1": base["drift_max"], "w2": w2["drift_max"]},
        "wall_s": {"w1": base["wall_s"], "w2": w2["wall_s"]},
        "wall_raw_s": {"w1": base["wall_raw_s"], "w2": w2["wall_raw_s"]},
    }


def _w2_started(results: Path) -> bool:
    for records in results.glob("drift_experiment/quick-*/records.jsonl"):
        text = records.read_text()
        if '"case_id": "w2-e1-t32-sum-o1"' in text:
            return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="timed runs per case (default 40)")
    parser.add_argument("--block", type=int, default=4, help="runs per calibration block")
    parser.add_argument("--hogs", type=int, default=1, help="CPU-bound neighbours (default 1)")
    parser.add_argument(
        "--calibration",
        choices=("baseline", "matched"),
        default="baseline",
        help="the suite's calibration job (default baseline: a step of the W = 1 case)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="sweeps per condition")
    parser.add_argument("--tolerance", type=float, default=0.15, help="pass band (0.15: 15 %%)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per sweep")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    for name in ("runs", "block", "hogs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    sweeps: dict[str, list[dict[str, Any]]] = {"quiet": [], "hogged": []}
    for repeat in range(args.repeats):
        for condition in ("quiet", "hogged"):
            with tempfile.TemporaryDirectory() as tmp:
                hogs = args.hogs if condition == "hogged" else 0
                result = sweep(Path(tmp), args, hogs)
            sweeps[condition].append(result)
            print(f"repeat {repeat + 1} {condition}: {json.dumps(result)}", flush=True)
    summary: dict[str, Any] = {}
    passed = True
    for kind in ("raw", "normalised"):
        for column in ("relative_pct", "projected_pct"):
            quiet = statistics.fmean(s[kind][column] for s in sweeps["quiet"])
            hogged = statistics.fmean(s[kind][column] for s in sweeps["hogged"])
            off = hogged / quiet - 1
            summary[f"{kind}_{column}"] = {"quiet": quiet, "hogged": hogged, "off": off}
            if kind == "normalised":
                passed &= abs(off) <= args.tolerance
            print(f"{kind:>10} {column:>13}: quiet {quiet:6.1f} %, hogged {hogged:6.1f} % "
                  f"({100 * off:+.1f} %)")  # fmt: skip
    verdict = "PASS" if passed else "FAIL"
    print(f"{verdict}: normalised figures within {100 * args.tolerance:.0f} % of quiet")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "experiment": "issue 19 drift: W = 2 vs W = 1, baseline case hogged",
            "settings": vars(args) | {"out": str(args.out)},
            "machine": machine_info(),
            "code": code_fingerprint(),
            "sweeps": sweeps,
            "summary": summary,
            "verdict": verdict,
        }
        args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
