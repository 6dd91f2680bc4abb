"""The throughput regression gate behind ``python -m harness check``.

Why it is built this way: CI shares a 2-core machine with other jobs, and raw tasks/s moves by
tens of percent with a neighbour's load. The first version of this gate (one calibration-vs-
workload ratio averaged over samples, TensorFlow's default thread pools, a matmul calibration for
every workload) failed twice on unchanged code while the machine was busy (-40 %, -41 %). So:

- **Single-threaded.** TensorFlow runs with one intra-op and one inter-op thread during the gate.
  With the default two-thread pools every op waits for its slowest thread, so one busy neighbour on
  one core slows the workload by an amount that depends on its op sizes; one thread keeps a core to
  itself far more often. The gate therefore measures single-thread throughput of the DMAML code
  path; thread scaling is what the ``parallel_speedup`` suite measures, not this gate.
- **Matched calibration.** Each workload is paired with a fixed pure-TensorFlow workload of the same
  kind of ops (small batched matmuls with gradients for the MLP workload, a strided conv stack with
  gradients for the conv workload), which does not import ``dmaml_core`` and so does not change
  when the code under test does. Load slows both alike; a code change slows only the workload.
- **Interleaved pairs, median of ratios.** Calibration and workload alternate (c, w, c, w, ...),
  each sample lasting about as long as the other; every pair gives a ratio (tasks per
  calibration-time, "relative throughput") and the gate compares the *median* of the ratios with
  the baseline's median, so a burst of load that hits a few pairs does not move it.
- **Size, significance and persistence.** A workload is *suspect* when its median fell by more than
  ``threshold`` and the fall is significant (one-sided Welch t-test on the ratios, p < 0.05).
  A suspect workload is measured again, up to ``REPEATS`` more rounds; it is a regression only if
  every round says so.
- **One code path.** The conv workload runs with a fixed layout (``DMAML_LAYOUT=per_task``, what
  ``auto`` runs at first order): left alone, ``dmaml_core.layouts`` picks the layout by timing
  candidates within a time budget, so which path the gate measured would depend on the load during
  that search and on the disk cache, and a different pick would read as a regression or hide one.
- **Load on record.** The load average and CPU use of the machine (all processes, this one, the
  others) during the measurement are printed and stored in a baseline written by
  ``--update-baseline``, so a number taken on a busy machine is visible as such.

Testing hook (not for normal use): the environment variable ``DMAML_BENCH_INJECT_SLOWDOWN``
(a number >= 1, e.g. ``1.5``) makes every workload sample that many times slower by sleeping
``(factor - 1)`` times its measured duration after it; calibration samples are not touched. It
exists so that the gate's detection rate can be measured on unchanged code
(``results/baselines/README.md``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil
from tabulate import tabulate

from harness.calibration import Calibration, calibration
from harness.stats import summarize, welch
from harness.store import StoreError, write_json_atomic

SCHEMA = 2
SIGNIFICANCE = 0.05
MIN_SAMPLES = 3
REPEATS = 2  # extra rounds for a suspect workload before it counts as a regression
THREADS = 1  # TensorFlow intra- and inter-op threads during the gate
SLOWDOWN_ENV = "DMAML_BENCH_INJECT_SLOWDOWN"
LAYOUT_ENV = "DMAML_LAYOUT"  # dmaml_core.layouts: forces the conv net's layout
LAYOUT = "per_task"

Timer = Callable[[], float]


@dataclass(frozen=True)
class Workload:
    name: str
    domain: str
    params: dict[str, Any]
    tasks: int
    order: Literal[1, 2]
    runs_per_sample: int
    calibration: Calibration
    jit_compile: bool = False


WORKLOADS = (
    Workload("sinusoid-w1-t10-o2", "sinusoid", {}, 10, 2, 100, "mlp"),
    Workload("omniglot_shape-w1-t8-o1", "random_images", {}, 8, 1, 6, "conv"),
)


@dataclass(frozen=True)
class Verdict:
    """One workload in one round: how its median relative throughput moved against the baseline."""

    name: str
    before: float  # baseline median ratio
    now: float  # this round's median ratio
    change: float  # now / before - 1
    p_slower: float  # one-sided Welch p-value for "now is lower"
    threshold: float

    @property
    def slower(self) -> bool:
        """Suspect: slower by more than the threshold, and significantly so."""
        return self.change < -self.threshold and self.p_slower < SIGNIFICANCE

    @property
    def label(self) -> str:
        return "slower" if self.slower else ("faster" if self.change > self.threshold else "ok")


# --- validation ---------------------------------------------------------------------------------


def check_arguments(samples: object, threshold: object) -> None:
    """Refuse what would make the gate meaningless: NaN medians from 0 samples, a threshold that
    flags every run (<= 0) or none (>= 1)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < MIN_SAMPLES:
        raise ValueError(f"--samples must be an integer >= {MIN_SAMPLES} (got {samples!r})")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 < threshold < 1.0
    ):
        raise ValueError(
            f"--threshold must be a fraction in (0, 1), e.g. 0.25 for 25 % (got {threshold!r})"
        )


