"""Our numbers beside the published ones, in the paper's format, and time to a target quality.

- *published vs measured*: each ``[[published]]`` row of the suite (kept in the manifest) beside
  our mean ± ci95 at the same checkpoint, and whether theirs lies in our interval. A paper number
  is only worth reproducing if the reader can see at a glance where we agree and where not.
- *paper-format tables*: workers as rows, checkpoints as columns, twice: with the paper's rule
  (best of the seeds, ci95 over validation tasks: how DMAML's tables were made) and the honest
  one (mean over seeds, ci95 over seeds, Student t with n-1). The first is narrower and
  optimistic; showing both says how much of a gap is the rule and how much the method.
- *time to target*: wall seconds until the validation quality first reaches the suite's target,
  measured (runs at their drift-normalised time, the warm-up as one steady-state run; validation
  time excluded) and projected for >= W free cores.
  Seconds per run alone cannot say whether more workers pay off: W workers see W times the
  tasks per run and may need fewer runs.

Everything here reads the records a report already loaded (harness.report.Results).
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np

from dmaml_core.metrics import Metric
from harness.stats import summarize
from harness.suite import TIMING_METRICS

if TYPE_CHECKING:
    from harness.report import CaseResults, Results

PAPER_RULE = "paper's rule: best of seeds, ci95 over validation tasks"
HONEST_RULE = "honest: mean over seeds, ci95 over seeds (Student t, n-1)"
INTERPOLATION = (
    "linear between the last checkpoint short of the target and the first at or past it "
    "(wall seconds and runs interpolated alike); checkpoint_wall_s: at that first checkpoint"
)


def _final(validation: dict[str, Any], metric: Metric | str) -> float:
    return float(validation[f"{metric}_by_step"][-1])


def declared(results: Results, name: str) -> Metric | None:
    """The metric called ``name`` as the cases' domain declared it (direction, unit), or None
    where no case's domain declares it (a suite refuses that at --dry-run; older folders may
    still hold such a target)."""
    for case in results.cases.values():
        for metric in case.metrics:
            if metric.name == name:
                return metric
    return None


def seed_runs(case: CaseResults) -> dict[int, dict[int, dict[str, Any]]]:
    """seed -> run_index -> run record (diverged runs are not in the case's lists, so a
    diverged seed's runs stop there). The warm-up (index 0) counts as one steady-state run: its
    wall and projected seconds are the median of the seed's timed runs, so no case is charged the
    one-time costs (tracing, layout search) that only the first case of a process pays
    (``report.one_time_s`` lists them)."""
    out: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in case.runs:
        out[r["seed"]][r["run_index"]] = r
    for r in case.warmups:
        timed = out.get(r["seed"], {}).values()
        steady = {
            key: float(np.median([t[key] for t in timed])) if timed else r[key]
            for key in ("wall_s", "projected_s")
        }
        out[r["seed"]][r["run_index"]] = {**r, **steady}
    return out


def cumulative(runs: dict[int, dict[str, Any]], after: int, key: str) -> float:
    """Sum of ``key`` over runs 0..after-1 (the runs done at checkpoint ``after``); nan when one
    of them has no record."""
    if any(i not in runs for i in range(after)):
        return math.nan
    return float(sum(runs[i][key] for i in range(after)))


def _cell(mean: float, ci95: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(ci95):
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {ci95:.2g}"


# 1. published vs measured


def _ours(
    results: Results, row: dict[str, Any], key: str = "wall_s"
) -> tuple[float, float, int, str, str]:
    """(mean, ci95, n, over, reason not comparable or '') for one published row; timings from
    the runs' ``key`` (wall_s: measured, projected_s: projected for >= W free cores)."""
    from harness.report import _baseline, _diverged_text

    case = results.cases[row["case"]]
    metric = row["metric"]
    if case.divergences:
        return math.nan, math.nan, 0, "", _diverged_text(case)
    if metric not in TIMING_METRICS:  # a validation metric of the domain
        after = row.get("after_runs")
        vals = [v for v in case.validations if v["after_runs"] == after]
        if not vals:
            ours = sorted({v["after_runs"] for v in case.validations})
            at = ", ".join(map(str, ours))
            return math.nan, math.nan, 0, "", f"no checkpoint at {after} (ours: {at})"
        s = summarize([_final(v, metric) for v in vals])
        return s.mean, s.ci95, s.n, "seeds", ""
    wall = summarize([r[key] for r in case.runs])
    if metric == "seconds_per_run":
        return wall.mean, wall.ci95, wall.n, "runs", ""
    base = _baseline(results)
    if base is None:
        return math.nan, math.nan, 0, "", "no baseline case"
    if base is case:  # 100 % by definition, whatever the spread of its runs
        return 100.0, 0.0, wall.n, "runs", ""
    b = summarize([r[key] for r in base.runs])
    relative = 100.0 * wall.mean / b.mean
    # first-order (delta-method) propagation of both half-widths into the ratio
    ci = 100.0 * math.hypot(wall.ci95 / b.mean, wall.mean * b.ci95 / b.mean**2)
    return relative, ci, min(wall.n, b.n), "runs", ""


def published_rows(results: Results) -> list[dict[str, Any]]:
    """One row per published number: theirs, ours, difference and a verdict: 'agree' (theirs in
    our ci95), 'differ', 'not run at this scale', 'n too small' (no ci95: fewer than 2 seeds or
    runs), or why there is nothing to compare (diverged, no such checkpoint)."""
    rows = []
    for p in results.published:
        their_ci = p.get("ci95")
        theirs = _cell(p["value"], math.nan if their_ci is None else float(their_ci))
        if p.get("read_off_plot"):
            theirs += " (read off plot)"
        row: dict[str, Any] = {
            "source": p["source"],
            "case": p["case"],
            "metric": p["metric"],
            "after_runs": p.get("after_runs") if p.get("after_runs") is not None else "-",
            "theirs": theirs,
            "ours": "-",
            "difference": math.nan,
            "verdict": "",
            "ours_projected": "-",  # timings: the thesis ran its W workers side by side
            "verdict_projected": "",
            "rule": p.get("rule") or "",
            "theirs_value": p["value"],
            "theirs_ci95": p.get("ci95"),
            "ours_mean": math.nan,
            "ours_ci95": math.nan,
            "ours_n": 0,
        }
        if p["case"] not in results.cases:
            planned = p["case"] in results.not_run
            row["verdict"] = "planned, no records yet" if planned else "not run at this scale"
            rows.append(row)
            continue
        mean, ci95, n, over, reason = _ours(results, p)
        row.update(ours_mean=mean, ours_ci95=ci95, ours_n=n)
        if reason:
            row["verdict"] = reason
        else:
            row["ours"] = f"{_cell(mean, ci95)} (n={n} {over})"
            row["difference"] = mean - p["value"]
            row["verdict"] = _verdict(p["value"], mean, ci95, n)
            if p["metric"] in ("seconds_per_run", "relative_pct"):
                mean, ci95, n, over, _ = _ours(results, p, "projected_s")
                row["ours_projected"] = f"{_cell(mean, ci95)} (n={n} {over})"
                row["verdict_projected"] = _verdict(p["value"], mean, ci95, n)
        rows.append(row)
    return rows


def _verdict(theirs: float, mean: float, ci95: float, n: int) -> str:
    if n < 2 or math.isnan(ci95):
        return "n too small"
    return "agree" if abs(theirs - mean) <= ci95 else "differ"


# 2. paper-format tables


def _ordered_cases(results: Results) -> list[CaseResults]:
    cases = list(results.cases.values())
    return sorted(cases, key=lambda c: (int(c.case["workers"]), cases.index(c)))


def paper_tables(
    results: Results, metric: Metric
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(paper's rule, honest) tables: one row per case, W first, one column per checkpoint."""
    checkpoints = sorted({v["after_runs"] for c in results.cases.values() for v in c.validations})
    if not checkpoints:
        return [], []
    paper, honest = [], []
    for case in _ordered_cases(results):
        if not case.validations:
            continue
        row_p: dict[str, Any] = {"W": case.case["workers"], "case": case.case_id}
        row_h = dict(row_p)
        for after in checkpoints:
            column = f"{after} runs"
            vals = [v for v in case.validations if v["after_runs"] == after]
            if case.divergences:
                from harness.report import _diverged_text

                row_p[column] = row_h[column] = _diverged_text(case)
                continue
            if not vals:
                row_p[column] = row_h[column] = "-"
                continue
            best = vals[0]
            for v in vals[1:]:
                if metric.better(_final(v, metric), _final(best, metric)):
                    best = v
            tasks = summarize(best[f"{metric}_final_per_task"])
            row_p[column] = f"{tasks.format(3)} (seed {best['seed']} of {len(vals)})"
            seeds = summarize([_final(v, metric) for v in vals])
            row_h[column] = seeds.format(3) + (" (1 seed: no ci95)" if seeds.n < 2 else "")
        paper.append(row_p)
        honest.append(row_h)
    return paper, honest


# 3. time to target


def _seed_time(
    validations: list[dict[str, Any]],
    runs: dict[int, dict[str, Any]],
    metric: Metric,
    target: float,
    shift: float = 0.0,
) -> dict[str, float] | None:
    """When one seed first reached the target (None: not reached at any checkpoint), linearly
    interpolated between checkpoints. ``shift`` moves every checkpoint's value by that many of
    its ci95 over validation tasks in the favourable direction (+1: the earliest crossing the
    checkpoints' uncertainty allows; -1: the latest)."""
    up = 1.0 if metric.higher_is_better else -1.0

    def reached(value: float) -> bool:
        return metric.reached(value, target)

    def value(v: dict[str, Any]) -> float:
        if not shift:
            return _final(v, metric)
        tasks = summarize(v[f"{metric}_final_per_task"])
        ci = 0.0 if math.isnan(tasks.ci95) else tasks.ci95
        return _final(v, metric) + shift * up * ci

    points = sorted((v["after_runs"], value(v)) for v in validations)
    for i, (after, reached_value) in enumerate(points):
        if not reached(reached_value):
            continue
        wall = cumulative(runs, after, "wall_s")
        projected = cumulative(runs, after, "projected_s")
        first = after > 0 and (i == 0 or points[i - 1][0] == 0)  # the first checkpoint after 0
        out = {"runs": float(after), "wall_s": wall, "projected_s": projected,
               "checkpoint_runs": float(after), "checkpoint_wall_s": wall,
               "first_checkpoint": float(first)}  # fmt: skip
        if i > 0:
            before, previous = points[i - 1]
            diff = reached_value - previous
            frac = (target - previous) / diff if diff else 1.0
            for key, at in (("wall_s", "wall_s"), ("projected_s", "projected_s")):
                start = cumulative(runs, before, at)
                out[key] = start + frac * (out[key] - start)
            out["runs"] = before + frac * (after - before)
        return out
    return None


def _range_text(earliest: dict[str, float] | None, latest: dict[str, float] | None) -> str:
    if earliest is None:
        return "not reached even at the checkpoints' upper ci95"
    late = "not reached" if latest is None else f"{latest['wall_s']:.3g} s"
    return f"between {earliest['wall_s']:.3g} s and {late}"


def time_to_target_rows(results: Results) -> list[dict[str, Any]]:
    """Per case: wall seconds (measured and projected) to the target, mean ± ci95 over the
    seeds that reached it; 'not reached' (with the best value seen) when none did."""
    target = results.target
    if not target:
        return []
    metric, value = declared(results, target["metric"]), float(target["value"])
    if metric is None:
        return [
            {
                "case": case.case_id,
                "W": case.case["workers"],
                "reached": f"not comparable: the domain declares no {target['metric']!r}",
            }
            for case in _ordered_cases(results)
        ]
    rows = []
    for case in _ordered_cases(results):
        per_seed = seed_runs(case)
        by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for v in case.validations:
            by_seed[v["seed"]].append(v)
        times = []
        for seed, vals in by_seed.items():
            t = _seed_time(vals, per_seed.get(seed, {}), metric, value)
            if t is not None:
                times.append(t)
        row: dict[str, Any] = {
            "case": case.case_id,
            "W": case.case["workers"],
            "seen_tasks_per_run": _seen(case.case),
            "reached": f"{len(times)}/{len(by_seed)} seeds",
            "wall_range": "-",
        }
        if len(by_seed) == 1:  # one seed: no ci over seeds; the checkpoints' ci95 bound it
            ((seed, vals),) = by_seed.items()
            runs = per_seed.get(seed, {})
            early = _seed_time(vals, runs, metric, value, shift=1.0)
            late = _seed_time(vals, runs, metric, value, shift=-1.0)
            row["wall_range"] = _range_text(early, late)
            row["_earliest_s"] = math.inf if early is None else early["wall_s"]
            row["_latest_s"] = math.inf if late is None else late["wall_s"]
        numbers = ("runs", "wall_s", "projected_s", "checkpoint_runs", "checkpoint_wall_s")
        for key in numbers:
            s = summarize([t[key] for t in times])
            row[key] = s.mean
            if key in ("wall_s", "projected_s"):
                row[f"{key.removesuffix('_s')}_ci95_s"] = s.ci95
        notes = []
        if not times:
            finals = [_final(v, metric) for v in case.validations]
            pick = max if metric.higher_is_better else min
            best = pick(finals, default=math.nan)
            row["reached"] = "not reached" + (f" (best {best:.3g})" if finals else "")
        elif len(times) < len(by_seed):
            notes.append(f"mean of the {len(times)} seeds reaching it")
        if any(t["first_checkpoint"] for t in times):
            notes.append(
                "past the target at the first checkpoint after run 0: the time is interpolated "
                "from run 0 (an upper bound; add earlier checkpoints to resolve it)"
            )
        if case.divergences:
            notes.append("diverged in " + ", ".join(f"seed {s}" for s in sorted(case.divergences)))
        row["notes"] = "; ".join(notes)
        rows.append(row)
    _resolve_against_baseline(rows, results.baseline)
    for row in rows:
        row.pop("_earliest_s", None)
        row.pop("_latest_s", None)
    return rows


def _resolve_against_baseline(rows: list[dict[str, Any]], baseline: str) -> None:
    """With one seed, whether a case's crossing interval is apart from the baseline's: "sooner"
    or "later" when the intervals do not overlap, "not resolved" when they do."""
    base = next((r for r in rows if r["case"] == baseline and "_earliest_s" in r), None)
    for row in rows:  # every row has the column (the CSV's header comes from the first)
        row["vs_baseline"] = "baseline" if row is base else ""
        if base is None or row is base or "_earliest_s" not in row:
            continue
        if math.isinf(row["_earliest_s"]) and math.isinf(base["_earliest_s"]):
            row["vs_baseline"] = "neither reached"
        elif row["_latest_s"] < base["_earliest_s"]:
            row["vs_baseline"] = "sooner"
        elif row["_earliest_s"] > base["_latest_s"]:
            row["vs_baseline"] = "later"
        else:
            row["vs_baseline"] = "not resolved"


def _seen(case: dict[str, Any]) -> int:
    """Tasks a run trains on: W workers x E MAML steps x T tasks each."""
    return int(case["workers"]) * int(case["epochs"]) * int(case["tasks"])


def target_text(results: Results) -> str:
    target = results.target
    assert target is not None
    metric = declared(results, target["metric"])
    sign = "<=" if metric is None or not metric.higher_is_better else ">="
    return f"validation {target['metric']} {sign} {target['value']:g}"


# figures


def time_to_target_figure(results: Results) -> Any:
    """Measured and projected seconds to the target per case, ci95 error bars; cases that did
    not reach it are named in the title. None without a target or when no case reached it."""
    from harness.report import _pyplot

    rows = [r for r in time_to_target_rows(results) if not math.isnan(r.get("wall_s", math.nan))]
    if not rows or not results.target:
        return None
    missed = [
        r["case"] for r in time_to_target_rows(results) if math.isnan(r.get("wall_s", math.nan))
    ]
    fig, ax = _pyplot().subplots(figsize=(max(6.0, 1.2 * len(rows) + 2), 4.4))
    position = np.arange(len(rows))
    series = (
        ("wall", "measured (steady-state runs; validation excluded)"),
        ("projected", "projected for >= W free cores (not measured)"),
    )
    paired_bars(ax, position, rows, series)
    ax.set_xticks(
        position, [textwrap.fill(f"{r['case']} ({r['reached']})", 16) for r in rows], fontsize=7
    )
    ax.set_ylabel("wall seconds to reach the target")
    ax.legend(
        fontsize=7,
        title="error bars: ci95 over seeds (Student t, n-1);\ninterpolated between checkpoints",
        title_fontsize=7,
    )
    title = f"{results.suite} ({results.scale}): time to {target_text(results)}"
    if missed:
        title += "\nnot reached: " + ", ".join(missed)
    ax.set_title("\n".join(textwrap.fill(t, 90) for t in title.split("\n")), fontsize=9)
    return fig


def quality_vs_wall_figure(results: Results, metric: Metric) -> Any:
    """Validation metric against cumulative wall seconds (mean over seeds, checkpoint by
    checkpoint), the target as a dashed line: which case gets good fastest. None without
    validation."""
    from harness.report import _pyplot

    lines = []
    for case in _ordered_cases(results):
        if case.divergences or not case.validations:
            continue
        runs = seed_runs(case)
        by_after: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for v in case.validations:
            wall = cumulative(runs.get(v["seed"], {}), v["after_runs"], "wall_s")
            if not math.isnan(wall):
                by_after[v["after_runs"]].append((wall, _final(v, metric)))
        points = [
            (float(np.mean([w for w, _ in p])), float(np.mean([m for _, m in p])))
            for _, p in sorted(by_after.items())
        ]
        if points:
            lines.append((case.case_id, points))
    if not lines:
        return None
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for case_id, points in lines:
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=case_id)
    if results.target and results.target["metric"] == metric.name:
        ax.axhline(results.target["value"], color="k", linestyle="--", linewidth=1,
                   label=f"target: {target_text(results)}")  # fmt: skip
    ax.set_xlabel(
        "cumulative wall seconds (steady-state runs; one-time costs and validation excluded)"
    )
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"{results.suite} ({results.scale}): quality against wall time", fontsize=9)
    ax.legend(fontsize=7, title="mean over seeds at each checkpoint", title_fontsize=7)
    return fig


def paired_bars(ax: Any, position: np.ndarray, rows: list[dict[str, Any]], series: Any) -> None:
    """Two bars per row (measured, projected: ``series`` of (key, label, ...)), with the ci95 of
    ``<key>_ci95_s`` as error bars; shared by the timing and time-to-target plots."""
    for (key, label, *_), shift in zip(series, (-0.2, 0.2), strict=True):
        ax.bar(
            position + shift,
            [r[f"{key}_s"] for r in rows],
            0.4,
            yerr=np.nan_to_num([r[f"{key}_ci95_s"] for r in rows]),
            capsize=3,
            label=label,
        )
