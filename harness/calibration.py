"""A fixed amount of TensorFlow work, timed: the machine's speed at one moment.

Why: a sweep measures its cases minutes apart, and on a shared machine the speed changes in
between, so a ratio between two cases follows the load as much as the code. A calibration job
does the same work every time and does not import ``dmaml_core``, so its time changes only with
the machine. Two users of it:

- the throughput gate (``harness.regression``) pairs every workload sample with one;
- the runner brackets every block of timed runs with one (``Calibrator``), and the report
  divides each run's time by its block's drift (``harness.drift``), so ratios, projected times
  and time to target are at one reference speed.

The runner's default job is ``baseline``: one MAML step of the suite's baseline case on fixed
tasks and weights, nothing updated (``step_timer``): the same ops, sizes and threads as the runs
it brackets. It uses ``dmaml_core``, so it is a yardstick within one sweep, never between two
versions of the code. The code-independent jobs (``mlp``, ``conv``: ``calibration``) follow the
load less closely: on this 2-core machine (AMD EPYC, AVX2) one CPU-bound neighbour slowed a 32-task
Omniglot-shaped meta step 1.41x and the ``conv`` job 1.48x, and normalising by it left a loaded
baseline's ratio 15 % off (results/drift/; README "How we measure").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Calibration = Literal["mlp", "conv"]
Timer = Callable[[], float]
# domains whose networks are MLPs (the sinusoid regressor, the navigation policy); the rest are
# convolutional image classifiers
MLP_DOMAINS = frozenset({"sinusoid", "navigation"})


def kind_for(domain: str) -> Calibration:
    """The calibration job with the same kind of ops as ``domain``'s network."""
    return "mlp" if domain in MLP_DOMAINS else "conv"


def _repeat_for(seconds: float, fn: Callable[[], object]) -> Timer:
    """Seconds per call of ``fn``, timed over enough calls to last about ``seconds``, so that a
    calibration sample covers as much wall time as the workload sample beside it."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    reps = max(1, round(seconds / once))

    def timed() -> float:
        begin = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - begin) / reps

    return timed


def calibration(kind: Calibration, seconds: float) -> Timer:
    """A fixed TensorFlow workload like ``kind`` (independent of ``dmaml_core``): seconds per call.
    ``mlp``: forward and backward of a 1-40-40-1 ReLU net for 10 tasks x 10 points (the sinusoid
    workload's shapes); ``conv``: forward and backward of four 3x3 stride-2 convs with 64 filters
    over 40 28x28 images (the Omniglot-shaped workload's)."""
    import tensorflow as tf

    if kind == "mlp":
        shapes = [[10, 1, 40], [10, 40, 40], [10, 40, 1]]
        x = tf.random.stateless_normal([10, 10, 1], seed=[9, 9])
    else:
        shapes = [[3, 3, 1, 64], [3, 3, 64, 64], [3, 3, 64, 64], [3, 3, 64, 64]]
        x = tf.random.stateless_normal([40, 28, 28, 1], seed=[7, 7])
    weights = [0.1 * tf.random.stateless_normal(s, seed=[i, 2]) for i, s in enumerate(shapes)]

    @tf.function
    def work() -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(weights)
            h = x
            for i, w in enumerate(weights):
                if kind == "mlp":
                    h = tf.matmul(h, w)
                    h = tf.nn.relu(h) if i < len(weights) - 1 else h
                else:
                    h = tf.nn.relu(tf.nn.conv2d(h, w, 2, "SAME"))
            loss = tf.reduce_mean(h**2)
        grads = tape.gradient(loss, weights)
        return loss + tf.add_n([tf.reduce_sum(g) for g in grads])

    return _repeat_for(seconds, lambda: work().numpy())


def step_timer(domain: Any, maml: Any, tasks: int, seconds: float) -> Timer:
    """Seconds per MAML step of ``tasks`` tasks of ``domain`` with ``maml`` (a MamlConfig), on
    fixed tasks from a fixed stream and the domain's seed-0 weights; the result is discarded, so
    every call does the same work."""
    import numpy as np

    from dmaml_core.maml import to_tensors
    from dmaml_core.worker import compiled_maml

    compiled = compiled_maml(domain, maml)
    params = to_tensors(domain.model().init(0))
    opt_state = compiled.init_optimizer(params)
    batch = domain.sample(np.random.default_rng(20_191), tasks)

    def step() -> float:
        return float(compiled.step(params, opt_state, batch)[2].loss_sum)

    return _repeat_for(seconds, step)


_TIMERS: dict[tuple[str, float], Timer] = {}


def _load() -> dict[str, float]:
    """The 1-minute load average and the machine's busy share of its cores, now."""
    import psutil

    return {
        "load1": os.getloadavg()[0],
        "cpu_busy": psutil.cpu_percent(interval=None) / 100.0,  # since the previous call
    }


@dataclass
class Calibrator:
    """Brackets blocks of timed runs with calibration samples: one before the first run of every
    block of ``block_runs`` runs, and one after the last run, so every block has a sample on each
    side (``harness.drift`` averages the two). ``job`` builds the timer for a sample length; it
    is built once per process and ``name`` (its tracing is outside every sample and every timed
    run)."""

    name: str
    job: Callable[[float], Timer]
    seconds: float
    block_runs: int

    def due(self, run_index: int, first: int, total: int) -> bool:
        """Whether a sample is taken before run ``run_index`` (``total``: after the last run).
        Run 0 is the warm-up and is never bracketed; a resumed case-seed (``first`` > 0) starts
        a block of its own."""
        if run_index < 1:
            return False
        return run_index in (first, total) or (run_index - 1) % self.block_runs == 0

    def sample(self, before_run: int) -> dict[str, Any]:
        """One calibration sample (seconds per call of the job) with the machine's load."""
        key = (self.name, self.seconds)
        if key not in _TIMERS:
            _TIMERS[key] = self.job(self.seconds)
        seconds = _TIMERS[key]()
        return {
            "before_run": before_run,
            "calibration": self.name,
            "calibration_s": self.seconds,
            "seconds": seconds,
            **_load(),
        }
