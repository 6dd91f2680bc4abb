"""Turn stored records into the thesis' tables and plots.

- timing: seconds per run (warm-up excluded, mean ± ci95) per case, relative to the baseline
  (thesis tables 6.3/6.4), with the *projected* time on a machine with >= W free cores;
- extrapolation: warm-up + N x mean run time (thesis fig. 6.26), labelled "extrapolated";
- quality: validation loss/accuracy at each checkpoint across seeds, "0.88 ± 0.005" (paper
  tables 1-5);
- comparison: every case against the baseline, Welch difference, ci95 and p-value.
Written to the terminal and to Markdown, CSV, JSON and PNG files.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from harness.stats import summarize, welch
from harness.store import RunFolder, write_json_atomic

RATIO_AXES = ("workers", "epochs", "tasks", "inner_steps")


@dataclass
class CaseResults:
    case_id: str
    case: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)  # timed runs of the last attempts
    warmups: list[dict[str, Any]] = field(default_factory=list)
    validations: list[dict[str, Any]] = field(default_factory=list)
    diverged_seeds: list[int] = field(default_factory=list)
    threads: Any = None
    startup_s: list[float] = field(default_factory=list)  # building the backend (spawn, init)


@dataclass
class Results:
    suite: str
    scale: str
    baseline: str
    manifests: list[dict[str, Any]]
    cases: dict[str, CaseResults]


def load(folders: list[RunFolder]) -> list[Results]:
    """Group records by (suite, scale); only each case-seed's latest attempt counts."""
    grouped: dict[tuple[str, str], Results] = {}
    for folder in folders:
        manifest = folder.manifest()
        key = (manifest["suite"], manifest["scale"])
        results = grouped.setdefault(
            key, Results(key[0], key[1], manifest.get("baseline", ""), [], {})
        )
        results.manifests.append(manifest)
        records = folder.records()
        latest: dict[tuple[str, int], int] = {}
        for r in records:
            if r["kind"] == "case_start":
                latest[(r["case_id"], r["seed"])] = r["attempt"]
        for r in records:
            seed_key = (r.get("case_id", ""), r.get("seed", -1))
            if latest.get(seed_key) != r.get("attempt"):
                continue
            case = results.cases.get(r["case_id"])
            if r["kind"] == "case_start":
                if case is None:
                    case = results.cases[r["case_id"]] = CaseResults(r["case_id"], r["case"])
                case.threads = r.get("threads")
                case.startup_s.append(r.get("setup_s", math.nan))
            elif case is None:
                continue
            elif r["kind"] == "run":
                (case.warmups if r["warmup"] else case.runs).append(r)
            elif r["kind"] == "validation":
                case.validations.append(r)
            elif r["kind"] == "diverged":
                case.diverged_seeds.append(r["seed"])
    return list(grouped.values())


def _baseline(results: Results) -> CaseResults | None:
    if results.baseline in results.cases:
        return results.cases[results.baseline]
    return next(iter(results.cases.values()), None)


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


def timing_rows(results: Results) -> list[dict[str, Any]]:
    base = _baseline(results)
    base_mean = summarize([r["wall_s"] for r in base.runs]).mean if base else math.nan
    rows = []
    for case in results.cases.values():
        wall = summarize([r["wall_s"] for r in case.runs])
        projected = summarize([r["projected_s"] for r in case.runs])
        warm = summarize([r["wall_s"] for r in case.warmups])
        axis, ratio = scaling(case.case, base.case) if base else ("", math.nan)
        rows.append(
            {
                "case": case.case_id,
                "backend": case.case["backend"],
                "W": case.case["workers"],
                "E": case.case["epochs"],
                "T": case.case["tasks"],
                "axis": axis,
                "ratio": ratio,
                "n_runs": wall.n,
                "wall_s": wall.mean,
                "wall_ci95_s": wall.ci95,
                "relative_pct": 100.0 * wall.mean / base_mean if base_mean else math.nan,
                "warmup_s": warm.mean,
                "startup_s": summarize(case.startup_s).mean,
                "projected_s": projected.mean,
                "projected_ci95_s": projected.ci95,
                "tasks_per_s": summarize([r["tasks_per_s"] for r in case.runs]).mean,
                "cpu_s": summarize([r["cpu_s"] for r in case.runs]).mean,
                "peak_rss_mb": max((r["peak_rss_bytes"] for r in case.runs), default=0) / 2**20,
                "threads": case.threads,
                "diverged_seeds": case.diverged_seeds,
                "notes": "; ".join(wall.warnings()),
            }
        )
    return rows


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
            row_s[axis] = f"{match['wall_s']:.4g} ± {match['wall_ci95_s']:.2g}" if match else "-"
            row_r[axis] = f"{match['relative_pct']:.0f}" if match else "-"
        seconds.append(row_s)
        relative.append(row_r)
    return seconds, relative


