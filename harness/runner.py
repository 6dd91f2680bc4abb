"""Drive a suite: for every case and seed, a warm-up run, timed runs and validations, each record
appended to the store the moment it exists. Knows cases and measurements, never MAML maths."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from dmaml_core import backends
from dmaml_core.backends import Backend, WorkerError
from dmaml_core.backends.base import WorkerLost
from dmaml_core.dmaml import CentralLearner, RunRecord, TaskParallelLearner
from dmaml_core.maml import MamlConfig
from dmaml_core.metrics import Metric, metric_fields
from dmaml_core.tasks import make_domain
from dmaml_core.weight_generators import make_weight_generator
from dmaml_core.worker import WorkerConfig, compiled_maml
from harness.calibration import Calibrator, calibration, kind_for, step_timer
from harness.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSchedule,
    CheckpointStore,
    Written,
    checkpoint_dir,
    validation_seed,
)
from harness.machine import device_info
from harness.measure import RunMeter
from harness.progress import ProgressEvent
from harness.store import RunFolder, StoreError
from harness.suite import NO_LIMITS_ENV, Case, Suite

Progress = Callable[[ProgressEvent], None]
RECORDED_FIELDS = (
    "domain",
    "mode",
    "backend",
    "workers",
    "epochs",
    "tasks",
    "inner_steps",
    "order",
    "aggregation",
    "weight_generator",
)


class CaseFailed(RuntimeError):
    """A case could not run (worker crash, hang, bad parameters); completed records are kept."""


def make_backend(
    case: Case, config: WorkerConfig, timeout_s: float | None = None, max_failures: int = 0
) -> Backend:
    """``max_failures`` > 0 lets Ray restart a lost actor that often (``WorkerLost``); the
    processes backend cannot, so a lost process stays fatal there."""
    options: dict[str, Any] = {}
    if case.backend != "serial" and timeout_s is not None:
        options["timeout_s"] = timeout_s
    if case.backend == "ray" and max_failures > 0:
        options["max_restarts"] = max_failures
    if os.environ.get(NO_LIMITS_ENV) == "1":  # the suite's own bounds were lifted the same way
        options["allow_large"] = True
    if case.backend == "processes" and case.processes:
        options["processes"] = case.processes
    if case.backend != "serial" and case.threads:
        options["threads_per_process"] = case.threads
    return backends.make_backend(case.backend, config, case.workers, **options)


def maml_config(case: Case, loss: str) -> MamlConfig:
    return MamlConfig(
        alpha=case.alpha,
        beta=case.beta,
        inner_steps=case.inner_steps,
        order=case.order,  # type: ignore[arg-type]
        aggregation=case.aggregation,  # type: ignore[arg-type]
        loss=loss,  # type: ignore[arg-type]
        jit_compile=case.jit_compile,
    )


def calibrator(suite: Suite, case: Case) -> Calibrator | None:
    """The plan's calibration job for ``case`` (harness/calibration.py); None when it is off."""
    plan = suite.plan
    if plan.calibration == "off":
        return None
    if plan.calibration == "baseline":
        base = suite.baseline_case()
        domain = make_domain(base.domain, **base.params())
        maml = maml_config(base, domain.loss)
        return Calibrator(
            f"baseline step {base.case_id}",
            lambda seconds: step_timer(domain, maml, base.tasks, seconds),
            plan.calibration_s,
            plan.blocks,
        )
    kind = kind_for(case.domain)
    return Calibrator(
        kind, lambda seconds: calibration(kind, seconds), plan.calibration_s, plan.blocks
    )


