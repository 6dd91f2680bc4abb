"""``plan``: how long a suite will take, and how much memory, before it runs.

Per case, the figures come from the records of earlier runs of the *same* case configuration
(same config hash) under a results folder, where they exist, or else from a short calibration
here: build the backend, one warm-up run, a few timed runs and one validation. From them:

- *here*: setup + warm-up + runs x median run time + validations, per seed, on this machine;
- *projected* for N cores: the same, with each run's per-worker compute times packed onto N
  cores (longest first) plus the run's dispatch, collect and merge times: what a parallel backend
  (processes, or Ray over nodes like this one) would take. Labelled as a projection.
Peak memory is the peak RSS of the driver and its worker processes seen during those runs.
"""

from __future__ import annotations

import heapq
import statistics
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.store import StoreError, find_folders
from harness.suite import Case, Suite


@dataclass(frozen=True)
class CaseEstimate:
    case_id: str
    source: str  # "records (<folder>)" or "calibrated (k runs)"
    setup_s: float
    warmup_s: float
    run_s: float  # median timed run here
    run_projected_s: float  # median projected run on the planned cores
    validation_s: float
    peak_rss_bytes: int
    seeds: int
    runs: int
    validations: int
    # the first validation traces its graph; later ones (other seeds too) reuse it
    validation_first_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.seeds * self._per_seed(self.run_s) + self._tracing()

    @property
    def total_projected_s(self) -> float:
        return self.seeds * self._per_seed(self.run_projected_s) + self._tracing()

    def _tracing(self) -> float:
        return max(0.0, self.validation_first_s - self.validation_s) if self.validations else 0.0

    def _per_seed(self, run_s: float) -> float:
        return (
            self.setup_s + self.warmup_s + self.runs * run_s + self.validations * self.validation_s
        )


def packed_time(compute_s: list[float], cores: int) -> float:
    """Makespan of the workers' compute times on ``cores`` cores, longest first (LPT): the
    compute part of a run on a machine with that many free cores."""
    loads = [0.0] * max(1, min(cores, len(compute_s)))
    for seconds in sorted(compute_s, reverse=True):
        heapq.heapreplace(loads, loads[0] + seconds)
    return max(loads)


def projected_run_s(run: dict[str, Any], cores: int) -> float:
    overheads = run.get("dispatch_s", 0.0) + run.get("merge_s", 0.0)
    if run.get("backend") != "serial":
        overheads += run.get("collect_s", 0.0)
    if "compute_s" not in run:  # a record without the per-worker split: no projection possible
        return float(run["wall_s"])
    return overheads + packed_time(list(run["compute_s"]), cores)


def from_records(runs: list[dict[str, Any]], starts: list[dict[str, Any]],
                 validations: list[dict[str, Any]]) -> dict[str, float] | None:  # fmt: skip
    timed = [r for r in runs if not r.get("warmup")]
    warm = [r for r in runs if r.get("warmup")]
    if not timed or not warm:
        return None
    return {
        "setup_s": statistics.median(s.get("setup_s", 0.0) for s in starts) if starts else 0.0,
        "warmup_s": statistics.median(r["wall_s"] for r in warm),
        "runs": timed,  # type: ignore[dict-item]
        # the first validation of a case-seed may trace; the steady cost is that of the others
        "validation_s": statistics.median(
            v["validation_s"] for v in (validations[1:] or validations)
        )
        if validations
        else 0.0,
        "validation_first_s": validations[0]["validation_s"] if validations else 0.0,
        "peak_rss_bytes": max(r.get("peak_rss_bytes", 0) for r in runs),
    }


def history(suite: Suite, roots: list[Path]) -> dict[str, tuple[str, dict[str, Any]]]:
    """case id -> (folder, measured figures) from earlier results of the same configurations,
    preferring records measured on a CPU of this machine's model; the figures say which
    (``cpu_model``, ``same_machine``), so an estimate from another machine can say so."""
    from harness.machine import cpu_model

    here = cpu_model()
    wanted = {c.config_hash(): c for c in suite.cases}
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for root in roots:
        if not root.exists():
            continue
        for folder in find_folders([root]):
            try:
                records = folder.records()
                measured_on = str(folder.manifest().get("machine", {}).get("cpu_model", "?"))
            except StoreError:
                continue
            by_hash: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for r in records:
                h = r.get("config_hash")
                if h in wanted and r["kind"] in ("run", "case_start", "validation"):
                    by_hash.setdefault(h, {}).setdefault(r["kind"], []).append(r)
            for h, kinds in by_hash.items():
                case = wanted[h]
                measured = from_records(
                    kinds.get("run", []), kinds.get("case_start", []), kinds.get("validation", [])
                )
                if measured is None:
                    continue
                figures: dict[str, Any] = {
                    **measured,
                    "cpu_model": measured_on,
                    # None: the folder does not say (older manifests); not called "another"
                    "same_machine": None if measured_on == "?" else measured_on == here,
                }
                earlier = found.get(case.case_id)
                elsewhere = earlier is not None and earlier[1]["same_machine"] is False
                if earlier is None or figures["same_machine"] or elsewhere:
                    found[case.case_id] = (str(folder.path), figures)
    return found


