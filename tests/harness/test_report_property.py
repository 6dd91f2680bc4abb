"""Property (issue 23): whatever happens to the records files (lines duplicated, reordered,
truncated, two case-seeds interleaved, the same folder given twice or with its parent), ``report``
never counts more runs, validations or seeds than were really written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import report
from harness.store import SCHEMA_VERSION, RunFolder, find_folders

CASE = {
    "domain": "sinusoid",
    "mode": "dmaml",
    "backend": "serial",
    "workers": 1,
    "epochs": 1,
    "tasks": 4,
    "inner_steps": 1,
}


def case_seed_records(case_id: str, seed: int, runs: int) -> list[dict[str, Any]]:
    base = {"case_id": case_id, "seed": seed, "attempt": 0}
    out: list[dict[str, Any]] = [{**base, "kind": "case_start", "case": CASE}]
    for index in range(runs + 1):
        out.append(
            {
                **base,
                "kind": "run",
                "run_index": index,
                "warmup": index == 0,
                "wall_s": 0.01 + 0.001 * index,
                "projected_s": 0.01,
                "tasks_per_s": 400.0,
                "loss_sum": 1.0,
                "diverged": False,
            }
        )
    for after in (0, runs):
        out.append(
            {
                **base,
                "kind": "validation",
                "after_runs": after,
                "loss_by_step": [2.0, 1.0],
                "accuracy_by_step": [0.0, 0.0],
                "loss_final_per_task": [1.0, 1.1],
                "accuracy_final_per_task": [0.0, 0.0],
            }
        )
    out.append({**base, "kind": "case_end"})
    return out


mutation = st.sampled_from(["duplicate", "swap", "truncate", "none"])


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.integers(1, 5),
    seeds=st.integers(1, 3),
    mutations=st.lists(st.tuples(mutation, st.integers(0, 1000)), max_size=8),
    interleave=st.booleans(),
    twice=st.sampled_from(["once", "same", "parent"]),
)
def test_report_never_counts_more_than_exists(
    tmp_path_factory: Any,
    runs: int,
    seeds: int,
    mutations: list[tuple[str, int]],
    interleave: bool,
    twice: str,
) -> None:
    root: Path = tmp_path_factory.mktemp("results")
    folder = RunFolder.create(root, "prop", "smoke")
    cases = ["w1-e1-t4-sum-o2", "w2-e1-t4-sum-o2"]
    plan = {"runs": runs, "seeds": list(range(seeds)), "checkpoints": [0, runs]}
    folder.write_manifest(
        {"suite": "prop", "scale": "smoke", "baseline": cases[0], "cases": cases, "plan": plan}
    )
    per_case_seed = [
        case_seed_records(case_id, seed, runs) for case_id in cases for seed in range(seeds)
    ]
    lines: list[dict[str, Any]] = []
    if interleave:  # round-robin over case-seeds, as parallel writers would
        longest = max(len(r) for r in per_case_seed)
        for i in range(longest):
            lines += [r[i] for r in per_case_seed if i < len(r)]
    else:
        lines = [r for records in per_case_seed for r in records]
    for kind, at in mutations:
        if not lines:
            break
        i = at % len(lines)
        if kind == "duplicate":
            lines.insert(i, dict(lines[i]))
        elif kind == "swap" and len(lines) > 1:
            j = (i + 1) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "truncate":
            lines = lines[: max(i, 1)]
    folder.records_path.write_text(
        "".join(json.dumps({"schema": SCHEMA_VERSION, **r}) + "\n" for r in lines)
    )
    paths = {"once": [folder.path], "same": [folder.path, folder.path]}.get(
        twice, [folder.path.parent, folder.path]
    )
    (results,) = report.load(find_folders(paths))
    for case_id, case in results.cases.items():
        written_runs = {
            (r["seed"], r["run_index"])
            for r in lines
            if r["kind"] == "run" and r["case_id"] == case_id and not r["warmup"]
        }
        written_validations = {
            (r["seed"], r["after_runs"])
            for r in lines
            if r["kind"] == "validation" and r["case_id"] == case_id
        }
        assert len(case.runs) <= len(written_runs)
        assert len(case.validations) <= len(written_validations)
        assert len({r["seed"] for r in case.runs}) <= seeds
        assert {r["seed"] for r in case.runs} <= {s for s, _ in written_runs}
