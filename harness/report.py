"""Turn stored records into the thesis' tables and plots.

- timing: seconds per run (warm-up excluded, mean ± ci95) per case, relative to the baseline
  (thesis tables 6.3/6.4), with the *projected* time on a machine with >= W free cores;
- extrapolation: N x mean run time, one-time costs apart (thesis fig. 6.26), "extrapolated";
- quality: validation loss/accuracy at each checkpoint across seeds, "0.88 ± 0.005" (paper
  tables 1-5);
- comparison: every case against the baseline, Welch difference, ci95 and p-value.
Written to the terminal and to Markdown, CSV, JSON and PNG files.

Nothing is hidden: a case-seed that diverged is listed (case, seed, run, loss), its diverged run is
left out of the timings and the case is never compared as if it had trained; a case with fewer
runs or seeds than the manifest planned is marked partial, planned cases without records are listed
as not run, and a sweep that is still running or failed says so at the top. Terminal tables are
cut to ``TERMINAL_WIDTH`` columns (the left-out columns are named); files keep every column.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from dmaml_core.metrics import CROSS_ENTROPY, Metric
from harness import published
from harness.checkpoint import select_records
from harness.drift import Reference, SeedDrift, normalise, references
from harness.stats import BLOCKS, Spread, block_means, paired, summarize, welch
from harness.store import RunFolder, StoreError, write_json_atomic

RATIO_AXES = ("workers", "epochs", "tasks", "inner_steps")
AXIS_NAMES = {
    "workers": "workers W",
    "epochs": "epochs E (MAML steps per run)",
    "tasks": "tasks T per MAML step",
    "inner_steps": "inner steps",
}
TERMINAL_WIDTH = 100
PROJECTED_WORKERS = "workers PROJECTED"
DRIFT_THRESHOLD = 1.25  # for folders whose manifest names none (harness.suite.RunPlan)
P_FLOOR = 1e-6  # below this a p-value is printed as "< 1e-6": more digits mean nothing

# Fields a report cannot do without, per record kind (every record also needs kind, case_id and
# seed). Unknown kinds are skipped so that newer writers do not break older readers.
_NUMBER = (int, float)
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "case_start": {"case": dict},
    "run": {"warmup": bool, "run_index": int, "wall_s": _NUMBER, "projected_s": _NUMBER},
    "validation": {  # every domain declares a loss; its other metrics are checked on use
        "after_runs": int,
        "loss_by_step": list,
        "loss_final_per_task": list,
    },
    "diverged": {"run_index": int},
    "calibration": {"before_run": int, "seconds": _NUMBER},
    "case_end": {},
    "case_error": {},
}
CASE_FIELDS = ("backend", "workers", "epochs", "tasks", "inner_steps")


@dataclass
class CaseResults:
    case_id: str
    case: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)  # timed runs that did not diverge
    warmups: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    diverged_seeds: list[int] = field(default_factory=list)
    threads: Any = None
    startup_s: list[float] = field(default_factory=list)  # building the backend (spawn, init)
    # seed -> timed runs recorded in its latest attempt (a diverged run included)
    timed_runs: dict[int, int] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)  # seeds whose latest attempt has a case_end
    # seed -> {"run_index", "loss_sum"} of the run whose loss was NaN/inf
    divergences: dict[int, dict[str, Any]] = field(default_factory=dict)
    processes: int | None = None  # processes the backend used (records' backend_processes)
    errors: dict[int, str] = field(default_factory=dict)  # seed -> its case_error message
    calibrations: list[dict[str, Any]] = field(default_factory=list)  # harness/drift.py
    drift: dict[int, SeedDrift] = field(default_factory=dict)  # seed -> its blocks' drift
    # what its domain declared (case_start "metrics"; dmaml_core/metrics.py), the primary first
    metrics: tuple[Metric, ...] = ()


@dataclass
class Results:
    suite: str
    scale: str
    baseline: str
    manifests: list[dict[str, Any]]
    cases: dict[str, CaseResults]
    folders: list[Path] = field(default_factory=list)  # parallel to manifests
    # the suite's [[published]] rows and [target] (harness/suite.py), as plain dicts
    published: list[dict[str, Any]] = field(default_factory=list)
    target: dict[str, Any] | None = None
    published_from: str = ""  # where they were read: the manifest, or the suite file
    # records dropped or refused while reading (a duplicated line), shown in the report header
    warnings: list[str] = field(default_factory=list)
    case_seeds: dict[tuple[str, int], Path] = field(default_factory=dict)  # -> folder holding it
    # calibration job -> the reference speed the timings were normalised to (harness/drift.py)
    references: dict[str, Reference] = field(default_factory=dict)

    @property
    def plan(self) -> dict[str, Any]:
        """The first manifest's plan ({} for folders written without one)."""
        return next((m["plan"] for m in self.manifests if m.get("plan")), {})

    @property
    def not_run(self) -> list[str]:
        """Planned cases with no record at all."""
        planned = dict.fromkeys(c for m in self.manifests for c in m.get("cases", []))
        return [c for c in planned if c not in self.cases]


def _check_manifest(manifest: dict[str, Any], folder: RunFolder) -> None:
    missing = [k for k in ("suite", "scale") if not isinstance(manifest.get(k), str)]
    if missing:
        raise StoreError(
            f"{folder.manifest_path}: no {' or '.join(repr(k) for k in missing)} "
            "(a results manifest names its suite and scale as strings)"
        )
    plan = manifest.get("plan")
    if plan is not None and not (
        isinstance(plan, dict)
        and isinstance(plan.get("runs"), int)
        and isinstance(plan.get("seeds"), list)
    ):
        raise StoreError(
            f"{folder.manifest_path}: 'plan' must hold 'runs' (a number) and 'seeds' (a list)"
        )


def _check_record(record: Any, number: int, folder: RunFolder) -> bool:
    """Raise StoreError naming the file, the record and the missing fields; False for a kind
    this reader does not know (skipped)."""
    where = f"{folder.records_path}: record {number}"
    if not isinstance(record, dict):
        raise StoreError(f"{where}: not a JSON object")
    kind = record.get("kind")
    if not isinstance(kind, str):
        raise StoreError(f"{where}: no 'kind' (one of {', '.join(REQUIRED)})")
    if kind not in REQUIRED:
        return False
    needed: dict[str, type | tuple[type, ...]] = {"case_id": str, "seed": int, **REQUIRED[kind]}
    missing = [k for k in needed if k not in record]
    wrong = [k for k, t in needed.items() if k in record and not isinstance(record[k], t)]
    if kind == "case_start" and isinstance(record.get("case"), dict):
        missing += [f"case.{k}" for k in CASE_FIELDS if k not in record["case"]]
    if missing:
        raise StoreError(f"{where} (kind {kind!r}): missing {', '.join(missing)}")
    if wrong:
        raise StoreError(f"{where} (kind {kind!r}): wrong type for {', '.join(wrong)}")
    return True


