"""The scenario every parallel backend is checked with: a small sinusoid DMAML sequence that must
give the serial backend's numbers (imported by the processes and Ray backend tests)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dmaml_core.backends import Backend
from dmaml_core.dmaml import CentralLearner, TaskParallelLearner
from dmaml_core.maml import MamlConfig
from dmaml_core.models import NumpyWeights
from dmaml_core.tasks import make_domain
from dmaml_core.weight_generators import make_weight_generator
from dmaml_core.worker import WorkerConfig

DOMAIN = make_domain("sinusoid")
Gone = Callable[[list[int]], None]


def config(epochs: int = 2) -> WorkerConfig:
    return WorkerConfig(DOMAIN, MamlConfig(), epochs=epochs, tasks_per_step=5, seed=5)


def theta() -> NumpyWeights:
    return DOMAIN.model().init(5)


def assert_same(got: NumpyWeights, want: NumpyWeights) -> None:
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def drive(backend: Backend, cfg: WorkerConfig) -> list[NumpyWeights]:
    """Three DMAML runs, then two task-parallel runs on the same workers (their task streams carry
    on), returning theta after each phase; the same sequence must give the same numbers anywhere."""
    dmaml = CentralLearner(theta(), backend, make_weight_generator("loss_median"))
    for _ in range(3):
        dmaml.run()
    parallel = TaskParallelLearner(theta(), backend, cfg.maml, tasks_per_step=7)
    for _ in range(2):
        parallel.run()
    return [dmaml.theta, parallel.theta]