def injected_slowdown() -> float:
    """The testing hook's factor (1.0 when unset)."""
    raw = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        factor = math.nan
    if not (math.isfinite(factor) and factor >= 1.0):
        raise ValueError(f"{SLOWDOWN_ENV} must be a number >= 1, e.g. 1.5 (got {raw!r})")
    return factor


def _ratios(path: Path, name: str, entry: object) -> list[float]:
    where = f"{path}: workloads.{name}"
    if not isinstance(entry, dict):
        raise StoreError(f"{where} must be an object with a 'relative' list, not {entry!r:.40}")
    values = entry.get("relative")
    if not isinstance(values, list) or len(values) < MIN_SAMPLES:
        raise StoreError(f"{where}.relative must be a list of at least {MIN_SAMPLES} numbers")
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        for v in values
    ):
        raise StoreError(f"{where}.relative must hold positive finite numbers only")
    return [float(v) for v in values]


def baseline_machine_line(path: Path) -> str:
    """Where the baseline was measured, against this machine: a ratio to a calibration job
    carries across speeds of one CPU model, less surely across models (other kernels, ISA)."""
    from harness.machine import cpu_model

    try:
        then = str(json.loads(path.read_text()).get("machine", {}).get("cpu_model", "?"))
    except (OSError, ValueError, AttributeError):
        then = "?"
    here = cpu_model()
    if then == here:
        return f"baseline measured on this CPU model ({here})"
    return (
        f"NOTE: baseline measured on another CPU model ({then}; this machine: {here}): the "
        "ratios carry over only as far as both CPUs run the kernels alike"
    )


