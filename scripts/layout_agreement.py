"""Issue 18's table, measured: each conv-net layout's meta-gradient against the float64 path on
random (not kink-free) weights, beside how far the float64 path itself moves when every batch-norm
offset is shifted by the float32 forward error.

Why the shift: on random weights some ReLU input lies within float32 forward error (2-5e-6 at
unit scale, measured in every layout) of its kink; whether a float32 computation lands on the
other side is chance, and one flipped ReLU in a map of N * H * W values moves that block's
gradients by about 1 / sqrt(N * H * W). A float64 shift of the offsets by the same few 1e-6 shows
how far the exact objective moves for a change that small: where it moves as far as a float32
layout's error, that error is the objective's conditioning, not the layout.

    TF_ENABLE_ONEDNN_OPTS=1 .venv/bin/python scripts/layout_agreement.py --seeds 5 \\
        --out results/layout_agreement/onednn-on.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from dmaml_core import layouts
from dmaml_core.finn_net import WEIGHTS_PER_BLOCK, finn_miniimagenet_net, finn_omniglot_net
from dmaml_core.maml import MamlConfig, meta_gradients
from dmaml_core.models import grouped_conv_gradient_available, omniglot_convnet
from dmaml_core.types import Tasks

NETS: dict[str, Any] = {
    "finn_omniglot": finn_omniglot_net(),
    "finn_miniimagenet": finn_miniimagenet_net(),
    "ours_omniglot": omniglot_convnet(),
}
# (net, shots, tasks, order, inner steps): the rows of issue 18's table, plus our own net
CASES = [
    ("finn_omniglot", 1, 1, 2, 1),
    ("finn_omniglot", 1, 1, 1, 1),
    ("finn_omniglot", 5, 1, 2, 1),
    ("finn_omniglot", 5, 1, 1, 1),
    ("finn_omniglot", 5, 1, 1, 2),
    ("finn_miniimagenet", 1, 1, 1, 1),
    ("finn_omniglot", 5, 4, 1, 2),
    ("ours_omniglot", 5, 1, 1, 1),
]
SHIFT = 5e-6  # the largest float32 forward error measured at a ReLU input, any layout
SHIFT_DRAWS = 3


def random_problem(net: Any, shots: int, n_tasks: int, seed: int) -> tuple[list[np.ndarray], Tasks]:
    """Issue 18's inputs: random images, initial weights with random non-zero vectors (conv
    biases, batch-norm offsets or scales, head bias)."""
    rng = np.random.default_rng(seed)
    weights = [
        w + (0.1 * rng.standard_normal(w.shape).astype(np.float32) if w.ndim == 1 else 0)
        for w in net.init(seed)
    ]
    side, channels, n = net.image_size, net.channels, net.n_way * shots
    images = rng.random((2, n_tasks, n, side, side, channels)).astype(np.float32)
    labels = np.tile(np.repeat(np.arange(net.n_way), shots), (n_tasks, 1)).astype(np.float32)
    return weights, Tasks(images[0], labels, images[1], labels)


def worst_relative(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    """Issue 18's measure: max |got - want| / max |want| per tensor, worst tensor; a tensor that is
    zero in exact arithmetic (a conv bias under batch norm) is left out."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        scale = float(np.abs(w).max())
        if scale > 1e-12:
            worst = max(worst, float(np.abs(g - w).max()) / scale)
    return worst


def offset_indices(net: Any) -> list[int]:
    return [WEIGHTS_PER_BLOCK * i + 2 for i in range(net.blocks)]


def compiled(net: Any, cfg: MamlConfig) -> Any:
    return tf.function(lambda p, t: meta_gradients(net, cfg, p, t))


