"""Every case of every suite as a pytest-benchmark: one warm-up round, then the suite's run count
as rounds (one DMAML run each). ``extra_info`` carries seed, scale, the case and the validation
result after the last run, so the saved JSON is a complete record for ``pytest-benchmark
compare``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from dmaml_core.worker import compiled_maml
from harness.runner import build, validate
from harness.suite import Case, Suite


def test_suite_case(benchmark: Any, suite_case: tuple[Suite, Case, int]) -> None:
    suite, case, seed = suite_case
    compiled_maml.cache_clear()  # the warm-up round pays tracing, as in `harness run`
    learner, config, backend = build(case, seed)
    records = []
    try:
        benchmark.pedantic(
            lambda: records.append(learner.run()),
            rounds=suite.plan.runs,
            warmup_rounds=1,
            iterations=1,
        )
        result = validate(learner, config, suite, seed) if suite.plan.checkpoints else {}
    finally:
        backend.close()
    last = records[-1]
    benchmark.extra_info.update(
        {
            "suite": suite.name,
            "scale": suite.scale,
            "seed": seed,
            "case": asdict(case),
            "labels": list(suite.labels),
            "runs": len(records),
            "tasks_per_run": int(last.loss_sums.size) * case.tasks,
            "train_loss_sum": float(np.mean(last.loss_sums[:, -1])),
            "train_accuracy": float(np.mean(last.accuracies[:, -1])),
            "diverged": bool(last.diverged),
            "validation_loss_by_step": result.get("loss_by_step"),
            "validation_accuracy_by_step": result.get("accuracy_by_step"),
        }
    )
    assert len(records) == suite.plan.runs + 1  # warm-up + timed rounds all ran
    assert all(np.isfinite(r.loss_sums).all() for r in records)