def load_baseline(path: Path) -> dict[str, list[float]]:
    """The baseline's ratios per workload, or a one-line StoreError naming the file and what is
    wrong (checked before anything is measured, so a bad file fails in a second)."""
    hint = "re-measure it with `python -m harness check --update-baseline`"
    if not path.exists():
        raise StoreError(f"no baseline at {path}; create one with --update-baseline")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: cannot read the baseline ({err})") from None
    except json.JSONDecodeError as err:
        raise StoreError(f"{path}: not valid JSON ({err}); {hint}") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path}: the baseline must be a JSON object, not {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise StoreError(
            f"{path}: baseline schema {data.get('schema')!r}, this gate reads schema {SCHEMA}; "
            + hint
        )
    workloads = data.get("workloads")
    if not isinstance(workloads, dict) or not workloads:
        raise StoreError(f"{path}: 'workloads' must be a non-empty object of workload -> samples")
    return {str(name): _ratios(path, str(name), entry) for name, entry in workloads.items()}


# --- measurement --------------------------------------------------------------------------------


def workload_timer(w: Workload) -> Timer:
    """Seconds per DMAML run (W = 1, E = 1) of a workload, warmed up; slowed by the testing hook's
    factor when ``DMAML_BENCH_INJECT_SLOWDOWN`` is set."""
    from dmaml_core.backends import SerialBackend
    from dmaml_core.dmaml import CentralLearner
    from dmaml_core.maml import MamlConfig
    from dmaml_core.tasks import make_domain
    from dmaml_core.weight_generators import Plain
    from dmaml_core.worker import WorkerConfig

    factor = injected_slowdown()
    os.environ[LAYOUT_ENV] = LAYOUT  # read when the first step chooses its layout
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
        elapsed = time.perf_counter() - start
        if factor > 1.0:
            time.sleep(elapsed * (factor - 1.0))
            elapsed = time.perf_counter() - start
        return elapsed / w.runs_per_sample

    return timed


@dataclass
class Pair:
    """A workload's timer and its calibration, built once and reused by every round."""

    workload: Workload
    run: Timer
    calibrate: Timer

    def sample(self, samples: int) -> dict[str, list[float]]:
        """``samples`` interleaved (calibration, workload) pairs; ratio = tasks per calibration
        time, computed per pair."""
        raw, relative = [], []
        for _ in range(samples):
            c = self.calibrate()
            seconds = self.run()
            raw.append(self.workload.tasks / seconds)
            relative.append(self.workload.tasks / seconds * c)
        return {"relative": relative, "tasks_per_s": raw}


def build(workloads: Iterable[Workload] = WORKLOADS) -> dict[str, Pair]:
    from dmaml_core.backends.host import pin_threads

    if pin_threads(THREADS) != THREADS:
        raise RuntimeError(
            "the gate needs TensorFlow single-threaded, but its thread pools were already started "
            "in this process; run `python -m harness check` in a fresh process"
        )
    pairs = {}
    for w in workloads:
        run = workload_timer(w)
        start = time.perf_counter()
        run()
        pairs[w.name] = Pair(w, run, calibration(w.calibration, time.perf_counter() - start))
    return pairs


class LoadProbe:
    """CPU use of the machine between construction and ``read()``: all processes, this one, and the
    others (what a neighbour took), in percent of all cores; plus the load averages."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        psutil.cpu_percent(None)
        self.process.cpu_percent(None)

    def read(self) -> dict[str, Any]:
        cores = psutil.cpu_count() or 1
        total = psutil.cpu_percent(None)
        own = self.process.cpu_percent(None) / cores
        return {
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "cores": cores,
            "cpu_percent": round(total, 1),
            "cpu_percent_this_process": round(own, 1),
            "cpu_percent_others": round(max(0.0, total - own), 1),
        }


def describe_load(load: dict[str, Any]) -> str:
    avg = "/".join(f"{x:.2f}" for x in load["loadavg_1_5_15"])
    return (
        f"machine load: load average {avg} (1/5/15 min) on {load['cores']} cores; CPU during the "
        f"measurement {load['cpu_percent']:.0f} % ({load['cpu_percent_this_process']:.0f} % this "
        f"process, {load['cpu_percent_others']:.0f} % others)"
    )


# --- comparison ---------------------------------------------------------------------------------


def judge(name: str, before: list[float], now: list[float], threshold: float) -> Verdict:
    """Median of ratios against the baseline's median, with a one-sided Welch p-value."""
    b, n = float(np.median(before)), float(np.median(now))
    test = welch(now, before)
    if math.isnan(test.p_value):
        p = 1.0
    else:
        p = test.p_value / 2 if test.difference < 0 else 1 - test.p_value / 2
    return Verdict(name, b, n, n / b - 1.0, p, threshold)


def compare(
    baseline: dict[str, Any], current: dict[str, Any], threshold: float
) -> tuple[list[list[Any]], bool]:
    """One round as table rows, and whether any workload is suspect. Both sides map a workload name
    to ``{"relative": [ratios]}``; a workload absent from the baseline is reported as new."""
    rows: list[list[Any]] = []
    regressed = False
    for name, now in current.items():
        if name not in baseline:
            rows.append([name, "-", f"{np.median(now['relative']):.4g}", "-", "-", "new"])
            continue
        v = judge(name, baseline[name]["relative"], now["relative"], threshold)
        regressed |= v.slower
        rows.append(_row(v, "REGRESSION" if v.slower else v.label))
    return rows, regressed


def _row(v: Verdict, verdict: str) -> list[Any]:
    return [
        v.name,
        f"{v.before:.4g}",
        f"{v.now:.4g}",
        f"{v.change:+.1%}",
        f"{v.p_slower:.3g}",
        verdict,
    ]


def gate(
    baseline: dict[str, list[float]],
    measure: Callable[[list[str]], dict[str, list[float]]],
    names: list[str],
    threshold: float,
    repeats: int = REPEATS,
) -> tuple[list[list[Verdict]], set[str]]:
    """Measure every workload once; re-measure only the suspect ones, up to ``repeats`` more rounds;
    return every round's verdicts and the workloads that were suspect in *all* their rounds.
    ``measure(names)`` returns the ratios of those workloads."""
    rounds: list[list[Verdict]] = []
    suspect = list(names)
    for attempt in range(1 + repeats):
        current = measure(suspect)
        verdicts = [judge(n, baseline[n], current[n], threshold) for n in suspect if n in baseline]
        rounds.append(verdicts)
        suspect = [v.name for v in verdicts if v.slower]
        if not suspect:
            break
        if attempt < repeats:
            print(f"suspect: {', '.join(suspect)}; measuring again ({attempt + 2}/{1 + repeats})")
    return rounds, set(suspect)


# --- the command --------------------------------------------------------------------------------


def check(path: Path, update: bool, threshold: float, samples: int) -> int:
    """Exit status: 0 no regression (or baseline written), 1 regression; bad input raises
    ValueError / StoreError, which the CLI turns into one line and exit 2."""
    from harness.machine import machine_info

    check_arguments(samples, threshold)
    injected_slowdown()
    baseline = None if update else load_baseline(path)

    probe = LoadProbe()
    pairs = build()
    measured: dict[str, dict[str, list[float]]] = {}

    def measure(names: list[str]) -> dict[str, list[float]]:
        """One round of the named workloads; every round's samples are kept for the summary."""
        latest = {}
        for name in names:
            data = pairs[name].sample(samples)
            kept = measured.setdefault(name, {"relative": [], "tasks_per_s": []})
            for key in kept:
                kept[key].extend(data[key])
            latest[name] = data["relative"]
        return latest

    if update or baseline is None:
        measure(list(pairs))
        load = probe.read()
        workloads = {
            name: {
                "relative": d["relative"],
                "tasks_per_s": d["tasks_per_s"],
                "median_relative": float(np.median(d["relative"])),
                "calibration": pairs[name].workload.calibration,
            }
            for name, d in measured.items()
        }
        write_json_atomic(
            path,
            {
                "schema": SCHEMA,
                "machine": machine_info(),
                "load": load,
                "samples": samples,
                "threads": THREADS,
                "layout": LAYOUT,
                "injected_slowdown": injected_slowdown(),
                "workloads": workloads,
            },
        )
        for name, d in measured.items():
            print(
                f"{name}: {summarize(d['tasks_per_s']).format(1)} tasks/s, median relative "
                f"{np.median(d['relative']):.4g}"
            )
        print(describe_load(load))
        print(f"baseline written to {path}")
        return 0

    rounds, regressed = gate(baseline, measure, list(pairs), threshold)
    load = probe.read()
    rows = []
    for i, verdicts in enumerate(rounds, start=1):
        for v in verdicts:
            final = i == len(rounds) or v.name not in {u.name for u in rounds[i]}
            verdict = v.label
            if v.slower:
                verdict = "REGRESSION" if v.name in regressed and final else "slower (re-measured)"
            rows.append([i, *_row(v, verdict)])
    for name in pairs:
        if name not in baseline:
            rows.append([1, name, "-", f"{np.median(measured[name]['relative']):.4g}", "-", "-"])
            rows[-1].append("new: not in the baseline")
    print(
        tabulate(
            rows,
            ["round", "workload", "baseline ratio", "now ratio", "change", "p", "verdict"],
        )
    )
    print(
        "ratio: the workload's tasks/s over its calibration job's (same TensorFlow ops on shared "
        "weights), interleaved pairs, median; unitless, so it carries across machine speeds"
    )
    for name, d in measured.items():
        print(f"{name}: {summarize(d['tasks_per_s']).format(1)} tasks/s on this machine")
    print(baseline_machine_line(path))
    print(describe_load(load))
    if regressed:
        print(
            f"throughput regression in {', '.join(sorted(regressed))}: median relative throughput "
            f"lower by more than {threshold:.0%}, significant (p < {SIGNIFICANCE}), in each of "
            f"{len(rounds)} rounds",
            file=sys.stderr,
        )
        return 1
    print("no throughput regression")
    return 0