def _record_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a record unique in one folder: a second record with the same key is a
    duplicated line (a copy, a bad merge), never new data."""
    base = (r["kind"], r["case_id"], r["seed"], r.get("attempt", 0))
    if r["kind"] == "run":
        return (*base, r["run_index"], r["warmup"])
    if r["kind"] == "validation":
        return (*base, r["after_runs"])
    if r["kind"] == "calibration":
        return (*base, r["before_run"])
    if r["kind"] == "case_resume":
        return (*base, id(r))  # several resumes of one attempt are normal
    return base


def _drop_duplicates(
    records: list[dict[str, Any]], folder: RunFolder, warnings: list[str]
) -> list[dict[str, Any]]:
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for r in records:
        key = _record_key(r)
        if key in seen:
            warnings.append(
                f"dropped a duplicated {r['kind']} record ({r['case_id']}, seed {r['seed']}"
                + (f", run {r['run_index']}" if r["kind"] == "run" else "")
                + (f", after {r['after_runs']} runs" if r["kind"] == "validation" else "")
                + f") in {folder.records_path}"
            )
            continue
        seen.add(key)
        kept.append(r)
    return kept


def _check_poolable(results: Results, manifest: dict[str, Any], folder: RunFolder) -> None:
    """Folders of one suite and scale are pooled only when every case they share has the same
    configuration; a case-seed found in two folders is refused (``_check_disjoint``)."""
    new_cases = manifest.get("signature", {}).get("cases", {})
    for other_path, other in zip(results.folders, results.manifests, strict=True):
        old_cases = other.get("signature", {}).get("cases", {})
        differ = sorted(c for c in set(new_cases) & set(old_cases) if new_cases[c] != old_cases[c])
        if differ:
            raise StoreError(
                f"{folder.path} and {other_path}: not pooled: case(s) {', '.join(differ)} have "
                "different configurations under the same id (report them one at a time, or "
                "compare them)"
            )


def load(folders: list[RunFolder]) -> list[Results]:
    """Group records by (suite, scale); only each case-seed's latest attempt counts. Each record
    counts once: duplicated lines are dropped (and named in the report), and folders are pooled
    only when their shared cases have one configuration and no case-seed is in two of them."""
    grouped: dict[tuple[str, str], Results] = {}
    for folder in folders:
        manifest = folder.manifest()
        _check_manifest(manifest, folder)
        key = (manifest["suite"], manifest["scale"])
        if key not in grouped:
            grouped[key] = Results(key[0], key[1], manifest.get("baseline", ""), [], {})
            published, target, source = _published(manifest)
            grouped[key].published, grouped[key].target = published, target
            grouped[key].published_from = source
        results = grouped[key]
        _check_poolable(results, manifest, folder)
        results.manifests.append(manifest)
        results.folders.append(folder.path)
        records = folder.records()
        records = select_records(  # case_resume: see harness/checkpoint.py
            r
            for i, r in enumerate(records, 1)
            if _check_record(r, i, folder) or r["kind"] == "case_resume"
        )
        records = _drop_duplicates(list(records), folder, results.warnings)
        for r in records:
            if r["kind"] != "case_start":
                continue
            case_seed = (r["case_id"], r["seed"])
            holder = results.case_seeds.setdefault(case_seed, folder.path)
            if holder != folder.path:
                raise StoreError(
                    f"{folder.path} and {holder}: not pooled: both hold {case_seed[0]} seed "
                    f"{case_seed[1]} (pooling would count that seed twice)"
                )
        latest: dict[tuple[str, int], int] = {}
        early = 0
        for r in records:
            if r["kind"] == "case_start":
                latest[(r["case_id"], r["seed"])] = r.get("attempt", 0)
            elif (r["case_id"], r["seed"]) not in latest and r["kind"] != "case_resume":
                early += 1
        if early:
            results.warnings.append(
                f"{early} record(s) came before their case_start in {folder.records_path}; "
                "counted with their case and seed"
            )
        # every case_start first (a stable sort), so a record written out of order is not lost
        for r in sorted(records, key=lambda r: r["kind"] != "case_start"):
            seed_key = (r["case_id"], r["seed"])
            if latest.get(seed_key) != r.get("attempt", 0):
                continue
            case = results.cases.get(r["case_id"])
            if r["kind"] == "case_start":
                if case is None:
                    case = results.cases[r["case_id"]] = CaseResults(r["case_id"], r["case"])
                case.threads = r.get("threads")
                case.metrics = declared_metrics(r)
                case.startup_s.append(r.get("setup_s", math.nan))
                case.timed_runs.setdefault(r["seed"], 0)
            elif case is None:
                continue
            elif r["kind"] == "run":
                if not r["warmup"]:
                    case.timed_runs[r["seed"]] = case.timed_runs.get(r["seed"], 0) + 1
                if isinstance(r.get("backend_processes"), int | float):
                    case.processes = int(r["backend_processes"])
                if r.get("diverged"):  # shown as diverged, never averaged into a timing
                    case.divergences.setdefault(r["seed"], _divergence(r))
                else:
                    (case.warmups if r["warmup"] else case.runs).append(r)
            elif r["kind"] == "validation":
                case.validations.append(_legacy_scores(r, case.metrics))
            elif r["kind"] == "calibration":
                case.calibrations.append(r)
            elif r["kind"] == "diverged":
                case.divergences[r["seed"]] = _divergence(r)
            elif r["kind"] == "case_end":
                case.ended.add(r["seed"])
            elif r["kind"] == "case_error":
                case.errors[r["seed"]] = str(r.get("error", "?"))
        for case in results.cases.values():
            case.diverged_seeds = sorted(case.divergences)
    for results in grouped.values():
        _normalise(results)
    return list(grouped.values())


def drift_text(results: Results) -> str:
    """What the timings were normalised to, for the report header."""
    if not results.references:
        return (
            "timings NOT drift-normalised: no calibration samples (written before drift control, "
            "or calibration = off); ratios between cases follow the machine's load"
        )
    refs = ", ".join(
        f"{r.calibration} job {1000 * r.seconds:.3g} ms (median of {r.samples})"
        for r in results.references.values()
    )
    threshold = float(results.plan.get("drift_threshold", DRIFT_THRESHOLD))
    return (
        "timings DRIFT-NORMALISED: every run divided by its block's calibration drift (mean of the "
        f"samples before and after the block / the reference: {refs}); raw in wall_raw_s; "
        f"drift_max: the worst block's factor, flagged beyond x{threshold:g}"
    )


def _normalise(results: Results) -> None:
    """Every case-seed's timings at the report's reference speed (harness/drift.py)."""
    cases = results.cases.values()
    results.references = references([c for case in cases for c in case.calibrations])
    for case in cases:
        for seed in sorted({r["seed"] for r in (*case.runs, *case.warmups)}):
            case.drift[seed] = normalise(
                [r for r in (*case.warmups, *case.runs) if r["seed"] == seed],
                [c for c in case.calibrations if c["seed"] == seed],
                results.references,
            )


def _published(manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str]:
    """(published rows, target, where from): the manifest's, or for a folder written before the
    manifest kept them, the suite file's as it is now (if it still loads), else none."""
    if "published" in manifest or "target" in manifest:
        rows = manifest.get("published") or []
        target = manifest.get("target") or None
        return [r for r in rows if isinstance(r, dict)], target, "the results manifest"
    from harness.suite import SuiteError, load_suite

    for source in (manifest.get("suite_file"), manifest["suite"]):
        if not source:
            continue
        try:
            suite = load_suite(source, manifest["scale"])
        except SuiteError:
            continue
        if suite.name == manifest["suite"]:
            rows = [p.as_dict() for p in suite.published]
            target = suite.target.as_dict() if suite.target else None
            return rows, target, f"{suite.path.name} as it is now (the manifest predates them)"
    return [], None, ""


