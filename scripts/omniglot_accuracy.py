"""Omniglot 5-way 1-shot accuracy of plain MAML with 1 worker (issue 5, "Accuracy").

Thesis table 5.1 settings: alpha 0.4, beta 0.01 (Adam), 32 tasks per meta step, 1 inner step,
first order, validation after 3 adaptation steps; the paper (table 2) reports 0.82 +- 0.007 after
1,000 steps with 1 worker. The same fixed set of held-out test tasks (vinyals split, characters
never seen in training) is evaluated at every checkpoint; the ci95 is over tasks (Student t, n-1
degrees of freedom). Writes one JSON record.

    python scripts/omniglot_accuracy.py --steps 1000 --out results/omniglot_accuracy/run.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from dmaml_core.maml import CompiledMaml, MamlConfig, Tasks, to_tensors
from dmaml_core.models import Weights
from dmaml_core.tasks.omniglot import Omniglot

REPO = Path(__file__).resolve().parents[1]


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean (n - 1 dof)."""
    n = len(values)
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info() -> dict[str, Any]:
    import psutil

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus_logical": os.cpu_count(),
        "cpus_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def validate(
    learner: CompiledMaml, params: Weights, tasks: Tasks, steps: int, chunk: int
) -> np.ndarray:
    """Accuracy matrix [steps + 1, V], evaluated in chunks of tasks to bound memory."""
    rows = []
    for start in range(0, tasks.n_tasks, chunk):
        part = Tasks(*(a[start : start + chunk] for a in tasks))
        rows.append(learner.validate(params, part, steps)[1])
    return np.concatenate(rows, axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.4)
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--order", type=int, choices=(1, 2), default=1)
    parser.add_argument("--aggregation", choices=("sum", "mean"), default="sum")
    parser.add_argument("--k-query", type=int, default=1, help="query images per class")
    parser.add_argument(
        "--val-k-query", type=int, default=None, help="query images per class at validation "
        "(default: --k-query); 1 keeps validation comparable across training query sizes",
    )  # fmt: skip
    parser.add_argument("--val-steps", type=int, default=3)
    parser.add_argument("--val-tasks", type=int, default=1000)
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--val-chunk", type=int, default=200)
    parser.add_argument("--split", choices=("vinyals", "lake"), default="vinyals")
    parser.add_argument("--no-jit", action="store_true", help="disable XLA for the meta step")
    args = parser.parse_args(argv)

    wall_start = time.perf_counter()
    domain = Omniglot(
        n_way=5, k_shot=1, k_query=args.k_query, split=args.split, data_dir=args.data_dir,
        cache_dir=args.cache_dir,
    )  # fmt: skip
    data = domain.preprocessed()
    print(f"data: {data.path} ({'built' if data.built else 'loaded'} in {data.seconds:.2f} s)")
    n_classes = {s: int(domain.classes(s).images.shape[0]) for s in ("train", "test")}
    machine, commit = machine_info(), git_commit()

    cfg = MamlConfig(
        alpha=args.alpha, beta=args.beta, inner_steps=args.inner_steps, order=args.order,
        aggregation=args.aggregation, loss="xent", jit_compile=not args.no_jit,
    )  # fmt: skip
    model = domain.model()
    learner = CompiledMaml(model, cfg)
    params = to_tensors(model.init(args.seed))
    opt_state = learner.init_optimizer(params)
    train_rng = np.random.default_rng([args.seed, 0])
    val_domain = dataclasses.replace(domain, k_query=args.val_k_query or args.k_query)
    val_tasks = val_domain.sample(np.random.default_rng([args.seed, 1]), args.val_tasks, "test")

    checkpoints: list[dict[str, Any]] = []
    sample_s: list[float] = []
    step_s: list[float] = []
    losses: list[float] = []
    train_acc: list[float] = []
    train_start = time.perf_counter()

    def snapshot(complete: bool) -> dict[str, Any]:
        """The JSON record so far; written at every checkpoint, so a run cut short keeps its
        validated checkpoints (``complete`` says whether it reached ``--steps``)."""
        steady_step = np.array(step_s[10:] or step_s or [np.nan])
        steady_sample = np.array(sample_s[10:] or sample_s or [np.nan])
        final = checkpoints[-1]
        return {
            "experiment": "omniglot_accuracy",
            "complete": complete,
            "domain": dataclass_dict(domain),
            "settings": {
                **vars(args),
                "out": str(args.out) if args.out else None,
                "maml": dataclass_dict(cfg),
                "n_way": 5,
                "k_shot": 1,
                "workers": 1,
                "classes": n_classes,
            },
            "seed": args.seed,
            "git_commit": commit,
            "machine": {**machine, "load_avg_now": os.getloadavg()},
            "data": {"cache": str(data.path), "built": data.built, "seconds": data.seconds},
            "steps_done": len(step_s),
            "final": {k: final[k] for k in ("step", "accuracy", "ci95")},
            "checkpoints": checkpoints,
            "timing": {
                "wall_s": time.perf_counter() - wall_start,
                "train_wall_s": time.perf_counter() - train_start,
                "first_step_s": step_s[0] if step_s else None,
                "meta_step_median_ms": float(np.median(steady_step) * 1e3),
                "meta_step_p10_p90_ms": [float(np.percentile(steady_step, q) * 1e3) for q in (10, 90)],  # noqa: E501
                "sample_median_us": float(np.median(steady_sample) * 1e6),
                "sample_share_of_step": float(np.median(steady_sample) / np.median(steady_step)),
            },
            "train_curve": {
                "loss_sum_every_10": [float(np.mean(losses[i : i + 10])) for i in range(0, len(losses), 10)],  # noqa: E501
                "accuracy_every_10": [float(np.mean(train_acc[i : i + 10])) for i in range(0, len(train_acc), 10)],  # noqa: E501
            },
        }  # fmt: skip

    def write(result: dict[str, Any]) -> None:
        if args.out is None:
            return
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.out)  # never a half-written record

    def checkpoint(step: int) -> None:
        start = time.perf_counter()
        acc = validate(learner, params, val_tasks, args.val_steps, args.val_chunk)
        final = acc[-1]
        record: dict[str, Any] = {
            "step": step,
            "accuracy": float(final.mean()),
            "ci95": ci95(final),
            "accuracy_per_adaptation_step": [float(r.mean()) for r in acc],
            "seconds": time.perf_counter() - start,
            "elapsed_s": time.perf_counter() - wall_start,
        }
        checkpoints.append(record)
        print(
            f"step {step:5d}: val acc {record['accuracy']:.4f} +- {record['ci95']:.4f} "
            f"(after 0..{args.val_steps} steps: "
            f"{' '.join(f'{a:.3f}' for a in record['accuracy_per_adaptation_step'])})",
            flush=True,
        )
        write(snapshot(complete=False))

    checkpoint(0)
    train_start = time.perf_counter()
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        tasks = domain.sample(train_rng, args.tasks, "train")
        t1 = time.perf_counter()
        params, opt_state, metrics = learner.step(params, opt_state, tasks)
        loss = float(metrics.loss_sum)  # forces the step to finish, so the timing is honest
        t2 = time.perf_counter()
        sample_s.append(t1 - t0)
        step_s.append(t2 - t1)
        losses.append(loss)
        train_acc.append(float(metrics.accuracy))
        if not np.isfinite(loss):
            print(f"step {step}: loss is {loss}; stopping", flush=True)
            break
        if step % args.val_every == 0 or step == args.steps:
            checkpoint(step)

    result = snapshot(complete=len(step_s) == args.steps)
    final = result["final"]
    print(
        f"final: {final['accuracy']:.4f} +- {final['ci95']:.4f} after {len(step_s)} steps; "
        f"wall {result['timing']['wall_s']:.0f} s; meta step "
        f"{result['timing']['meta_step_median_ms']:.1f} ms, sampling "
        f"{result['timing']['sample_median_us']:.0f} us",
        flush=True,
    )
    write(result)
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def dataclass_dict(obj: object) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