def build(
    case: Case, seed: int, timeout_s: float | None = None, max_failures: int = 0
) -> tuple[Any, WorkerConfig, Backend]:
    """(learner, worker config, backend) for one case and seed; ``timeout_s`` is the per-run
    worker limit (None: the backend scales it from the measured runs), ``max_failures`` how many
    lost workers the backend may restart (see ``make_backend``)."""
    domain = make_domain(case.domain, **case.params())
    maml = maml_config(case, domain.loss)
    config = WorkerConfig(domain, maml, epochs=case.epochs, tasks_per_step=case.tasks, seed=seed)
    backend = make_backend(case, config, timeout_s, max_failures)
    theta = domain.model().init(seed)
    learner: CentralLearner | TaskParallelLearner
    if case.mode == "task_parallel":
        learner = TaskParallelLearner(theta, backend, maml, case.tasks)
    else:
        params = {"g": case.g} if case.weight_generator == "weighted" else {}
        learner = CentralLearner(
            theta, backend, make_weight_generator(case.weight_generator, **params)
        )
    return learner, config, backend


def run_fields(
    case: Case, record: RunRecord, meter: RunMeter, metrics: tuple[Metric, ...] = ()
) -> dict[str, Any]:
    """The measurement fields of one run, with units in the names; the training score (the last
    inner step's mean over the tasks) as ``train_<name>`` of the domain's score metric, where it
    declares one (train_accuracy, train_return); a regression has none."""
    measured = meter.result
    assert measured is not None
    wall = measured.wall_s
    compute = record.compute_s
    steps = int(record.loss_sums.size)
    tasks = steps * case.tasks if case.mode == "dmaml" else case.tasks
    cpu_total = measured.driver_cpu_s + (
        float(record.worker_cpu_s.sum()) if case.backend != "serial" else 0.0
    )
    last_losses = record.loss_sums[:, -1]
    return {
        "wall_s": wall,
        "dispatch_s": record.dispatch_s,
        "compute_s": compute.tolist(),
        "compute_max_s": float(compute.max()),
        "compute_sum_s": float(compute.sum()),
        "collect_s": record.collect_s,
        "merge_s": record.merge_s,
        "overhead_s": max(
            0.0, wall - float(compute.sum() if case.backend == "serial" else compute.max())
        ),
        "projected_s": record.dispatch_s
        + float(compute.max())
        + record.merge_s
        + (record.collect_s if case.backend != "serial" else 0.0),
        "driver_cpu_s": measured.driver_cpu_s,
        "worker_cpu_s": record.worker_cpu_s.tolist(),
        "cpu_s": cpu_total,
        "peak_rss_bytes": measured.peak_rss_bytes,
        "peak_rss_method": measured.peak_rss_method,
        "gpu": measured.gpu,
        "loss_sums": record.loss_sums.tolist(),
        "loss_sum": float(np.mean(last_losses)),
        **{
            f"train_{m.name}": float(np.mean(record.accuracies[:, -1]))
            for m in metrics
            if m.source == "score"
        },
        "kept": list(record.kept),
        "diverged": bool(record.diverged or not np.all(np.isfinite(last_losses))),
        "tasks_per_s": tasks / wall,
        "meta_steps_per_s": (steps if case.mode == "dmaml" else 1) / wall,
        **{f"backend_{k}": v for k, v in record.extra.items()},
    }


def validate(learner: Any, config: WorkerConfig, suite: Suite, seed: int) -> dict[str, Any]:
    """Thesis fig. 5.1: the [steps + 1, V] query loss/accuracy matrix of fixed held-out tasks;
    the figure for step s is the row mean."""
    plan = suite.plan
    rng = np.random.default_rng(validation_seed(seed))  # a stream no worker uses
    tasks = config.domain.sample(rng, plan.validation_tasks, "test")
    compiled = compiled_maml(config.domain, config.maml)
    start = time.perf_counter()
    losses, scores = compiled.validate(learner.theta, tasks, plan.validation_steps)
    return {
        **metric_fields(config.domain.metrics, losses, scores),
        "validation_s": time.perf_counter() - start,
    }


def _tracing_count(learner: Any) -> int:
    """Traces made so far by a compiled learner (0 for one that does not count them)."""
    count = getattr(learner, "tracing_count", None)
    return int(count()) if callable(count) else 0