def extrapolation_rows(results: Results, n_runs: int) -> list[dict[str, Any]]:
    rows = []
    for case in results.cases.values():
        wall = summarize([r["wall_s"] for r in case.runs])
        warm = summarize([r["wall_s"] for r in case.warmups])
        rows.append(
            {
                "case": case.case_id,
                "n_runs": n_runs,
                "extrapolated_s": warm.mean + n_runs * wall.mean,
                "extrapolated_ci95_s": n_runs * wall.ci95,
                "warmup_s": warm.mean,
            }
        )
    return rows


def _metric(results: Results) -> str:
    losses = [c.case.get("domain") for c in results.cases.values()]
    return "loss" if "sinusoid" in losses else "accuracy"


def quality_rows(results: Results) -> list[dict[str, Any]]:
    """Final-step validation metric per checkpoint: across seeds when there are several, else
    across validation tasks."""
    metric = _metric(results)
    rows = []
    for case in results.cases.values():
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
                    "metric": metric,
                    "value": s.format(3),
                    "mean": s.mean,
                    "ci95": s.ci95,
                    "n": s.n,
                    "over": over,
                    "before_adaptation": float(np.mean([v[f"{metric}_by_step"][0] for v in vals])),
                }
            )
    return rows


def comparison_rows(results: Results) -> list[dict[str, Any]]:
    base = _baseline(results)
    if base is None:
        return []
    metric = _metric(results)
    rows = []
    for case in results.cases.values():
        if case is base:
            continue
        timing = welch([r["wall_s"] for r in case.runs], [r["wall_s"] for r in base.runs])
        last = max((v["after_runs"] for v in case.validations), default=None)

        def final(c: CaseResults, after: int | None = last) -> list[float]:
            vals = [v for v in c.validations if v["after_runs"] == after]
            if len(vals) == 1:
                return list(vals[0][f"{metric}_final_per_task"])
            return [v[f"{metric}_by_step"][-1] for v in vals]

        quality = welch(final(case), final(base))
        rows.append(
            {
                "case": case.case_id,
                "baseline": base.case_id,
                "wall_diff_s": timing.difference,
                "wall_diff_ci95_s": timing.ci95,
                "wall_p": timing.p_value,
                "wall_significant": timing.significant(),
                f"{metric}_diff": quality.difference,
                f"{metric}_diff_ci95": quality.ci95,
                f"{metric}_p": quality.p_value,
                f"{metric}_significant": quality.significant(),
            }
        )
    return rows


def _fmt(rows: list[dict[str, Any]], columns: list[str]) -> list[list[Any]]:
    def cell(v: Any) -> Any:
        if isinstance(v, float):
            if math.isnan(v):
                return "-"
            return f"{v:.4g}"
        if isinstance(v, bool):
            return "*" if v else ""
        return v

    return [[cell(r.get(c)) for c in columns] for r in rows]


TIMING_COLUMNS = [
    "case",
    "axis",
    "ratio",
    "n_runs",
    "wall_s",
    "wall_ci95_s",
    "relative_pct",
    "projected_s",
    "startup_s",
    "warmup_s",
    "tasks_per_s",
    "peak_rss_mb",
    "notes",
]