def measure(seeds: int) -> list[dict[str, Any]]:
    names = ["reference", "per_task", "task_channels"]
    names += ["grouped"] if grouped_conv_gradient_available() else []
    rows = []
    for net_name, shots, n_tasks, order, steps in CASES:
        net = NETS[net_name]
        cfg = MamlConfig(alpha=0.4, inner_steps=steps, order=order, loss="xent")  # type: ignore[arg-type]
        fns = {name: compiled(dataclasses.replace(net, layout=name), cfg) for name in names}
        exact = compiled(net, cfg)
        for seed in range(seeds):
            weights, tasks = random_problem(net, shots, n_tasks, seed)
            t64 = Tasks(*(tf.constant(a, tf.float64) for a in tasks))

            def float64(
                ws: list[np.ndarray], t64: Tasks = t64, fn: Any = exact
            ) -> list[np.ndarray]:
                grads, _ = fn([tf.constant(w, tf.float64) for w in ws], t64)
                return [g.numpy() for g in grads]

            want = float64(weights)
            rng = np.random.default_rng(1000 + seed)
            moved = 0.0
            for _ in range(SHIFT_DRAWS):
                shifted = [w.astype(np.float64) for w in weights]
                for i in offset_indices(net):
                    shifted[i] = shifted[i] + SHIFT * rng.choice([-1.0, 1.0], shifted[i].shape)
                moved = max(moved, worst_relative(float64(shifted), want))
            errors = {}
            for name, fn in fns.items():
                grads, _ = fn([tf.constant(w) for w in weights], Tasks(*map(tf.constant, tasks)))
                errors[name] = worst_relative([g.numpy() for g in grads], want)
            row = {
                "net": net_name,
                "shots": shots,
                "tasks": n_tasks,
                "order": order,
                "inner_steps": steps,
                "seed": seed,
                "float64_moved_by_shift": moved,
                "errors": errors,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summary(path: Path) -> str:
    """A markdown table of one result file: per case, the median and largest error over seeds of
    the float32 ``reference`` layout and of the worst fast layout, beside how far the float64 path
    moved under the offset shift (median and largest over the same seeds)."""
    data = json.loads(path.read_text())
    lines = [
        f"`{path.name}`: oneDNN {'on' if data['machine']['onednn'] else 'off'}, "
        f"{data['machine']['cpu']}, git {data['git_commit']}, {len(data['rows'])} rows",
        "",
        "| net, shots, T, order, inner steps | `reference` (float32) | worst fast layout | "
        f"float64 itself, offsets shifted by {SHIFT:g} |",
        "| --- | --- | --- | --- |",
    ]
    cases: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in data["rows"]:
        key = (row["net"], row["shots"], row["tasks"], row["order"], row["inner_steps"])
        cases.setdefault(key, []).append(row)

    def cell(values: list[float]) -> str:
        return f"{np.median(values):.1e} / {max(values):.1e}"

    for key, rows in cases.items():
        ref = [r["errors"]["reference"] for r in rows]
        fast = [max(v for k, v in r["errors"].items() if k != "reference") for r in rows]
        moved = [r["float64_moved_by_shift"] for r in rows]
        lines.append(
            f"| {key[0]}, {key[1]}-shot, T = {key[2]}, order {key[3]}, {key[4]} | {cell(ref)} | "
            f"{cell(fast)} | {cell(moved)} |"
        )
    lines.append("")
    lines.append(f"median / max over {len(next(iter(cases.values())))} seeds")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path, nargs="+", help="print the tables of result files")
    args = parser.parse_args()
    if args.summary:
        print("\n\n".join(summary(p) for p in args.summary))
        return
    if args.out is None:
        parser.error("--out is required to measure")
    start = time.time()
    rows = measure(args.seeds)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "dmaml_core"], capture_output=True, text=True
        ).stdout.strip()
    )
    result = {
        "what": "issue 18: layouts vs float64 on random weights; float64 moved by a "
        f"{SHIFT:g} offset shift (max of {SHIFT_DRAWS} draws)",
        "machine": layouts.fingerprint(),
        "git_commit": commit + ("+dirty" if dirty else ""),
        "alpha": 0.4,
        "aggregation": "sum",
        "seconds": round(time.time() - start, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
