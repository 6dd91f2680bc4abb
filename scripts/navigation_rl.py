"""DMAML on PointNavigation: does one adaptation step on held-out goals pay off, for W in {1, 4}?

For every worker count W and seed, a ``CentralLearner`` with a ``SerialBackend`` meta-trains the
Gaussian policy (MAML-RL inside each worker, plain weight averaging); every ``--eval-every`` runs
the central policy is evaluated on the same held-out goals, before and after one inner
policy-gradient step (support trajectories from the policy itself, as at meta-training). Baseline:
a policy pretrained on all goals jointly (policy gradient on the un-adapted return, same estimator,
rollouts and Adam, as many policy updates as support+query batches of the W = 1 run), evaluated the
same way. Returns are means over goals; ci95 over seeds uses Student's t with n - 1 dof.

    .venv/bin/python scripts/navigation_rl.py            # the quick scale reported in results/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from scipy import stats

from dmaml_core.backends.serial import SerialBackend
from dmaml_core.dmaml import CentralLearner
from dmaml_core.maml import MamlConfig, to_tensors
from dmaml_core.rl.domain import Navigation
from dmaml_core.rl.maml_rl import MamlRL
from dmaml_core.tasks.base import Domain
from dmaml_core.weight_generators import make_weight_generator
from dmaml_core.worker import WorkerConfig

EVAL_SEED = 10_000  # held-out goals: one fixed draw, shared by every method and seed


def ci95(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval (Student t, n - 1 dof)."""
    x = np.asarray(values, np.float64)
    if x.size < 2:
        return float(x.mean()), float("nan")
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def evaluate(learner: MamlRL, theta: list[np.ndarray], domain: Navigation, n_goals: int) -> dict:
    """Mean return over the held-out goals before (step 0) and after one adaptation step."""
    tasks = domain.sample(np.random.default_rng(EVAL_SEED), n_goals, "test")
    _, returns = learner.validate(to_tensors(theta), tasks, 1)
    return {"before": float(returns[0].mean()), "after": float(returns[1].mean())}


def meta_train(
    args: argparse.Namespace, domain: Navigation, cfg: MamlConfig, workers: int, seed: int
) -> dict[str, Any]:
    """One DMAML training of ``args.runs`` runs; checkpoints every ``args.eval_every`` runs."""
    # Navigation.sample returns NavTasks, not Tasks: a Domain for the worker all the same
    config = WorkerConfig(cast(Domain, domain), cfg, args.epochs, args.tasks, seed)
    theta = domain.model().init(seed)
    evaluator = domain.compile(cfg)
    learner = CentralLearner(theta, SerialBackend(config, workers), make_weight_generator("plain"))
    checkpoints = [{"run": 0, **evaluate(evaluator, learner.theta, domain, args.eval_goals)}]
    train_s = 0.0
    train_returns = []
    for run in range(1, args.runs + 1):
        record = learner.run()
        train_s += record.wall_s
        train_returns.append(float(record.accuracies.mean()))
        if run % args.eval_every == 0 or run == args.runs:
            checkpoints.append(
                {"run": run, **evaluate(evaluator, learner.theta, domain, args.eval_goals)}
            )
    return {"checkpoints": checkpoints, "train_s": train_s, "train_returns": train_returns}


def pretrain(
    args: argparse.Namespace, domain: Navigation, cfg: MamlConfig, seed: int
) -> dict[str, Any]:
    """Joint policy-gradient pre-training on all goals (no adaptation in the objective)."""
    learner = domain.compile(cfg)
    params = to_tensors(domain.model().init(seed))
    state = learner.init_optimizer(params)
    rng = np.random.default_rng([seed, 999])
    start = time.perf_counter()
    for _ in range(args.pretrain_steps):
        params, state, _ = learner.joint_step(params, state, domain.sample(rng, args.tasks))
    train_s = time.perf_counter() - start
    theta = [p.numpy() for p in params]
    return {"final": evaluate(learner, theta, domain, args.eval_goals), "train_s": train_s}