def calibrate(suite: Suite, case: Case, runs: int) -> dict[str, Any]:
    """Build the case, one warm-up run, ``runs`` timed runs and one validation, measured."""
    from harness.measure import RunMeter
    from harness.runner import build, run_fields, validate

    seed = suite.plan.seeds[0]
    began = time.perf_counter()
    learner, config, backend = build(case, seed)
    setup = time.perf_counter() - began
    meter = RunMeter()
    measured = []
    try:
        for index in range(runs + 1):
            with meter:
                record = learner.run()
            fields = run_fields(case, record, meter)
            measured.append({**fields, "warmup": index == 0, "backend": case.backend})
        validation = []
        for _ in range(2 if suite.plan.checkpoints else 0):  # the first one traces
            began = time.perf_counter()
            validate(learner, config, suite, seed)
            validation.append(time.perf_counter() - began)
    finally:
        meter.close()
        backend.close()
    return {
        "setup_s": setup,
        "warmup_s": measured[0]["wall_s"],
        "runs": measured[1:],
        "validation_s": validation[-1] if validation else 0.0,
        "validation_first_s": validation[0] if validation else 0.0,
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in measured),
    }


def estimate(
    suite: Suite, cores: int, roots: list[Path], calibrate_runs: int = 2
) -> list[CaseEstimate]:
    known = history(suite, roots)
    out = []
    for case in suite.cases:
        if case.case_id in known:
            folder, figures = known[case.case_id]
            source = f"records: {Path(folder).name}"
            if figures.get("same_machine") is False:
                source += f" (another machine: {figures.get('cpu_model', '?')})"
        else:
            figures = calibrate(suite, case, calibrate_runs)
            source = f"calibrated: {calibrate_runs} runs"
        out.append(case_estimate(suite, case, figures, source, cores))
    return out


def case_estimate(
    suite: Suite, case: Case, figures: dict[str, Any], source: str, cores: int
) -> CaseEstimate:
    """One case's estimate from its measured figures (``from_records`` or ``calibrate``)."""
    timed = figures["runs"]
    return CaseEstimate(
        case_id=case.case_id,
        source=source,
        setup_s=figures["setup_s"],
        warmup_s=figures["warmup_s"],
        run_s=statistics.median(r["wall_s"] for r in timed),
        run_projected_s=statistics.median(
            projected_run_s({"backend": case.backend, **r}, cores) for r in timed
        ),
        validation_s=figures["validation_s"],
        validation_first_s=figures.get("validation_first_s", figures["validation_s"]),
        peak_rss_bytes=int(figures["peak_rss_bytes"]),
        seeds=len(suite.plan.seeds),
        runs=suite.plan.runs,
        validations=len(suite.plan.checkpoints),
    )


def render(suite: Suite, estimates: list[CaseEstimate], cores: int, label: str) -> str:
    from tabulate import tabulate

    sources = sorted({e.source for e in estimates})
    rows = [
        [
            e.case_id if len(e.case_id) <= 24 else e.case_id[:23] + "…",
            f"[{sources.index(e.source) + 1}]",
            f"{e.warmup_s:.1f}",
            f"{e.run_s:.3f}",
            f"{e.run_projected_s:.3f}",
            duration(e.total_s),
            duration(e.total_projected_s),
            f"{e.peak_rss_bytes / 2**30:.2f}",
        ]
        for e in estimates
    ]
    total = sum(e.total_s for e in estimates)
    projected = sum(e.total_projected_s for e in estimates)
    peak = max((e.peak_rss_bytes for e in estimates), default=0)
    rows.append(["TOTAL", "", "", "", "", duration(total), duration(projected),
                 f"{peak / 2**30:.2f}"])  # fmt: skip
    head = ["case", "src", "warm-up s", "s/run", "proj. s/run", "total", "proj. total",
            "peak GiB"]  # fmt: skip
    plan = suite.plan
    validations = (
        f"{len(plan.checkpoints)} validation(s) of {plan.validation_tasks} tasks each"
        if plan.checkpoints
        else "no validation"
    )
    return "\n".join(
        [
            textwrap.fill(
                f"plan for {suite.name} ({suite.scale}): {len(suite.cases)} case(s) x "
                f"{len(plan.seeds)} seed(s) x (1 warm-up + {plan.runs}) runs, {validations}",
                width=100,
            ),
            tabulate(rows, head, disable_numparse=True),
            *(f"[{i}] {source}" for i, source in enumerate(sources, 1)),
            textwrap.fill(
                f"'total': measured on this machine. 'proj.': PROJECTED for a parallel backend "
                f"on {label} (per-worker compute packed onto {cores} cores, plus "
                "dispatch, collect and merge). src: where the figures come from. Checkpoint "
                "writes are not counted (< 2 % of run time).",
                width=100,
            ),
        ]
    )


def duration(seconds: float, compact: bool = False) -> str:
    """'13 s', '22.6 min', '5.7 h'; compact ('13s', '22.6m', '5.7h') where columns are narrow."""
    units = ("s", "m", "h") if compact else (" s", " min", " h")
    if seconds < 90:
        return f"{seconds:.0f}{units[0]}"
    if seconds < 5400:
        return f"{seconds / 60:.1f}{units[1]}"
    return f"{seconds / 3600:.1f}{units[2]}"
