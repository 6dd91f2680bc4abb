"""Use what you trained: a case-seed's final weights, exported or evaluated on fresh tasks.

A finished case-seed's last checkpoint holds theta after its last run (checkpoints are exact,
harness/checkpoint.py). ``export`` writes it as a plain ``.npz`` (``w0``, ``w1``, ... and a JSON
``spec``: domain, its parameters, the network, runs done, where it came from); ``evaluate``
adapts it on validation tasks as the runner's checkpoints do, with the domain's own metrics and a
Student-t ci95 over the tasks. The tasks are the runner's held-out stream by default, so the
figure for the default task count and steps equals the last validation the run recorded.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dmaml_core.files import atomic_write_bytes
from harness.checkpoint import CheckpointError, CheckpointStore, checkpoint_dir, validation_seed
from harness.stats import summarize
from harness.store import RunFolder, StoreError
from harness.suite import Case


def _case_start(folder: RunFolder, case_id: str, seed: int) -> dict[str, Any]:
    """The latest case_start record of this case-seed (it holds the case's full settings)."""
    found: dict[str, Any] | None = None
    cases = set()
    for record in folder.records():  # a torn last line skipped, an archived folder read too
        if record.get("kind") != "case_start" or "case_id" not in record:
            continue
        cases.add(record["case_id"])
        mine = record["case_id"] == case_id and record["seed"] == seed
        if mine and (found is None or record.get("attempt", 0) >= found.get("attempt", 0)):
            found = record
    if found is None:
        known = ", ".join(sorted(cases)) or "none"
        raise StoreError(f"{folder.path}: no case {case_id!r} with seed {seed} (cases: {known})")
    return found


def case_of(record: dict[str, Any]) -> Case:
    """The ``Case`` a case_start record was written for (JSON made its tuples lists)."""
    fields = dict(record["case"])
    fields["domain_params"] = tuple((k, v) for k, v in fields.get("domain_params", []))
    return Case(**fields)


def final_theta(folder: RunFolder, case_id: str, seed: int) -> tuple[list[np.ndarray], int, Case]:
    """(theta, runs done, case) from the case-seed's newest checkpoint that reads back."""
    if not folder.records_path.exists() and not folder.archived_records_path.exists():
        raise StoreError(f"{folder.path}: not a dmaml-bench results folder (no records.jsonl)")
    case = case_of(_case_start(folder, case_id, seed))
    store = CheckpointStore(checkpoint_dir(folder.path, case_id, seed))
    identity = {"case_id": case_id, "config_hash": case.config_hash(), "seed": seed}
    try:
        checkpoint = store.latest(identity)
    except CheckpointError as err:
        raise StoreError(str(err)) from None
    if checkpoint is None:
        why = "; ".join(store.rejected) or "none written"
        raise StoreError(f"{store.directory}: no usable checkpoint ({why})")
    theta = [np.asarray(w) for w in checkpoint.state["theta"]]
    return theta, checkpoint.runs_done, case


def export(folder: RunFolder, case_id: str, seed: int, out: Path) -> dict[str, Any]:
    """Write the final theta as ``out`` (.npz); returns its spec."""
    from dmaml_core.tasks import make_domain

    theta, runs_done, case = final_theta(folder, case_id, seed)
    domain = make_domain(case.domain, **case.params())
    manifest = folder.manifest()
    spec = {
        "format": "dmaml-bench theta v1: arrays w0..w{n-1} in the network's order",
        "domain": case.domain,
        "domain_params": case.params(),
        "network": repr(domain.model()),
        "metrics": [m.as_record() for m in domain.metrics],
        "shapes": [list(w.shape) for w in theta],
        "runs_done": runs_done,
        "case_id": case_id,
        "seed": seed,
        "suite": manifest.get("suite"),
        "scale": manifest.get("scale"),
        "folder": str(folder.path),
        "commit": (manifest.get("code") or {}).get("commit"),
    }
    buffer = io.BytesIO()
    arrays = {f"w{i}": w for i, w in enumerate(theta)}
    np.savez(buffer, spec=np.array(json.dumps(spec, default=str)), **arrays)  # type: ignore[arg-type]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, lambda handle: handle.write(buffer.getvalue()))
    return spec


def load_theta(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    """(theta, spec) of an exported ``.npz``."""
    with np.load(path) as data:
        spec = json.loads(str(data["spec"]))
        theta = [data[f"w{i}"] for i in range(len(spec["shapes"]))]
    return theta, spec


def evaluate(
    folder: RunFolder,
    case_id: str,
    seed: int,
    tasks: int | None = None,
    steps: int | None = None,
    task_seed: int | None = None,
) -> dict[str, Any]:
    """The final theta adapted on ``tasks`` validation tasks for ``steps`` inner steps: per
    metric the value per step (mean over tasks) and the final step's mean and ci95 over tasks.
    ``task_seed`` draws another task stream than the runner's held-out one."""
    from dmaml_core.metrics import metric_fields
    from dmaml_core.tasks import make_domain
    from dmaml_core.worker import compiled_maml
    from harness.runner import maml_config

    theta, runs_done, case = final_theta(folder, case_id, seed)
    plan = folder.manifest().get("plan", {})
    tasks = tasks or int(plan.get("validation_tasks", 100))
    steps = steps or int(plan.get("validation_steps", case.inner_steps))
    domain = make_domain(case.domain, **case.params())
    stream = validation_seed(seed) if task_seed is None else [task_seed, 2**31 - 2]
    batch = domain.sample(np.random.default_rng(stream), tasks, "test")
    compiled = compiled_maml(domain, maml_config(case, domain.loss))
    losses, scores = compiled.validate(theta, batch, steps)
    fields = metric_fields(domain.metrics, losses, scores)
    metrics = []
    for metric in domain.metrics:
        final = summarize(fields[f"{metric.name}_final_per_task"])
        metrics.append(
            {
                **metric.as_record(),
                "by_step": fields[f"{metric.name}_by_step"],
                "mean": final.mean,
                "ci95": None if math.isnan(final.ci95) else final.ci95,
                "n_tasks": final.n,
            }
        )
    return {
        "case_id": case_id,
        "seed": seed,
        "runs_done": runs_done,
        "tasks": tasks,
        "steps": steps,
        "task_stream": "held-out validation stream" if task_seed is None else f"seed {task_seed}",
        "metrics": metrics,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['case_id']} seed {result['seed']} after {result['runs_done']} runs: "
        f"{result['tasks']} tasks ({result['task_stream']}), {result['steps']} inner step(s)"
    ]
    for m in result["metrics"]:
        ci = "" if m["ci95"] is None else f" ± {m['ci95']:.4g}"
        lines.append(
            f"  {m['name']} ({m['unit']}, {'higher' if m['higher_is_better'] else 'lower'} is "
            f"better): {m['mean']:.4g}{ci} (ci95 over {m['n_tasks']} tasks); before adaptation "
            f"{m['by_step'][0]:.4g}"
        )
    return "\n".join(lines)