def render(results: Results, n_runs: int, fmt: str = "simple") -> str:
    parts = [f"# {results.suite} ({results.scale})"]
    labels = {lab for m in results.manifests for lab in m.get("labels", [])}
    for label in sorted(labels):
        parts.append(f"NOTE: {label}")
    machine = results.manifests[0].get("machine", {})
    parts.append(
        f"machine: {machine.get('cpu_model', '?')}, {machine.get('usable_cores', '?')} "
        f"cores; git {machine.get('git', {}).get('commit', '?')[:10]}"
    )
    timing = timing_rows(results)
    parts.append(
        "\n## Seconds per run (warm-up excluded; mean, ci95; relative to baseline %)\n"
        "projected_s = dispatch + slowest worker + collect + merge: projected, not "
        "measured, wall time on a machine with >= W free cores"
    )
    parts.append(tabulate(_fmt(timing, TIMING_COLUMNS), TIMING_COLUMNS, tablefmt=fmt))
    table_63, table_64 = ratio_tables(timing)
    if table_63:
        axes = list(table_63[0])[1:]
        parts.append("\n## Thesis table 6.3 shape: seconds per run by scaling ratio (mean ± ci95)")
        parts.append(tabulate([list(r.values()) for r in table_63], ["ratio", *axes], tablefmt=fmt))
        parts.append("\n## Thesis table 6.4 shape: relative to the baseline (%)")
        parts.append(tabulate([list(r.values()) for r in table_64], ["ratio", *axes], tablefmt=fmt))
    extra = extrapolation_rows(results, n_runs)
    cols = ["case", "n_runs", "extrapolated_s", "extrapolated_ci95_s", "warmup_s"]
    parts.append(
        f"\n## Extrapolated wall time for {n_runs} runs (warm-up + N x mean; "
        "EXTRAPOLATED, not measured)"
    )
    parts.append(tabulate(_fmt(extra, cols), cols, tablefmt=fmt))
    quality = quality_rows(results)
    if quality:
        cols = ["case", "after_runs", "metric", "value", "n", "over", "before_adaptation"]
        parts.append("\n## Validation after adaptation (mean ± ci95, Student t, n-1)")
        parts.append(tabulate(_fmt(quality, cols), cols, tablefmt=fmt))
    comparison = comparison_rows(results)
    if comparison:
        cols = list(comparison[0])
        parts.append("\n## Against the baseline (Welch t-test; * = significant at 5%)")
        parts.append(tabulate(_fmt(comparison, cols), cols, tablefmt=fmt))
    return "\n".join(parts)


def plot(results: Results, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    quality = quality_rows(results)
    if quality:
        fig, ax = plt.subplots(figsize=(7, 4))
        for case_id in dict.fromkeys(r["case"] for r in quality):
            rows = [r for r in quality if r["case"] == case_id]
            x = np.array([r["after_runs"] for r in rows])
            y = np.array([r["mean"] for r in rows])
            ci = np.nan_to_num(np.array([r["ci95"] for r in rows]))
            ax.plot(x, y, marker="o", label=case_id)
            ax.fill_between(x, y - ci, y + ci, alpha=0.2)
        ax.set_xlabel("runs")
        ax.set_ylabel(f"validation {quality[0]['metric']} (ci95 band)")
        ax.set_title(f"{results.suite} ({results.scale})")
        ax.legend(fontsize=7)
        path = out / f"{results.suite}-{results.scale}-quality.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    timing = [r for r in timing_rows(results) if math.isfinite(r["ratio"])]
    if timing:
        fig, ax = plt.subplots(figsize=(7, 4))
        base = [r for r in timing if r["axis"] == "baseline"]
        for axis in [a for a in RATIO_AXES if any(r["axis"] == a for r in timing)] or ["baseline"]:
            rows = sorted(base + [r for r in timing if r["axis"] == axis], key=lambda r: r["ratio"])
            ax.errorbar(
                [r["ratio"] for r in rows],
                [r["wall_s"] for r in rows],
                yerr=np.nan_to_num([r["wall_ci95_s"] for r in rows]),
                marker="o",
                label=axis,
                capsize=3,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("scaling ratio")
        ax.set_ylabel("seconds per run (warm-up excluded)")
        ax.set_title(f"{results.suite} ({results.scale})")
        ax.legend()
        path = out / f"{results.suite}-{results.scale}-timing.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(results: Results, out: Path, n_runs: int) -> list[Path]:
    """Markdown, CSV (one per table) and JSON next to the PNG plots."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{results.suite}-{results.scale}"
    tables = {
        "timing": timing_rows(results),
        "extrapolation": extrapolation_rows(results, n_runs),
        "quality": quality_rows(results),
        "comparison": comparison_rows(results),
    }
    written = []
    md = out / f"{stem}.md"
    md.write_text(render(results, n_runs, fmt="github") + "\n")
    written.append(md)
    for name, rows in tables.items():
        if not rows:
            continue
        path = out / f"{stem}-{name}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
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
            **tables,
        },
    )
    written.append(json_path)
    return [*written, *plot(results, out)]


def as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str)
