"""Every case of every suite as a pytest-benchmark: one warm-up run (timed here, not by
pytest-benchmark), then the suite's run count as rounds, one DMAML run each, so ``rounds`` equals
the timed runs. ``extra_info`` carries seed, scale, the case, the validation result after the last
run, the warm-up and start-up times, the dispatch/compute/collect/merge split of the timed runs,
threads per worker, library versions, git commit and device, so the saved JSON is a complete
record for ``pytest-benchmark compare``."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np

from dmaml_core.dmaml import RunRecord
from dmaml_core.worker import compiled_maml
from harness.regression import injected_slowdown
from harness.runner import build, validate
from harness.suite import Case, Suite


def split_means(timed: list[RunRecord]) -> dict[str, float]:
    """Where a timed run's time went, as means over the timed runs: sending theta, the slowest
    worker's and all workers' compute, collecting results and merging them."""
    return {
        "dispatch_s": float(np.mean([r.dispatch_s for r in timed])),
        "compute_max_s": float(np.mean([r.compute_s.max() for r in timed])),
        "compute_sum_s": float(np.mean([r.compute_s.sum() for r in timed])),
        "collect_s": float(np.mean([r.collect_s for r in timed])),
        "merge_s": float(np.mean([r.merge_s for r in timed])),
    }


def test_suite_case(
    benchmark: Any,
    suite_case: tuple[Suite, Case, int],
    provenance: dict[str, Any],
    miniimagenet_fixture: str | None,
) -> None:
    suite, case, seed = suite_case
    compiled_maml.cache_clear()  # the warm-up run pays tracing, as in `harness run`
    started = time.perf_counter()
    learner, config, backend = build(case, seed)
    startup_s = time.perf_counter() - started  # domain, model and backend (worker processes)
    records: list[RunRecord] = []
    slowdown = injected_slowdown()  # DMAML_BENCH_INJECT_SLOWDOWN: the compare recipe's own check

    def timed_run() -> None:
        begin = time.perf_counter()
        records.append(learner.run())
        if slowdown > 1.0:
            time.sleep((time.perf_counter() - begin) * (slowdown - 1.0))

    try:
        started = time.perf_counter()
        records.append(learner.run())
        warmup_s = time.perf_counter() - started
        benchmark.pedantic(timed_run, rounds=suite.plan.runs, iterations=1)
        result = validate(learner, config, suite, seed) if suite.plan.checkpoints else {}
        threads = getattr(backend, "threads_per_process", None)
    finally:
        backend.close()
    timed, last = records[1:], records[-1]
    benchmark.extra_info.update(
        {
            "suite": suite.name,
            "scale": suite.scale,
            "seed": seed,
            "case": asdict(case),
            "data": miniimagenet_fixture if case.domain == "miniimagenet" else None,
            "labels": list(suite.labels),
            "runs": len(timed),  # timed runs, the warm-up excluded (= rounds)
            "warmup_runs": 1,
            "warmup_s": warmup_s,
            "injected_slowdown": slowdown,
            "startup_s": startup_s,
            **split_means(timed),
            "threads_per_worker": threads,
            "tasks_per_run": int(last.loss_sums.size) * case.tasks,
            "train_loss_sum": float(np.mean(last.loss_sums[:, -1])),
            **{  # the domain's training score (accuracy, return); a regression has none
                f"train_{m.name}": float(np.mean(last.accuracies[:, -1]))
                for m in config.domain.metrics
                if m.source == "score"
            },
            "diverged": bool(last.diverged),
            "metrics": [m.as_record() for m in config.domain.metrics],
            **{f"validation_{k}": v for k, v in result.items() if k.endswith("_by_step")},
            **provenance,
        }
    )
    assert len(timed) == suite.plan.runs == benchmark.stats.stats.rounds
    assert all(np.isfinite(r.loss_sums).all() for r in records)
