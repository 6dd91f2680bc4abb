"""The throughput regression gate behind ``python -m harness check``.

Shared CI machines drift by tens of percent, so raw tasks/s are not compared directly: each
workload sample is divided by the time of a fixed calibration workload measured in the same
process right beside it, giving a *relative* throughput that cancels most of the machine's speed.
A regression is reported only when the relative throughput fell by more than ``threshold`` AND the
fall is statistically significant (one-sided Welch t-test, as asv's ``is_different``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tabulate import tabulate

from harness.stats import summarize, welch
from harness.store import StoreError, write_json_atomic

SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Workload:
    name: str
    domain: str
    params: dict[str, Any]
    tasks: int
    order: Literal[1, 2]
    runs_per_sample: int
    jit_compile: bool = False


WORKLOADS = (
    Workload("sinusoid-w1-t10-o2", "sinusoid", {}, 10, 2, 50),
    Workload("omniglot_shape-w1-t8-o1", "random_images", {}, 8, 1, 3),
)


def calibration() -> Callable[[], float]:
    """A fixed TensorFlow workload (matmuls plus a small conv): seconds per call."""
    import tensorflow as tf

    a = tf.random.stateless_normal([256, 256], seed=[1, 2])
    x = tf.random.stateless_normal([16, 14, 14, 32], seed=[3, 4])
    k = tf.random.stateless_normal([3, 3, 32, 32], seed=[5, 6])

    @tf.function
    def work() -> tf.Tensor:
        m = a
        for _ in range(8):
            m = tf.matmul(m, a) / 16.0
        return tf.reduce_sum(m) + tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME"))

    work().numpy()

    def timed() -> float:
        start = time.perf_counter()
        work().numpy()
        return time.perf_counter() - start

    return timed


def workload_timer(w: Workload) -> Callable[[], float]:
    """Seconds per DMAML run (W = 1, E = 1) of a workload, warmed up."""
    from dmaml_core.backends import SerialBackend
    from dmaml_core.dmaml import CentralLearner
    from dmaml_core.maml import MamlConfig
    from dmaml_core.tasks import make_domain
    from dmaml_core.weight_generators import Plain
    from dmaml_core.worker import WorkerConfig

    domain = make_domain(w.domain, **w.params)
    cfg = MamlConfig(
        order=w.order,
        loss=domain.loss,
        alpha=0.01 if w.domain == "sinusoid" else 0.4,
        jit_compile=w.jit_compile,
    )
    learner = CentralLearner(
        domain.model().init(0),
        SerialBackend(WorkerConfig(domain, cfg, tasks_per_step=w.tasks), 1),
        Plain(),
    )
    learner.run()  # warm-up: tracing and compilation

    def timed() -> float:
        start = time.perf_counter()
        for _ in range(w.runs_per_sample):
            learner.run()
        return (time.perf_counter() - start) / w.runs_per_sample

    return timed


def measure(samples: int) -> dict[str, Any]:
    """Interleave calibration and workload samples so drift hits both alike."""
    calibrate = calibration()
    out: dict[str, Any] = {}
    for w in WORKLOADS:
        run = workload_timer(w)
        raw, relative = [], []
        for _ in range(samples):
            c = min(calibrate() for _ in range(3))
            seconds = run()
            tasks_per_s = w.tasks / seconds
            raw.append(tasks_per_s)
            relative.append(tasks_per_s * c)  # tasks per calibration-workload time
        out[w.name] = {
            "tasks_per_s": raw,
            "relative": relative,
            "meta_steps_per_s": [r / w.tasks for r in raw],
        }
    return out


def compare(
    baseline: dict[str, Any], current: dict[str, Any], threshold: float
) -> tuple[list[list[Any]], bool]:
    rows, regressed = [], False
    for name, now in current.items():
        if name not in baseline:
            rows.append([name, "-", f"{np.mean(now['relative']):.4g}", "-", "-", "new"])
            continue
        before = baseline[name]["relative"]
        change = np.mean(now["relative"]) / np.mean(before) - 1.0
        test = welch(now["relative"], before)
        one_sided_p = test.p_value / 2 if test.difference < 0 else 1 - test.p_value / 2
        slower = bool(change < -threshold and one_sided_p < SIGNIFICANCE)
        regressed |= slower
        verdict = "REGRESSION" if slower else ("faster" if change > threshold else "ok")
        rows.append(
            [
                name,
                f"{np.mean(before):.4g}",
                f"{np.mean(now['relative']):.4g}",
                f"{change:+.1%}",
                f"{one_sided_p:.3g}",
                verdict,
            ]
        )
    return rows, regressed


def check(path: Path, update: bool, threshold: float, samples: int) -> int:
    from harness.machine import machine_info

    current = measure(samples)
    if update:
        write_json_atomic(
            path, {"schema": 1, "machine": machine_info(), "samples": samples, "workloads": current}
        )
        for name, data in current.items():
            s = summarize(data["tasks_per_s"])
            print(f"{name}: {s.format(1)} tasks/s (relative {np.mean(data['relative']):.4g})")
        print(f"baseline written to {path}")
        return 0
    if not path.exists():
        raise StoreError(f"no baseline at {path}; create one with --update-baseline")
    import json

    baseline = json.loads(path.read_text())
    if baseline.get("schema") != 1:
        raise StoreError(f"{path}: unknown baseline schema {baseline.get('schema')!r}")
    rows, regressed = compare(baseline["workloads"], current, threshold)
    print(
        tabulate(
            rows, ["workload", "baseline (rel.)", "now (rel.)", "change", "p (slower)", "verdict"]
        )
    )
    for name, data in current.items():
        print(f"{name}: {summarize(data['tasks_per_s']).format(1)} tasks/s on this machine")
    if regressed:
        print(
            f"throughput regression: slower by more than {threshold:.0%} and significant "
            f"(p < {SIGNIFICANCE})",
            file=sys.stderr,
        )
        return 1
    print("no throughput regression")
    return 0