def markdown(summary: dict[str, Any], args: argparse.Namespace) -> str:
    def cell(values: list[float]) -> str:
        mean, half = ci95(values)
        return f"{mean:.2f} ± {half:.2f}"

    lines = [
        "# DMAML-RL on PointNavigation (quick scale)",
        "",
        f"Average return on {args.eval_goals} held-out goals ({args.k} trajectories per goal, "
        f"horizon 100), mean ± ci95 over {args.seeds} seeds (Student t, n - 1). "
        f"{args.runs} DMAML runs of E = {args.epochs} MAML step(s) with T = {args.tasks} tasks per "
        f"worker; alpha = {args.alpha}, beta = {args.beta}, order {args.order}, plain merge, "
        "serial backend. 'before' = the policy as is, 'after' = after one policy-gradient step "
        "on its own trajectories in the held-out task.",
        "",
        "| method | W | return before adaptation | return after 1 step | wall time (s) |",
        "|---|---|---|---|---|",
    ]
    for row in summary.values():
        lines.append(
            f"| {row['method']} | {row['workers']} | {cell(row['before'])} | "
            f"{cell(row['after'])} | {cell(row['train_s'])} |"
        )
    lines += ["", "Post-adaptation return at each checkpoint (mean ± ci95 over seeds):", ""]
    for key, row in summary.items():
        if "curve_after" in row:
            points = ", ".join(
                f"{run}: {cell(vals)}"
                for run, vals in zip(row["curve_runs"], row["curve_after"], strict=True)
            )
            lines.append(f"- {key}: {points}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=60, help="DMAML runs (central updates)")
    parser.add_argument("--epochs", type=int, default=1, help="E: MAML steps per worker per run")
    parser.add_argument("--tasks", type=int, default=10, help="T: tasks per MAML step")
    parser.add_argument("--k", type=int, default=10, help="trajectories per task (support, query)")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.01)
    parser.add_argument("--order", type=int, choices=(1, 2), default=1)
    parser.add_argument("--eval-goals", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument(
        "--pretrain-steps", type=int, default=None, help="default: 2 x runs x epochs"
    )
    parser.add_argument("--out", type=Path, default=Path("results/navigation"))
    args = parser.parse_args()
    if args.pretrain_steps is None:
        args.pretrain_steps = 2 * args.runs * args.epochs

    domain = Navigation("point", k_support=args.k, k_query=args.k)
    cfg = MamlConfig(alpha=args.alpha, beta=args.beta, order=args.order, aggregation="mean")
    total_start = time.perf_counter()
    summary: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for workers in args.workers:
        key = f"dmaml_W{workers}"
        runs = []
        for seed in range(args.seeds):
            result = meta_train(args, domain, cfg, workers, seed)
            last = result["checkpoints"][-1]
            print(f"{key} seed {seed}: {last} in {result['train_s']:.1f}s", flush=True)
            runs.append(result)
        raw[key] = runs
        first = [r["checkpoints"][0] for r in runs]
        last = [r["checkpoints"][-1] for r in runs]
        if "initial" not in summary:  # the same init per seed for every W
            summary["initial"] = {
                "method": "initial policy (no meta-training)",
                "workers": "-",
                "before": [c["before"] for c in first],
                "after": [c["after"] for c in first],
                "train_s": [0.0] * len(first),
            }
        summary[key] = {
            "method": "DMAML (meta-trained)",
            "workers": workers,
            "before": [c["before"] for c in last],
            "after": [c["after"] for c in last],
            "train_s": [r["train_s"] for r in runs],
            "curve_runs": [c["run"] for c in runs[0]["checkpoints"]],
            "curve_after": [
                [r["checkpoints"][i]["after"] for r in runs]
                for i in range(len(runs[0]["checkpoints"]))
            ],
        }
    pre = []
    for seed in range(args.seeds):
        result = pretrain(args, domain, cfg, seed)
        print(f"pretrained seed {seed}: {result['final']} in {result['train_s']:.1f}s", flush=True)
        pre.append(result)
    raw["pretrained"] = pre
    summary["pretrained"] = {
        "method": f"pretrained on all goals jointly ({args.pretrain_steps} PG steps)",
        "workers": 1,
        "before": [r["final"]["before"] for r in pre],
        "after": [r["final"]["after"] for r in pre],
        "train_s": [r["train_s"] for r in pre],
    }
    total_s = time.perf_counter() - total_start

    args.out.mkdir(parents=True, exist_ok=True)
    stats_out = {
        k: {m: ci95(v) for m, v in row.items() if m in ("before", "after", "train_s")}
        for k, row in summary.items()
    }
    payload = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "platform": {"python": platform.python_version(), "machine": platform.machine()},
        "total_wall_s": total_s,
        "summary": summary,
        "ci95": stats_out,
        "raw": raw,
    }
    (args.out / "navigation_rl.json").write_text(json.dumps(payload, indent=1))
    table = markdown(summary, args) + f"\nTotal wall time of the script: {total_s:.0f} s.\n"
    (args.out / "navigation_rl.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
