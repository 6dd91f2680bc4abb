"""The full Omniglot meta step with real sampled tasks (issue 5): sampling a 32-task 5-way 1-shot
meta-batch from the preprocessed archive *and* the first-order MAML step on it, timed together per
round, with the sampling time and its share of the step recorded in ``extra_info``. The data is
found as the domain finds it (``DMAML_DATA``, ``../shared/data/omniglot`` or the user cache); where
it is absent the case is skipped with the reason."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time
from typing import Any

import numpy as np
import pytest

from dmaml_core.maml import CompiledMaml, MamlConfig, to_tensors
from dmaml_core.tasks.omniglot import DatasetNotFoundError, Omniglot

TASKS = 32
TARGET_MS = 45.0  # the core issue's first-order target, here with sampling included


def test_omniglot_meta_step_with_sampling(benchmark: Any) -> None:
    domain = Omniglot(n_way=5, k_shot=1, k_query=1, split="vinyals", download=False)
    rng = np.random.default_rng(0)
    try:
        domain.sample(rng, 1)  # loads (or preprocesses once) the archive
    except DatasetNotFoundError as err:
        pytest.skip(f"Omniglot data not found: {err}")
    maml = CompiledMaml(domain.model(), MamlConfig(alpha=0.4, beta=0.01, order=1, loss="xent"))
    state: dict[str, Any] = {"params": to_tensors(domain.model().init(0))}
    state["opt"] = maml.init_optimizer(state["params"])
    sampling_s: list[float] = []
    losses: list[float] = []

    def step() -> None:
        start = time.perf_counter()
        tasks = domain.sample(rng, TASKS)
        sampling_s.append(time.perf_counter() - start)
        state["params"], state["opt"], metrics = maml.step(state["params"], state["opt"], tasks)
        losses.append(float(metrics.loss_sum.numpy()))

    start = time.perf_counter()
    step()
    warmup_s = time.perf_counter() - start
    benchmark.group = "meta step, real Omniglot (sampling included)"
    benchmark.pedantic(step, rounds=20, iterations=1, warmup_rounds=2)
    median_ms = float(benchmark.stats.stats.median) * 1e3 if benchmark.stats else None
    sampling_ms = float(np.median(sampling_s[3:] or sampling_s)) * 1e3
    benchmark.extra_info.update(
        {
            "tasks": "Omniglot vinyals train split, 5-way 1-shot, 1 query image per class",
            "n_tasks": TASKS,
            "order": 1,
            "warmup_s": warmup_s,
            "target_ms": TARGET_MS,
            "median_ms": median_ms,
            "sampling_median_ms": sampling_ms,
            "sampling_share": None if not median_ms else sampling_ms / median_ms,
            "within_target": None if median_ms is None else median_ms <= TARGET_MS,
            # which conv-net layout ran and why (measured, cached, forced): dmaml_core.layouts
            "layout": None if maml.layout is None else maml.layout.as_record(),
        }
    )
    assert all(np.isfinite(losses))
    # real data and real updates: the query loss goes down over the 23 steps
    assert np.mean(losses[-5:]) < np.mean(losses[:3])