def run_case_seed(
    suite: Suite,
    case: Case,
    seed: int,
    folder: RunFolder,
    base: dict[str, Any],
    progress: Progress,
    position: tuple[int, int] = (1, 1),
) -> None:
    """One case-seed; ``position`` is (its 1-based index, the number of case-seeds to run)."""
    plan = suite.plan
    # Traced functions are kept across case-seeds (``compiled_maml`` caches them per domain and
    # config): a sweep traces once per shape in this process. The warm-up run record says how many
    # traces it made here (0: reused, or made in worker processes) and which layout ran.
    started = time.perf_counter()
    learner, config, backend = build(case, seed, plan.worker_timeout_s, plan.max_failures)
    driver_learner = compiled_maml(config.domain, config.maml)
    traces_before = _tracing_count(driver_learner)
    meter = RunMeter()
    store = CheckpointStore(checkpoint_dir(folder.path, case.case_id, seed))
    schedule = CheckpointSchedule(plan.checkpoint_every)
    identity = {"case_id": case.case_id, "config_hash": case.config_hash(), "seed": seed}
    written: list[Written] = []
    calibrate = calibrator(suite, case)

    def save(runs_done: int) -> None:
        """An exact checkpoint after ``runs_done`` runs (outside every timed region)."""
        begin = time.perf_counter()
        state = learner.get_state()
        if state["runs_done"] != runs_done:
            raise CheckpointError(f"learner at run {state['runs_done']}, expected {runs_done}")
        # TF's conv kernels give other bits with other thread counts (sinusoid's MLP does not):
        # the thread setting is stored so that a resume with another one is visible
        meta = {**identity, "validation_seed": validation_seed(seed)}
        meta["threads_per_worker"] = base.get("threads_per_worker")
        info = store.write(runs_done, state, meta)
        written.append(info)
        schedule.wrote(time.perf_counter() - begin)

    def sweep(first: int) -> None:
        """Runs ``first`` .. the last, with their validations, checkpoints and calibration
        samples (before each block of timed runs and after the last one; harness/drift.py)."""
        for done in range(first, total + 1):
            if calibrate is not None and calibrate.due(done, first, total):
                sample = calibrate.sample(done)
                folder.append({**base, "kind": "calibration", **sample})
            if done in plan.checkpoints:
                result = validate(learner, config, suite, seed)
                folder.append({**base, "kind": "validation", "after_runs": done, **result})
                value = result[f"{metric}_by_step"][-1]
                progress(replace(at, kind="validation", run=done, metric=metric, value=value))
            if done > first and (done == total or done in plan.checkpoints or schedule.due(done)):
                save(done)
            if done == total:
                break
            with meter:
                record = learner.run()
            fields = run_fields(case, record, meter, config.domain.metrics)
            if done == first:
                fields["driver_new_traces"] = _tracing_count(driver_learner) - traces_before
                chosen = getattr(driver_learner, "layout", None)  # set where a step ran here
                if chosen is not None:
                    fields["layout"] = chosen.as_record()
            nodes = getattr(backend, "worker_nodes", None)  # where each logical worker ran (Ray)
            if nodes:
                fields["backend_nodes"] = list(nodes)
            folder.append({**base, "kind": "run", "run_index": done, "warmup": done == 0, **fields})
            if done > 0:  # the budget is a share of the timed runs, not of the warm-up
                schedule.ran(fields["wall_s"])
            progress(replace(at, kind="run", run=done + 1, wall_s=fields["wall_s"]))
            if fields["diverged"]:
                # no checkpoint here: a resume re-runs from the last one and diverges again
                folder.append(
                    {**base, "kind": "diverged", "run_index": done, "loss_sum": fields["loss_sum"]}
                )
                break

    try:
        threads = getattr(backend, "threads_per_process", None)
        base = {**base, "threads_per_worker": threads}
        layout = getattr(backend, "cluster_layout", None)  # Ray: nodes, CPUs, GPUs, addresses
        folder.append(
            {
                **base,
                "kind": "case_start",
                "case": asdict(case),
                "metrics": [m.as_record() for m in config.domain.metrics],
                "threads": threads,
                "setup_s": time.perf_counter() - started,
                **({"cluster": layout()} if layout is not None else {}),
            }
        )
        total = plan.runs + 1  # run 0 is the warm-up
        at = ProgressEvent("case", case.case_id, seed, *position, runs=total)
        progress(at)
        first = _resume(learner, store, identity, total, folder, base)
        metric = config.domain.metrics[0].name  # the domain's primary metric
        # without a checkpoint yet, a lost worker restarts the case-seed from this state (only
        # Ray restarts lost workers: ``max_restarts``; elsewhere a lost worker is fatal)
        recovers = getattr(backend, "max_restarts", 0) > 0
        initial = learner.get_state() if first == 0 and recovers else None
        failures = 0
        lost: tuple[WorkerLost, Checkpoint | None] | None = None
        while True:
            try:
                if lost is not None:
                    first = _recover(*lost, learner, initial, folder, base)
                sweep(first)
                break
            except WorkerLost as err:
                failures += 1
                checkpoint = store.latest(identity)
                lost = err, checkpoint
                beyond = failures > plan.max_failures
                folder.append(
                    {
                        **base,
                        "kind": "worker_failure",
                        "run_index": learner.runs_done if err.run_index is None else err.run_index,
                        "node": err.node,
                        "node_alive": err.node_alive,
                        "actor": err.actor,
                        "pid": err.pid,
                        "error": str(err),
                        "failures": failures,
                        "max_failures": plan.max_failures,
                        "restored_from_run": None
                        if beyond
                        else checkpoint.runs_done
                        if checkpoint is not None
                        else 0,
                    }
                )
                if beyond:
                    raise WorkerError(
                        f"{err}; that is failure {failures} of this case-seed, more than "
                        f"max_failures = {plan.max_failures} (the suite field `max_failures` "
                        "or the flag `--max-failures`)"
                    ) from None
        folder.append(
            {
                **base,
                "kind": "case_end",
                "elapsed_s": time.perf_counter() - started,
                "checkpoints_written": len(written),
                "checkpoint_s": [w.seconds for w in written],
                "checkpoint_bytes": written[-1].bytes if written else 0,
            }
        )
    except WorkerError as err:
        folder.append({**base, "kind": "case_error", "error": str(err)})
        raise CaseFailed(f"{case.case_id} seed {seed}: {err}") from None
    finally:
        meter.close()
        backend.close()