def _divergence(record: dict[str, Any]) -> dict[str, Any]:
    loss = record.get("loss_sum", math.nan)
    return {"run_index": record["run_index"], "loss_sum": loss}


def _baseline(results: Results) -> CaseResults | None:
    if results.baseline in results.cases:
        return results.cases[results.baseline]
    return next(iter(results.cases.values()), None)


def case_status(results: Results, case: CaseResults) -> str:
    """'complete', or what is missing against the manifest's plan and which seeds diverged, e.g.
    'partial (79/300 runs, 1/2 seeds); diverged in 1/1 seeds'."""
    plan = results.plan
    planned_runs = plan.get("runs", "?")
    planned_seeds = len(plan["seeds"]) if "seeds" in plan else "?"
    seeds = len(case.timed_runs)
    # a diverged seed stops early by design: its run count does not make the case partial
    trained = [n for s, n in case.timed_runs.items() if s not in case.divergences]
    runs = min(trained) if trained else min(case.timed_runs.values(), default=0)
    partial = (
        any(s not in case.ended for s in case.timed_runs)
        or (isinstance(planned_seeds, int) and seeds < planned_seeds)
        or (isinstance(planned_runs, int) and bool(trained) and runs < planned_runs)
    )
    parts = []
    if partial:
        parts.append(f"partial ({runs}/{planned_runs} runs, {seeds}/{planned_seeds} seeds)")
    if case.divergences:
        parts.append(f"diverged in {len(case.divergences)}/{seeds} seeds")
    if case.errors:
        parts.append(f"failed in seed {', '.join(str(s) for s in sorted(case.errors))}")
    return "; ".join(parts) or "complete"


def scaling(case: dict[str, Any], base: dict[str, Any]) -> tuple[str, float]:
    """(axis, ratio) for a thesis 'scaling ratio' row: the one axis that differs from baseline;
    several differing fields give their names joined by '+' and no ratio."""
    differing = [a for a in RATIO_AXES if case[a] != base[a]]
    others = [k for k in case if k not in (*RATIO_AXES, "name") and case[k] != base.get(k)]
    if len(differing) == 1 and not others:
        axis = differing[0]
        return axis, case[axis] / base[axis]
    if not differing and not others:
        return "baseline", 1.0
    return "+".join(differing + others), math.nan


def sequential_note(case: CaseResults, cores: Any) -> str:
    """Why W workers did not run side by side, or '' when they could: a serial backend runs them
    one after another, a process pool smaller than W shares its processes."""
    workers = int(case.case["workers"])
    if workers <= 1:
        return ""
    if case.case["backend"] == "serial":
        return "backend serial: the W workers ran one after another"
    processes = case.processes or case.case.get("processes") or cores
    if isinstance(processes, int) and 0 < processes < workers:
        return f"W > {processes} workers shared {processes} processes (partly one after another)"
    return ""


def by_seed(case: CaseResults, field: str) -> dict[int, list[float]]:
    """A timing field of the case's timed runs, per seed, in run order."""
    out: dict[int, list[float]] = {}
    for r in sorted(case.runs, key=lambda r: (r["seed"], r["run_index"])):
        out.setdefault(r["seed"], []).append(r.get(field, math.nan))
    return out


def timing_summary(case: CaseResults, field: str) -> Any:
    """Mean over all timed runs, with sd and ci95 over block means (``stats.block_means``): the
    unit of independence is a block of consecutive runs of one case-seed, not a run."""
    runs = summarize([r.get(field, math.nan) for r in case.runs])
    blocks = summarize(block_means(by_seed(case, field)))
    return dataclasses.replace(blocks, n=runs.n, mean=runs.mean)


def one_time_s(case: CaseResults) -> float:
    """Mean over seeds of what the warm-up run cost beyond a steady-state run (its time minus the
    median of the seed's timed runs): tracing, the layout search and first-touch costs that the
    first case of a process pays and later cases may reuse. Time to target, quality against wall
    time and extrapolations charge no case with it (``published.seed_runs``)."""
    medians = {s: float(np.median(v)) for s, v in by_seed(case, "wall_s").items() if v}
    extra = [r["wall_s"] - medians[r["seed"]] for r in case.warmups if r["seed"] in medians]
    return summarize(extra).mean


def drift_note(case: CaseResults, threshold: float) -> str:
    """The seeds whose worst block drifted beyond ``threshold`` (harness/drift.py), or ''."""
    flagged = [
        f"seed {seed} x{d.worst:.2f}"
        for seed, d in sorted(case.drift.items())
        if d.worst > threshold
    ]
    if not flagged:
        return ""
    return f"DRIFT beyond x{threshold:g}: {', '.join(flagged)}"


