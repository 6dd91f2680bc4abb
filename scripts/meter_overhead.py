"""What the harness's own bookkeeping between two runs costs the next run.

One process, one learner per case of a suite, warm; then blocks of ``--runs`` timed runs
interleaved round-robin over these modes (so drift hits every mode alike):

- ``bare``: back to back, timed with ``perf_counter`` only (as pytest-benchmark's loop);
- ``pause-1ms`` / ``pause-5ms``: a sleep before each run, outside the timed region;
- ``meter``: inside ``harness.measure.RunMeter`` as ``harness run`` times it;
- ``meter+record``: the meter plus the run record built, appended and fsync'ed, as ``harness run``.

Reports each mode's mean and median per case. Why it exists: TensorFlow's thread pools go to sleep
when idle, so anything slow between two runs (a psutil scan of every process took 2 ms here)
makes the next run slower, and the harness then disagreed with pytest-benchmark.

    .venv/bin/python scripts/meter_overhead.py --out results/tool_agreement/meter-overhead.json

A benchmark, not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.machine import code_fingerprint, machine_info  # noqa: E402
from harness.measure import RunMeter  # noqa: E402
from harness.runner import build, run_fields  # noqa: E402
from harness.suite import load_suite  # noqa: E402


def modes(learner: Any, case: Any, meter: RunMeter, sink: Any) -> dict[str, Callable[[], float]]:
    """Each mode: one run, returning its timed seconds."""

    def bare() -> float:
        begin = time.perf_counter()
        learner.run()
        return time.perf_counter() - begin

    def pause(seconds: float) -> Callable[[], float]:
        def run() -> float:
            time.sleep(seconds)
            return bare()

        return run

    def metered(record: bool) -> Callable[[], float]:
        def run() -> float:
            with meter:
                result = learner.run()
            assert meter.result is not None
            if record:
                sink.write(json.dumps(run_fields(case, result, meter)) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
            return meter.result.wall_s

        return run

    return {
        "bare": bare,
        "pause-1ms": pause(0.001),
        "pause-5ms": pause(0.005),
        "meter": metered(False),
        "meter+record": metered(True),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="main", help="suite (default main)")
    parser.add_argument("--scale", default="quick", help="scale (default quick)")
    parser.add_argument("--runs", type=int, default=25, help="runs per block (default 25)")
    parser.add_argument("--blocks", type=int, default=12, help="blocks per mode (default 12)")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    suite = load_suite(args.suite, args.scale)
    meter = RunMeter()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "records.jsonl", "a") as sink:
        for case in suite.cases:
            learner, _config, backend = build(case, suite.plan.seeds[0])
            try:
                for _ in range(20):  # tracing, layout choice, caches
                    learner.run()
                timed = modes(learner, case, meter, sink)
                walls: dict[str, list[float]] = {mode: [] for mode in timed}
                for _ in range(args.blocks):
                    for mode, run in timed.items():
                        walls[mode] += [run() for _ in range(args.runs)]
            finally:
                backend.close()
            figures[case.case_id] = {
                mode: {
                    "mean_ms": 1e3 * statistics.fmean(w),
                    "median_ms": 1e3 * statistics.median(w),
                }
                for mode, w in walls.items()
            }
            shown = ", ".join(f"{m} {f['median_ms']:.2f}" for m, f in figures[case.case_id].items())
            print(f"{case.case_id} median ms: {shown}", flush=True)
    meter.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "what": "time per run (ms) by what happens between runs; modes interleaved in blocks",
            "suite": args.suite,
            "scale": args.scale,
            "runs_per_block": args.runs,
            "blocks": args.blocks,
            "peak_rss_method": meter.sampler.memory.method,
            "cases": figures,
            "machine": machine_info(),
            "code": code_fingerprint(),
        }
        args.out.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