def _recover(
    lost: WorkerLost,
    checkpoint: Checkpoint | None,
    learner: Any,
    initial: dict[str, Any] | None,
    folder: RunFolder,
    base: dict[str, Any],
) -> int:
    """After a lost worker: let the backend bring its workers back (``WorkerLost.recover``), then
    go on from ``checkpoint`` (the newest one) or, before the first, from ``initial``: restore
    theta and every worker's state, pay the restarted processes' tracing in one untimed run,
    restore again, and return the first run to re-do. Records a ``case_resume`` with
    ``after_failure`` so the report replaces the runs re-done after it (``select_records``)."""
    begin = time.perf_counter()
    recovery = lost.recover()
    if checkpoint is None and initial is None:
        raise WorkerError(f"{lost}; no checkpoint to go on from")
    state = checkpoint.state if checkpoint is not None else initial
    from_run = checkpoint.runs_done if checkpoint is not None else 0
    learner.set_state(state)
    folder.append(
        {
            **base,
            "kind": "case_resume",
            "from_run": from_run,
            "checkpoint": str(checkpoint.path) if checkpoint is not None else None,
            "after_failure": True,
            "recovery": recovery,
            "checkpoint_threads_per_worker": checkpoint.meta.get("threads_per_worker")
            if checkpoint is not None
            else base.get("threads_per_worker"),
        }
    )
    warm = time.perf_counter()
    learner.run()
    learner.set_state(state)
    folder.append(
        {
            **base,
            "kind": "resume_warmup",
            "from_run": from_run,
            "wall_s": time.perf_counter() - warm,
            "recovery_s": time.perf_counter() - begin,
        }
    )
    return from_run