def timing_rows(results: Results) -> list[dict[str, Any]]:
    base = _baseline(results)
    base_mean = summarize([r["wall_s"] for r in base.runs]).mean if base else math.nan
    threshold = float(results.plan.get("drift_threshold", DRIFT_THRESHOLD))
    rows = []
    for case in results.cases.values():
        wall = timing_summary(case, "wall_s")
        spread = Spread.of([r["wall_s"] for r in case.runs])
        projected = timing_summary(case, "projected_s")
        warm = summarize([r.get("wall_raw_s", r["wall_s"]) for r in case.warmups])
        # tasks per second = tasks done / time taken (a mean of per-run rates favours fast runs)
        tasks_done = sum(r.get("tasks_per_s", math.nan) * r.get("wall_raw_s", r["wall_s"])
                         for r in case.runs)  # fmt: skip
        axis, ratio = scaling(case.case, base.case) if base else ("", math.nan)
        worst = [d.worst for d in case.drift.values() if d.blocks]
        notes = [*wall.warnings(), drift_note(case, threshold)]
        rows.append(
            {
                "case": case.case_id,
                "status": case_status(results, case),
                "backend": case.case["backend"],
                "W": case.case["workers"],
                "E": case.case["epochs"],
                "T": case.case["tasks"],
                "seen_tasks": case.case["workers"] * case.case["epochs"] * case.case["tasks"],
                "axis": axis,
                "ratio": ratio,
                "n_runs": wall.n,
                "wall_s": wall.mean,
                "wall_ci95_s": wall.ci95,
                "wall_median_s": spread.median,
                "wall_iqr_s": spread.iqr,
                "wall_raw_s": summarize([r.get("wall_raw_s", r["wall_s"]) for r in case.runs]).mean,
                "drift_max": max(worst) if worst else math.nan,
                "relative_pct": 100.0 * wall.mean / base_mean if base_mean else math.nan,
                "warmup_s": warm.mean,
                "one_time_s": one_time_s(case),
                "startup_s": summarize(case.startup_s).mean,
                "projected_s": projected.mean,
                "projected_ci95_s": projected.ci95,
                "tasks_per_s": tasks_done / sum(r.get("wall_raw_s", r["wall_s"]) for r in case.runs)
                if case.runs
                else math.nan,
                "cpu_s": summarize([r.get("cpu_s", math.nan) for r in case.runs]).mean,
                "peak_rss_mb": max((r.get("peak_rss_bytes", 0) for r in case.runs), default=0)
                / 2**20,
                "threads": case.threads,
                "diverged_seeds": case.diverged_seeds,
                "notes": "; ".join(n for n in notes if n),
            }
        )
    return rows


def diverged_rows(results: Results) -> list[dict[str, Any]]:
    """One row per diverged case-seed: where training stopped and the loss it stopped on (as
    text, so that a NaN prints as 'nan' and not as the tables' '-' for a missing number)."""
    return [
        {
            "case": c.case_id,
            "seed": seed,
            "run_index": d["run_index"],
            "loss_sum": f"{d['loss_sum']:.4g}"
            if isinstance(d["loss_sum"], float)
            else d["loss_sum"],
        }
        for c in results.cases.values()
        for seed, d in sorted(c.divergences.items())
    ]


