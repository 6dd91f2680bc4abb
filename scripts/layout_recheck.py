"""Issue 19's layout experiment: does a bad layout choice in the cache stick?

For the 32-task Omniglot-shaped meta step (our net, first order) and its same-work control (one
task of 5-way 32-shot), each in a fresh process:

- ``fresh``: an empty layout cache: the first step searches, and the choice is cached;
- ``bad cache``: the fresh cache with every entry's layout replaced by ``--bad`` (default
  ``per_task/8``) and no other timing in it, as an edited or stale cache leaves it;
- ``bad forced``: ``DMAML_LAYOUT=--bad``, to show what sticking with it would cost.

Each process times ``--steps`` steps after its first (the first pays the tracing and the choice)
and reports the median. Pass: no ``bad cache`` median more than ``--tolerance`` (15 %) above
``fresh`` (separate processes minutes apart: a faster one is drift, not a problem). Run it on a
quiet machine; with ``TF_ENABLE_ONEDNN_OPTS=1`` the grouped layouts are candidates too (as on
the AVX-512 machine of the issue).

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python scripts/layout_recheck.py \\
        --out results/layout_recheck/onednn-on.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASES = {"step_t32": (1, 32), "control_5w32s": (32, 1)}  # (shots, tasks)


def child(case: str, steps: int) -> dict[str, Any]:
    """One process: build the step, take the first (choice), time ``steps`` more."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from dmaml_core.maml import CompiledMaml, MamlConfig, to_tensors
    from dmaml_core.tasks.random_images import RandomImages

    shots, tasks = CASES[case]
    images = RandomImages(n_way=5, k_shot=shots, k_query=shots)
    model = images.model()
    maml = CompiledMaml(model, MamlConfig(alpha=0.4, order=1, loss="xent"))
    batch = images.sample(np.random.default_rng(0), tasks)
    params = to_tensors(model.init(0))
    opt = maml.init_optimizer(params)

    def step() -> None:
        float(maml.step(params, opt, batch)[2].loss_sum)

    begin = time.perf_counter()
    step()
    first_s = time.perf_counter() - begin
    times = []
    for _ in range(steps):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    layout = maml.layout.as_record() if maml.layout is not None else None
    return {"median_ms": 1e3 * float(np.median(times)), "first_s": first_s, "layout": layout}


def spawn(case: str, steps: int, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, "--steps", str(steps)],
        env=env, capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"layout recheck: {case} failed: {out.stderr.strip()[-400:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per process")
    parser.add_argument("--bad", default="per_task/8", help="the layout written into the cache")
    parser.add_argument("--tolerance", type=float, default=0.15, help="pass band (0.15: 15 %%)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per process")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return 0
    if args.steps < 3:
        parser.error("--steps must be >= 3")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "layouts.json"
        env = {**os.environ, "DMAML_LAYOUT_CACHE": str(cache)}
        env.pop("DMAML_LAYOUT", None)
        for case in CASES:
            results.setdefault(case, {})["fresh"] = spawn(case, args.steps, env, args.timeout)
        entries = json.loads(cache.read_text())
        for entry in entries.values():
            entry.update(layout=args.bad, median_ms={}, dropped={}, provisional=False)
        cache.write_text(json.dumps(entries))
        for case in CASES:
            results[case]["bad cache"] = spawn(case, args.steps, env, args.timeout)
        forced = {**env, "DMAML_LAYOUT": args.bad, "DMAML_LAYOUT_CACHE": "off"}
        for case in CASES:
            results[case]["bad forced"] = spawn(case, args.steps, forced, args.timeout)
    passed = True
    for case, runs in results.items():
        ratio = runs["bad cache"]["median_ms"] / runs["fresh"]["median_ms"]
        runs["bad_cache_vs_fresh"] = ratio
        passed &= ratio <= 1 + args.tolerance  # faster than fresh is fine (drift between processes)
        print(f"{case}: " + ", ".join(
            f"{name} {r['median_ms']:.1f} ms ({(r['layout'] or {}).get('layout', '?')})"
            for name, r in runs.items() if isinstance(r, dict)
        ) + f"; bad cache / fresh = {ratio:.2f}")  # fmt: skip
    verdict = "PASS" if passed else "FAIL"
    print(f"{verdict}: a bad cached layout at most {100 * args.tolerance:.0f} % slower than fresh")
    if args.out:
        sys.path.insert(0, str(ROOT))
        from harness.machine import code_fingerprint, machine_info

        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "experiment": "issue 19: a bad layout in the cache, re-checked at the first step",
            "settings": {k: str(v) for k, v in vars(args).items() if k != "child"},
            "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
            "machine": machine_info(),
            "code": code_fingerprint(),
            "results": results,
            "verdict": verdict,
        }
        args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