def _resume(
    learner: Any,
    store: CheckpointStore,
    identity: dict[str, Any],
    total: int,
    folder: RunFolder,
    base: dict[str, Any],
) -> int:
    """Continue from the newest usable checkpoint of this case-seed, if any; returns the first run
    to do. Records a ``case_resume`` (so the report replaces what was re-done after it) and, when
    runs remain, a ``resume_warmup``: one untimed run that pays the tracing of this fresh process,
    after which the checkpoint is restored again, so the timed runs stay clean and exact."""
    checkpoint = store.latest(identity)
    if checkpoint is None:
        store.discard_after(-1)  # leftovers of an attempt that never completed a checkpoint
        return 0
    store.discard_after(checkpoint.runs_done)
    learner.set_state(checkpoint.state)
    folder.append(
        {
            **base,
            "kind": "case_resume",
            "from_run": checkpoint.runs_done,
            "checkpoint": str(checkpoint.path),
            "rejected": store.rejected,
            # bit-exact continuation needs the same TF threads as when the checkpoint was written
            "checkpoint_threads_per_worker": checkpoint.meta.get("threads_per_worker"),
        }
    )
    if checkpoint.runs_done < total:
        begin = time.perf_counter()
        learner.run()
        learner.set_state(checkpoint.state)
        folder.append(
            {
                **base,
                "kind": "resume_warmup",
                "from_run": checkpoint.runs_done,
                "wall_s": time.perf_counter() - begin,
            }
        )
    return checkpoint.runs_done


def completed(
    records: list[dict[str, Any]], suite: Suite
) -> tuple[set[tuple[str, int]], dict[tuple[str, int], int]]:
    """(case-seeds already finished, attempts so far per case-seed); refuses a changed config."""
    hashes = {c.case_id: c.config_hash() for c in suite.cases}
    done: set[tuple[str, int]] = set()
    attempts: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.get("case_id", ""), r.get("seed", -1))
        if r.get("kind") == "case_start":
            if key[0] in hashes and r["config_hash"] != hashes[key[0]]:
                raise StoreError(
                    f"case {key[0]} changed since these results were written (config hash "
                    f"{r['config_hash']} -> {hashes[key[0]]}); start a new sweep instead of "
                    "mixing them (run without --resume)"
                )
            attempts[key] = attempts.get(key, 0) + 1
        if r.get("kind") in ("case_end",):
            done.add(key)
    return done, attempts


def run_suite(suite: Suite, folder: RunFolder, progress: Progress | None = None) -> None:
    """Run every case-seed not yet completed in ``folder`` (so a rerun resumes)."""
    progress = progress or _quiet
    folder.repair_tail()
    done, attempts = completed(folder.records(), suite)
    keys = [(case, seed) for case in suite.cases for seed in suite.plan.seeds]
    todo = [(case, seed) for case, seed in keys if (case.case_id, seed) not in done]
    runs_left = len(todo) * (suite.plan.runs + 1)
    progress(ProgressEvent("sweep", "", -1, 0, len(todo), runs=runs_left))
    index = 0
    for case, seed in keys:
        key = (case.case_id, seed)
        if key in done:
            progress(ProgressEvent("skipped", case.case_id, seed, index, len(todo)))
            continue
        index += 1
        base = {
            "suite": suite.name,
            "scale": suite.scale,
            "case_id": case.case_id,
            "config_hash": case.config_hash(),
            "seed": seed,
            "attempt": attempts.get(key, 0),
            # every record says what produced it, not only the case_start record
            **{k: getattr(case, k) for k in RECORDED_FIELDS},
            "device": device_info(),  # cached: kind, oneDNN/XLA state, CPU flags
        }
        run_case_seed(suite, case, seed, folder, base, progress, (index, len(todo)))


def _quiet(event: ProgressEvent) -> None:
    return None