def ratio_tables(
    timing: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pivot the one-axis-at-a-time rows: scaling ratio down, axis across (empty if none)."""
    axes = [a for a in RATIO_AXES if any(r["axis"] == a for r in timing)]
    base = next((r for r in timing if r["axis"] == "baseline"), None)
    if not axes or base is None:
        return [], []
    ratios = sorted({1.0, *(r["ratio"] for r in timing if r["axis"] in axes)})
    seconds, relative = [], []
    for ratio in ratios:
        row_s: dict[str, Any] = {"ratio": f"{ratio:g}"}
        row_r: dict[str, Any] = {"ratio": f"{ratio:g}"}
        for axis in axes:
            match = (
                base
                if ratio == 1.0
                else next((r for r in timing if r["axis"] == axis and r["ratio"] == ratio), None)
            )
            if match is None:
                row_s[axis] = row_r[axis] = "-"
                continue
            # a partial or diverged case keeps its mark in the pivot too
            status = match.get("status", "complete")
            mark = "" if status == "complete" else f" [{status.split(' (')[0].split(' in ')[0]}]"
            row_s[axis] = f"{match['wall_s']:.4g} ± {match['wall_ci95_s']:.2g}{mark}"
            row_r[axis] = f"{match['relative_pct']:.0f}{mark}"
            if axis == "workers":  # W workers side by side: what >= W free cores would take
                projected = f"{match['projected_s']:.4g} ± {match['projected_ci95_s']:.2g}"
                row_s[PROJECTED_WORKERS] = projected + mark
                pct = 100 * match["projected_s"] / base["projected_s"]  # like with like
                row_r[PROJECTED_WORKERS] = f"{pct:.0f}{mark}"
        seconds.append(row_s)
        relative.append(row_r)
    return seconds, relative


def seen_tasks_table(timing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks a run trains on (W x E x T) in the shape of the ratio tables: the thesis' tables
    compare seconds per run, but a run of 16 workers sees 16 times the tasks of one."""
    axes = [a for a in RATIO_AXES if any(r["axis"] == a for r in timing)]
    base = next((r for r in timing if r["axis"] == "baseline"), None)
    if not axes or base is None:
        return []
    ratios = sorted({1.0, *(r["ratio"] for r in timing if r["axis"] in axes)})
    rows = []
    for ratio in ratios:
        row: dict[str, Any] = {"ratio": f"{ratio:g}"}
        for axis in axes:
            match = (
                base
                if ratio == 1.0
                else next((r for r in timing if r["axis"] == axis and r["ratio"] == ratio), None)
            )
            row[axis] = "-" if match is None else match["seen_tasks"]
        rows.append(row)
    return rows


def extrapolation_rows(results: Results, n_runs: int) -> list[dict[str, Any]]:
    rows = []
    for case in results.cases.values():
        wall = timing_summary(case, "wall_s")  # ci95 over block means
        rows.append(
            {
                "case": case.case_id,
                "n_runs": n_runs,
                # every case charged alike: N steady-state runs, no one-time cost
                "extrapolated_s": n_runs * wall.mean,
                "extrapolated_ci95_s": n_runs * wall.ci95,
                # the thesis' rule (fig. 6.26): (N - 1) x mean, the warm-up left out
                "thesis_rule_s": (n_runs - 1) * wall.mean,
                "one_time_s": one_time_s(case),
            }
        )
    return rows


def declared_metrics(case_start: dict[str, Any]) -> tuple[Metric, ...]:
    """The metrics a case's domain declared, from its case_start record. Records written before
    domains declared them (no "metrics") take the domain class's own declaration."""
    if isinstance(case_start.get("metrics"), list) and case_start["metrics"]:
        return tuple(Metric.from_record(m) for m in case_start["metrics"])
    from dmaml_core.tasks import DOMAINS

    domain = DOMAINS.get(str(case_start["case"].get("domain")))
    metrics = getattr(domain, "metrics", None)
    return tuple(metrics) if metrics else (CROSS_ENTROPY,)


def _legacy_scores(validation: dict[str, Any], metrics: tuple[Metric, ...]) -> dict[str, Any]:
    """Before domains declared their metrics, every validation stored its score matrix as
    ``accuracy_*`` (a return for RL, zeros for a regression): name it as the domain does."""
    out = dict(validation)
    for metric in metrics:
        if metric.source == "score" and f"{metric.name}_by_step" not in out:
            for part in ("by_step", "final_per_task"):
                if f"accuracy_{part}" in validation:
                    out[f"{metric.name}_{part}"] = validation[f"accuracy_{part}"]
    return out


def quality_metric(results: Results) -> Metric:
    """The validation metric a report compares on: the primary metric its cases' domain
    declares (dmaml_core/metrics.py), never decided by a domain's name."""
    for case in results.cases.values():
        if case.metrics:
            return case.metrics[0]
    return CROSS_ENTROPY


def _diverged_text(case: CaseResults) -> str:
    return f"diverged in {len(case.divergences)}/{len(case.timed_runs)} seeds"


def quality_rows(results: Results) -> list[dict[str, Any]]:
    """Final-step validation metric per checkpoint: across seeds when there are several, else
    across validation tasks. A case with a diverged seed gets one 'diverged' row instead: its
    surviving checkpoints (often only the untrained checkpoint 0) would read as trained results."""
    metric = quality_metric(results)
    rows: list[dict[str, Any]] = []
    for case in results.cases.values():
        if case.divergences:
            if case.validations:
                rows.append(
                    {
                        "case": case.case_id,
                        "after_runs": "-",
                        "metric": str(metric),
                        "value": _diverged_text(case),
                        "mean": math.nan,
                        "ci95": math.nan,
                        "n": len(case.divergences),
                        "over": "seeds",
                        "before_adaptation": math.nan,
                    }
                )
            continue
        by_checkpoint: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for v in case.validations:
            by_checkpoint[v["after_runs"]].append(v)
        for after, vals in sorted(by_checkpoint.items()):
            per_seed = [v[f"{metric}_by_step"][-1] for v in vals]
            over = "seeds"
            if len(per_seed) == 1:
                per_seed, over = vals[0][f"{metric}_final_per_task"], "tasks"
            s = summarize(per_seed)
            rows.append(
                {
                    "case": case.case_id,
                    "after_runs": after,
                    "metric": str(metric),
                    "value": s.format(3),
                    "mean": s.mean,
                    "ci95": s.ci95,
                    "n": s.n,
                    "over": over,
                    "before_adaptation": float(np.mean([v[f"{metric}_by_step"][0] for v in vals])),
                }
            )
    return rows


def _final(c: CaseResults, metric: Metric | str, after: int) -> list[float]:
    vals = [v for v in c.validations if v["after_runs"] == after]
    if len(vals) == 1:
        return list(vals[0][f"{metric}_final_per_task"])
    return [v[f"{metric}_by_step"][-1] for v in vals]


def _final_by_key(c: CaseResults, metric: Metric | str, after: int) -> dict[Any, float]:
    """The values ``_final`` lists, keyed by what they share with another case: (seed, task
    index) for one seed, the seed for several."""
    vals = [v for v in c.validations if v["after_runs"] == after]
    if len(vals) == 1:
        return {(vals[0]["seed"], i): x for i, x in enumerate(vals[0][f"{metric}_final_per_task"])}
    return {v["seed"]: v[f"{metric}_by_step"][-1] for v in vals}


def quality_test(case: CaseResults, base: CaseResults, metric: Metric, after: int) -> Any:
    """Paired over what both cases share (validation tasks come from the seed's own stream, so
    one domain and seed give both cases the same tasks: per task with one seed, per seed with
    several); Welch where the cases' domains differ or the keys do not match. (comparison, name
    of the test)."""
    a, b = _final_by_key(case, metric, after), _final_by_key(base, metric, after)
    same_tasks = case.case.get("domain") == base.case.get("domain") and case.case.get(
        "domain_params"
    ) == base.case.get("domain_params")
    if same_tasks and a.keys() == b.keys() and len(a) >= 2:
        keys = sorted(a, key=str)
        unit = "tasks" if isinstance(keys[0], tuple) else "seeds"
        return paired([a[k] for k in keys], [b[k] for k in keys]), f"paired over {unit}"
    return welch(_final(case, metric, after), _final(base, metric, after)), "Welch"


def comparison_rows(results: Results) -> list[dict[str, Any]]:
    """Each case against the baseline: timing over the runs that did not diverge; quality at the
    last trained checkpoint (after_runs > 0) both have, never for a case or baseline that
    diverged."""
    base = _baseline(results)
    if base is None:
        return []
    metric = quality_metric(results)
    base_checkpoints = {v["after_runs"] for v in base.validations}
    rows = []
    for case in results.cases.values():
        if case is base:
            continue
        timing = welch(  # over block means: consecutive runs are not independent
            block_means(by_seed(case, "wall_s")), block_means(by_seed(base, "wall_s"))
        )
        row: dict[str, Any] = {
            "case": case.case_id,
            "status": case_status(results, case),
            "baseline": base.case_id,
            "wall_diff_s": timing.difference,
            "wall_diff_ci95_s": timing.ci95,
            "wall_p": timing.p_value,
            "wall_significant": timing.significant(),
            "at_runs": "-",
            "quality_test": "-",
            f"{metric}_diff": math.nan,
            f"{metric}_diff_ci95": math.nan,
            f"{metric}_p": math.nan,
            f"{metric}_significant": False,
        }
        if case.divergences or base.divergences:
            row[f"{metric}_diff"] = (
                _diverged_text(case) if case.divergences else "baseline " + _diverged_text(base)
            )
        elif case.validations:
            trained = {v["after_runs"] for v in case.validations} & base_checkpoints - {0}
            if trained:
                last = max(trained)
                quality, test = quality_test(case, base, metric, last)
                row.update(
                    {
                        "at_runs": last,
                        "quality_test": test,
                        f"{metric}_diff": quality.difference,
                        f"{metric}_diff_ci95": quality.ci95,
                        f"{metric}_p": quality.p_value,
                        f"{metric}_significant": quality.significant(),
                    }
                )
            else:
                row[f"{metric}_diff"] = "no trained checkpoint in common"
        rows.append(row)
    return rows


def format_p(p: float) -> str:
    """'< 1e-6' below 1e-6 (the tail of a t distribution says nothing finer about a benchmark),
    else 3 significant digits."""
    if math.isnan(p):
        return "-"
    if p < P_FLOOR:
        return "< 1e-6"
    return f"{p:.3g}"


def _fmt(rows: list[dict[str, Any]], columns: list[str]) -> list[list[Any]]:
    def cell(column: str, v: Any) -> Any:
        if isinstance(v, bool):
            return "*" if v else ""
        if isinstance(v, float):
            if column.endswith("_p"):
                return format_p(v)
            if math.isnan(v):
                return "-"
            return f"{v:.4g}"
        if isinstance(v, list):
            return ", ".join(str(x) for x in v)
        return v

    return [[cell(c, r.get(c)) for c in columns] for r in rows]


def _shorten(text: str, width: int) -> str:
    """Middle ellipsis: case ids differ at both ends ('w1-e1-t512…o1-b0.001')."""
    if len(text) <= width:
        return text
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def _empty(rows: list[dict[str, Any]], column: str) -> bool:
    """True when every cell of ``column`` prints as '-' or '' (leaving it out hides nothing)."""
    return all(cell in ("-", "") for (cell,) in _fmt(rows, [column]))


def table(
    rows: list[dict[str, Any]],
    columns: list[str],
    fmt: str,
    width: int | None,
    drop: Sequence[str] = (),
) -> str:
    """A table no wider than ``width`` (None: any width). To fit, empty columns go first, then
    the columns in ``drop`` in that order, then case ids get a middle ellipsis (never so short that
    two ids read the same); the left-out columns are named under the table, so nothing
    disappears silently."""
    columns = list(columns)

    def render_with(cols: list[str], case_width: int | None = None) -> str:
        body = _fmt(rows, cols)
        if case_width is not None and "case" in cols:
            i = cols.index("case")
            for line in body:
                line[i] = _shorten(str(line[i]), case_width)
        return str(tabulate(body, cols, tablefmt=fmt))

    text = render_with(columns)
    if width is None or _width(text) <= width:
        return text
    dropped: list[str] = []
    empty = [c for c in columns if c != "case" and _empty(rows, c)]
    for column in [*empty, *drop]:
        if _width(text) <= width:
            break
        if column in columns:
            columns.remove(column)
            dropped.append(column)
            text = render_with(columns)
    if _width(text) > width and "case" in columns and rows:
        ids = [str(r.get("case", "")) for r in rows]
        target = max(len(i) for i in ids) - (_width(text) - width)
        for case_width in range(max(target, 9), max(len(i) for i in ids)):
            if len({_shorten(i, case_width) for i in ids}) == len(set(ids)):
                text = render_with(columns, case_width)
                break
    if dropped:
        note = f"(left out to fit {width} columns: {', '.join(dropped)}; --wide shows them)"
        text += "\n" + textwrap.fill(note, width)
    return text


TIMING_COLUMNS = [
    "case",
    "status",
    "axis",
    "ratio",
    "n_runs",
    "wall_s",
    "wall_ci95_s",
    "wall_median_s",
    "wall_iqr_s",
    "relative_pct",
    "projected_s",
    "drift_max",
    "startup_s",
    "warmup_s",
    "one_time_s",
    "tasks_per_s",
    "peak_rss_mb",
    "notes",
]
# least important first: what the terminal loses to fit TERMINAL_WIDTH
TIMING_DROP = [
    "wall_iqr_s",
    "wall_median_s",
    "one_time_s",
    "startup_s",
    "peak_rss_mb",
    "tasks_per_s",
    "ratio",
    "axis",
    "n_runs",
    "warmup_s",
    "drift_max",
    "relative_pct",
    "notes",
]
COMPARISON_DROP = ["quality_test", "baseline", "wall_significant", "wall_diff_ci95_s", "at_runs"]


def comparison_drop(metric: Metric) -> list[str]:
    """What the comparison table loses first to fit the terminal, for the compared metric."""
    return [*COMPARISON_DROP, f"{metric.name}_significant", f"{metric.name}_diff_ci95"]


def domain_lines(results: Results) -> list[str]:
    """What was learned and on which network, from the cases' own records: "domain: omniglot
    (network finn, n_way 5, ...)"; image domains always say which network ran."""
    seen: list[str] = []
    for case in results.cases.values():
        spec = case.case
        name = spec.get("domain", "?")
        params = dict(spec.get("domain_params", ()))
        if name in ("omniglot", "miniimagenet", "random_images"):
            params.setdefault("network", "ours")
        shown = ", ".join(f"{k} {v}" for k, v in sorted(params.items()))
        line = f"domain: {name}" + (f" ({shown})" if shown else "")
        if line not in seen:
            seen.append(line)
    return seen


def data_lines(results: Results) -> list[str]:
    """Which data the numbers came from, from the manifests: "data: omniglot from <path>
    (images_background.zip 69ad971b..., ...)", or a generated source; a data set marked as a
    stand-in (``STAND_IN.txt`` beside its files, see ``harness.data_source``) says so loudly."""
    seen: list[str] = []
    for manifest in results.manifests:
        for entry in manifest.get("data") or []:
            if not isinstance(entry, dict):
                continue
            domain = entry.get("domain", "?")
            if "source" in entry:
                line = f"data: {domain}: {entry['source']}"
            else:
                hashes = entry.get("sha256") or {}
                shown = ", ".join(f"{name} {str(h)[:8]}..." for name, h in sorted(hashes.items()))
                line = f"data: {domain} from {entry.get('path', '?')}" + (
                    f" ({shown})" if shown else ""
                )
            if entry.get("stand_in"):
                line += f"; STAND-IN, NOT THE REAL DATA SET: {entry['stand_in']}"
            if line not in seen:
                seen.append(line)
    return seen


def render(results: Results, n_runs: int, fmt: str = "simple", wide: bool = False) -> str:
    """The report as text. ``wide=False`` fits every line into TERMINAL_WIDTH columns (for a
    terminal); files are written with ``wide=True`` and keep every column."""
    width = None if wide else TERMINAL_WIDTH

    def prose(text: str) -> str:
        if width is None:
            return text
        return "\n".join(
            textwrap.fill(line, width, break_on_hyphens=False, break_long_words=False)
            for line in text.split("\n")
        )

    parts = [f"# {results.suite} ({results.scale})"]
    for warning in results.warnings:
        parts.append(prose(f"WARNING: {warning}"))
    for path, manifest in zip(results.folders, results.manifests, strict=False):
        for event in manifest.get("events", []):
            for change in event.get("changed", []):
                when = event.get("at", "?")
                parts.append(prose(f"WARNING: {path.name} resumed at {when} after {change}"))
    for path, manifest in zip(results.folders, results.manifests, strict=False):
        status = manifest.get("status")
        if status is not None and status != "complete":
            parts.append(
                prose(
                    f"STATUS: {status.upper()}: the sweep had not finished when this was "
                    f"written, or it stopped; the numbers below are incomplete ({path})"
                )
            )
    labels = {lab for m in results.manifests for lab in m.get("labels", [])}
    for label in sorted(labels):
        parts.append(prose(f"NOTE: {label}"))
    machine = results.manifests[0].get("machine", {})
    parts.append(
        f"machine: {machine.get('cpu_model', '?')}, {machine.get('usable_cores', '?')} "
        f"cores; git {machine.get('git', {}).get('commit', '?')[:10]}"
    )
    for domain in domain_lines(results):
        parts.append(prose(domain))
    for data in data_lines(results):
        parts.append(prose(data))
    plan = results.plan
    if plan:
        parts.append(
            f"planned: {len(results.manifests[0].get('cases', []))} case(s) x "
            f"{len(plan['seeds'])} seed(s) x (1 warm-up + {plan['runs']}) runs"
        )
    if results.not_run:
        parts.append(prose(f"NOT RUN (planned, no records): {', '.join(results.not_run)}"))
    diverged = diverged_rows(results)
    if diverged:
        parts.append("\n## DIVERGED (NaN/inf loss): training of these case-seeds stopped")
        cols = ["case", "seed", "run_index", "loss_sum"]
        parts.append(table(diverged, cols, fmt, width))
    else:
        parts.append("diverged: none")
    timing = timing_rows(results)
    parts.append(
        prose(
            "\n## Seconds per run (warm-up and diverged runs excluded; mean, ci95; relative to "
            "baseline %)\nprojected_s = dispatch + slowest worker + collect + merge: projected, "
            "not measured, wall time on a machine with >= W free cores. ci95 and timing tests: "
            f"Student t over the means of {BLOCKS} blocks of consecutive runs per case-seed "
            "(consecutive runs are not independent); median and IQR over runs; tasks_per_s = "
            "tasks done / time taken (raw)\n" + drift_text(results) + "\none_time_s: the warm-up "
            "run's time beyond a steady-state run (tracing, layout search), charged to no case in "
            "time to target, quality against wall time or extrapolations; the first case of a "
            "process pays it, later ones may reuse it"
        )
    )
    parts.append(table(timing, TIMING_COLUMNS, fmt, width, TIMING_DROP))
    table_63, table_64 = ratio_tables(timing)
    if table_63:
        axes = list(table_63[0])[1:]
        projected_note = (
            f"; '{PROJECTED_WORKERS}': PROJECTED for >= W free cores (dispatch + slowest worker "
            "+ collect + merge), not measured"
            if PROJECTED_WORKERS in axes
            else ""
        )
        parts.append(
            prose(
                "\n## Thesis table 6.3 shape: seconds per run by scaling ratio (mean ± ci95; "
                f"measured{projected_note})"
            )
        )
        parts.append(table(table_63, ["ratio", *axes], fmt, width))
        parts.append(
            prose(
                "\n## Thesis table 6.4 shape: relative to the baseline (%; the projected column "
                "relative to the baseline's projected time)"
            )
        )
        parts.append(table(table_64, ["ratio", *axes], fmt, width))
        seen = seen_tasks_table(timing)
        parts.append("\n## Seen tasks per run (W x E x T) by scaling ratio")
        parts.append(table(seen, list(seen[0]), fmt, width))
    extra = extrapolation_rows(results, n_runs)
    cols = ["case", "n_runs", "extrapolated_s", "extrapolated_ci95_s", "thesis_rule_s",
            "one_time_s"]  # fmt: skip
    parts.append(
        prose(
            f"\n## Extrapolated wall time for {n_runs} runs (EXTRAPOLATED, not measured)\n"
            f"extrapolated_s (ours): {n_runs} x mean run time, ci95 over block means, one-time "
            f"costs (one_time_s) charged to no case; thesis_rule_s (thesis fig. 6.26): "
            f"{n_runs - 1} x mean"
        )
    )
    parts.append(table(extra, cols, fmt, width))
    quality = quality_rows(results)
    if quality:
        cols = ["case", "after_runs", "metric", "value", "n", "over", "before_adaptation"]
        parts.append("\n## Validation after adaptation (mean ± ci95, Student t, n-1)")
        parts.append(table(quality, cols, fmt, width, ["before_adaptation", "metric"]))
        parts.extend(_paper_sections(results, fmt, width, prose))
    parts.extend(_published_sections(results, fmt, width, prose))
    comparison = comparison_rows(results)
    if comparison:
        cols = list(comparison[0])
        parts.append(
            prose(
                "\n## Against the baseline (time: Welch t-test over block means; quality at "
                "checkpoint at_runs: paired over shared tasks or seeds, see quality_test; * = "
                "significant at 5%)"
            )
        )
        drop = comparison_drop(quality_metric(results))
        parts.append(table(comparison, cols, fmt, width, drop))
    return "\n".join(parts)


def _paper_sections(results: Results, fmt: str, width: int | None, prose: Any) -> list[str]:
    """The paper-format tables (both rules) and time to target."""
    metric = quality_metric(results)
    paper, honest = published.paper_tables(results, metric)
    parts: list[str] = []
    if paper:
        checkpoints = [c for c in paper[0] if c.endswith(" runs")]
        # on a terminal the middle checkpoints go first; the last one is what a paper quotes
        drop = [*checkpoints[1:-1], "case"]
        for title, rows in (
            (published.PAPER_RULE, paper),
            (published.HONEST_RULE, honest),
        ):
            parts.append(prose(f"\n## Paper format, validation {metric} ({title})"))
            parts.append(table(rows, list(rows[0]), fmt, width, drop))
    if results.target:
        rows = published.time_to_target_rows(results)
        parts.append(
            prose(
                f"\n## Time to target: {published.target_text(results)} (wall seconds, "
                "mean ± ci95 over seeds)\nwall_s: measured, the runs up to the target at their "
                "drift-normalised time with the warm-up as one steady-state run (one-time costs "
                "charged to no case), validation excluded; projected_s: PROJECTED for >= W free "
                "cores, not measured; runs: runs done at the target. Interpolated: "
                f"{published.INTERPOLATION}"
                ". With one seed, wall_range is the earliest and latest crossing that the "
                "checkpoints' ci95 over validation tasks allow, and vs_baseline says whether it is "
                "apart from the baseline's ('not resolved' where the ranges overlap)."
            )
        )
        cols = ["case", "W", "seen_tasks_per_run", "reached", "runs", "wall_s", "wall_ci95_s",
                "wall_range", "vs_baseline", "projected_s", "projected_ci95_s",
                "checkpoint_runs", "checkpoint_wall_s", "notes"]  # fmt: skip
        drop = ["checkpoint_runs", "checkpoint_wall_s", "seen_tasks_per_run", "projected_ci95_s",
                "runs", "notes", "wall_ci95_s", "vs_baseline"]  # fmt: skip
        parts.append(table(rows, cols, fmt, width, drop))
    elif results.cases:
        parts.append(prose("\ntime to target: the suite sets no [target]"))
    return parts


def _published_sections(results: Results, fmt: str, width: int | None, prose: Any) -> list[str]:
    rows = published.published_rows(results)
    if not rows:
        return []
    cols = ["source", "case", "metric", "after_runs", "theirs", "ours", "difference", "verdict",
            "ours_projected", "verdict_projected", "rule"]  # fmt: skip
    text = (
        "\n## Published vs measured (verdict: 'agree' when theirs lies in our ci95; ours: mean "
        "± ci95, Student t, n-1, over seeds for accuracy/loss, over runs for timings; "
        f"relative_pct against the baseline case {results.baseline}; ours_projected: timings "
        "PROJECTED for >= W free cores, not measured, as the thesis ran its workers side by side)"
    )
    if results.published_from:
        text += f"\npublished numbers from {results.published_from}"
    drop = ["rule", "source", "metric", "difference", "after_runs", "verdict_projected",
            "ours_projected"]  # fmt: skip
    return [prose(text), table(rows, cols, fmt, width, drop)]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


def plot(results: Results, out: Path) -> list[Path]:
    """The quality and timing PNGs (those that have something to show)."""
    written = []
    stem = f"{results.suite}-{results.scale}"
    figures = (
        ("quality", quality_figure(results)),
        ("timing", timing_figure(results)),
        ("quality-vs-wall", published.quality_vs_wall_figure(results, quality_metric(results))),
        ("time-to-target", published.time_to_target_figure(results)),
    )
    for name, fig in figures:
        if fig is not None:
            written.append(_save(fig, out / f"{stem}-{name}.png"))
    return written


def quality_figure(results: Results) -> Any:
    """Validation metric by checkpoint with ci95 bands; diverged cases are named in the title,
    not drawn. None when there is no validation."""
    quality = [r for r in quality_rows(results) if math.isfinite(r["mean"])]
    if not quality:
        return None
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for case_id in dict.fromkeys(r["case"] for r in quality):
        rows = [r for r in quality if r["case"] == case_id]
        x = np.array([r["after_runs"] for r in rows])
        y = np.array([r["mean"] for r in rows])
        ci = np.nan_to_num(np.array([r["ci95"] for r in rows]))
        ax.plot(x, y, marker="o", label=f"{case_id} (over {rows[-1]['over']})")
        ax.fill_between(x, y - ci, y + ci, alpha=0.2)
    ax.set_xlabel("runs completed (checkpoint)")
    ax.set_ylabel(f"validation {quality[0]['metric']}")
    title = f"{results.suite} ({results.scale})"
    diverged = [c.case_id for c in results.cases.values() if c.divergences]
    if diverged:
        title += f"\nnot shown, diverged: {', '.join(diverged)}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, title="shaded: ci95 (Student t, n-1)", title_fontsize=7)
    return fig


def timing_figure(results: Results) -> Any:
    """Measured and projected seconds per run side by side with ci95 error bars: one panel per
    swept parameter (its values on x, with the ideal-scaling line from the baseline), or one bar
    per case when the suite sweeps no single parameter. None without a baseline row."""
    plt = _pyplot()

    rows = timing_rows(results)
    base = _baseline(results)
    base_rows = [r for r in rows if r["axis"] == "baseline"]
    if not rows or base is None or not base_rows:
        return None
    axes = [a for a in RATIO_AXES if any(r["axis"] == a for r in rows)]
    cores = results.manifests[0].get("machine", {}).get("usable_cores")
    notes = [sequential_note(c, cores) for c in results.cases.values()]
    notes = [n for n in dict.fromkeys(notes) if n]
    series = (("wall", "measured", "o"), ("projected", "projected (>= W free cores)", "s"))
    fig, panels = plt.subplots(
        1, max(1, len(axes)), figsize=(5.5 * max(1, len(axes)), 4.4), squeeze=False
    )
    for axis, ax in zip(axes, panels[0], strict=False):
        swept = sorted(base_rows + [r for r in rows if r["axis"] == axis], key=lambda r: r["ratio"])
        x = np.array([r["ratio"] * base.case[axis] for r in swept], dtype=float)
        for (key, label, marker), shift in zip(series, (0.96, 1.04), strict=True):
            ax.errorbar(
                x * shift,  # a small offset on the log axis keeps equal values both visible
                [r[f"{key}_s"] for r in swept],
                yerr=np.nan_to_num([r[f"{key}_ci95_s"] for r in swept]),
                marker=marker,
                label=label,
                capsize=3,
            )
        # W workers side by side: the ideal is flat (each does its own tasks), or 1/W when they
        # split one step's tasks (task_parallel); more epochs, tasks or steps: linear in the work
        base_s = base_rows[0]["wall_s"]
        if axis == "workers" and base.case.get("mode") == "task_parallel":
            ideal, how = base_s * x[0] / x, "1/W"
        elif axis == "workers":
            ideal, how = np.full_like(x, base_s), "flat"
        else:
            ideal, how = base_s * x / x[0], "linear in the work"
        ax.plot(x, ideal, "k--", linewidth=1, label=f"ideal scaling ({how})")
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.minorticks_off()
        ax.set_xlabel(AXIS_NAMES.get(axis, axis))
    if not axes:  # variants: one pair of bars per case
        ax = panels[0][0]
        position = np.arange(len(rows))
        published.paired_bars(ax, position, rows, series)
        ax.set_xticks(position, [textwrap.fill(r["case"], 14) for r in rows], fontsize=7)
        ax.set_xlabel("case")
    for ax in panels[0]:
        ax.set_ylabel("seconds per run (warm-up excluded)")
        ax.legend(fontsize=7, title="error bars: ci95 (Student t, n-1)", title_fontsize=7)
    title = f"{results.suite} ({results.scale}): seconds per run"
    if notes:
        title += "\nmeasured with " + "; ".join(notes) + "; projected = slowest worker's time"
    wrap = 60 * max(1, len(axes))
    fig.suptitle("\n".join(textwrap.fill(line, wrap) for line in title.split("\n")), fontsize=9)
    return fig


def write(results: Results, out: Path, n_runs: int) -> list[Path]:
    """Markdown, CSV (one per table) and JSON next to the PNG plots; all keep every column."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{results.suite}-{results.scale}"
    tables = {
        "timing": timing_rows(results),
        "extrapolation": extrapolation_rows(results, n_runs),
        "quality": quality_rows(results),
        "comparison": comparison_rows(results),
        "diverged": diverged_rows(results),
        "published": published.published_rows(results),
        "paper_rule": published.paper_tables(results, quality_metric(results))[0],
        "honest": published.paper_tables(results, quality_metric(results))[1],
        "time_to_target": published.time_to_target_rows(results),
    }
    written = []
    md = out / f"{stem}.md"
    md.write_text(render(results, n_runs, fmt="github", wide=True) + "\n")
    written.append(md)
    for name, rows in tables.items():
        if not rows:
            continue
        path = out / f"{stem}-{name}.csv"
        with path.open("w", newline="") as handle:
            columns = list(dict.fromkeys(k for row in rows for k in row))  # every row's keys
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
    json_path = out / f"{stem}.json"
    write_json_atomic(
        json_path,
        {
            "suite": results.suite,
            "scale": results.scale,
            "machine": results.manifests[0].get("machine"),
            "status": [m.get("status") for m in results.manifests],
            "not_run": results.not_run,
            **tables,
        },
    )
    written.append(json_path)
    return [*written, *plot(results, out)]


def as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str)
