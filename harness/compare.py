"""``python -m harness compare A B``: two result folders of one suite side by side, per case.

What differs between the two runs comes first (commit, package files, CPU model, library
versions, data), because every number below is only as comparable as those. Then, per case in
both: time per run in each (mean; ci95 over block means, the unit of independence) and B / A with
a Welch test over block means; quality at the last checkpoint both have, paired over validation
tasks or seeds where the two folders share seeds and the case's domain (a seed's validation tasks
come from its own stream), Welch otherwise, said per row. Cases in one folder only are listed.
Two folders of different suites or scales, or a case id with two configurations, are refused in
one line: there is nothing to compare.
"""

from __future__ import annotations

import math
from typing import Any

from tabulate import tabulate

from dmaml_core.metrics import Metric
from harness.report import (
    CaseResults,
    Results,
    block_means,
    by_seed,
    format_p,
    load,
    quality_metric,
    quality_test,
    timing_summary,
)
from harness.stats import welch
from harness.store import RunFolder, StoreError


def _one(folder: RunFolder) -> Results:
    results = load([folder])
    if len(results) != 1:
        raise StoreError(f"{folder.path}: holds {len(results)} suites; compare one folder each")
    return results[0]


def differences(a: Results, b: Results) -> list[str]:
    """Lines naming what differs between the runs: commit, package files, CPU, versions, data."""
    ma, mb = a.manifests[0], b.manifests[0]
    out = []

    def differ(label: str, x: Any, y: Any) -> None:
        if x != y:
            out.append(f"{label}: {x} -> {y}")

    differ(
        "commit",
        ma.get("machine", {}).get("git", {}).get("commit", "?"),
        mb.get("machine", {}).get("git", {}).get("commit", "?"),
    )
    differ(
        "package files (sha256)",
        (ma.get("code") or {}).get("package_sha256", "not recorded"),
        (mb.get("code") or {}).get("package_sha256", "not recorded"),
    )
    differ("CPU", ma.get("machine", {}).get("cpu_model"), mb.get("machine", {}).get("cpu_model"))
    va = ma.get("machine", {}).get("versions", {})
    vb = mb.get("machine", {}).get("versions", {})
    for name in sorted(set(va) | set(vb)):
        differ(name, va.get(name, "-"), vb.get(name, "-"))
    differ("data", ma.get("data"), mb.get("data"))
    return out


def _check_comparable(a: Results, b: Results, path_a: str, path_b: str) -> None:
    if (a.suite, a.scale) != (b.suite, b.scale):
        raise StoreError(
            f"{path_a} holds {a.suite}/{a.scale} and {path_b} {b.suite}/{b.scale}: not comparable"
        )
    hashes_a = a.manifests[0].get("signature", {}).get("cases", {})
    hashes_b = b.manifests[0].get("signature", {}).get("cases", {})
    differ = sorted(c for c in set(hashes_a) & set(hashes_b) if hashes_a[c] != hashes_b[c])
    if differ:
        raise StoreError(
            f"{path_a} and {path_b}: case(s) {', '.join(differ)} have different configurations "
            "under the same id: not comparable"
        )


def case_row(case_a: CaseResults, case_b: CaseResults, metric: Metric) -> dict[str, Any]:
    wall_a, wall_b = timing_summary(case_a, "wall_s"), timing_summary(case_b, "wall_s")
    timing = welch(block_means(by_seed(case_b, "wall_s")), block_means(by_seed(case_a, "wall_s")))
    row: dict[str, Any] = {
        "case": case_a.case_id,
        "A wall_s": f"{wall_a.mean:.4g} ± {wall_a.ci95:.2g}",
        "B wall_s": f"{wall_b.mean:.4g} ± {wall_b.ci95:.2g}",
        "B / A": f"{wall_b.mean / wall_a.mean:.3f}" if wall_a.mean else "-",
        "time p": format_p(timing.p_value),
        "at_runs": "-",
        f"{metric} B - A": "-",
        "quality test": "-",
    }
    common = {v["after_runs"] for v in case_a.validations} & {
        v["after_runs"] for v in case_b.validations
    }
    trained = common - {0}
    if trained and not (case_a.divergences or case_b.divergences):
        last = max(trained)
        quality, test = quality_test(case_b, case_a, metric, last)
        ci = "" if math.isnan(quality.ci95) else f" ± {quality.ci95:.3g}"
        row.update(
            {
                "at_runs": last,
                f"{metric} B - A": f"{quality.difference:+.4g}{ci} (p {format_p(quality.p_value)})",
                "quality test": test,
            }
        )
    return row


def render(folder_a: RunFolder, folder_b: RunFolder) -> str:
    a, b = _one(folder_a), _one(folder_b)
    _check_comparable(a, b, str(folder_a.path), str(folder_b.path))
    metric = quality_metric(a)
    lines = [f"# compare {a.suite} ({a.scale})", f"A: {folder_a.path}", f"B: {folder_b.path}"]
    diffs = differences(a, b)
    lines += ["", "## What differs between A and B"] + (diffs or ["nothing recorded differs"])
    for results, name in ((a, "A"), (b, "B")):
        for warning in results.warnings:
            lines.append(f"WARNING ({name}): {warning}")
    rows = [
        case_row(a.cases[case_id], b.cases[case_id], metric)
        for case_id in a.cases
        if case_id in b.cases
    ]
    lines += ["", "## Per case (time: ci95 over block means; B / A with Welch over block means)"]
    lines.append(tabulate(rows, headers="keys") if rows else "no case in both folders")
    only_a = sorted(set(a.cases) - set(b.cases))
    only_b = sorted(set(b.cases) - set(a.cases))
    if only_a:
        lines.append(f"only in A: {', '.join(only_a)}")
    if only_b:
        lines.append(f"only in B: {', '.join(only_b)}")
    return "\n".join(lines)
