"""State round trips: a worker or learner rebuilt from ``get_state()`` continues bit for bit like
the original (what exact checkpoints and resume rely on)."""

from __future__ import annotations

import numpy as np
import pytest

from dmaml_core.backends import SerialBackend
from dmaml_core.dmaml import CentralLearner, TaskParallelLearner
from dmaml_core.maml import MamlConfig
from dmaml_core.models import NumpyWeights
from dmaml_core.optim import adam_from_numpy, adam_init, adam_to_numpy
from dmaml_core.tasks import make_domain
from dmaml_core.weight_generators import generator_state, make_weight_generator
from dmaml_core.worker import Worker, WorkerConfig

DOMAIN = make_domain("sinusoid")
CONFIG = WorkerConfig(DOMAIN, MamlConfig(), epochs=2, tasks_per_step=4, seed=3)


def theta() -> NumpyWeights:
    return DOMAIN.model().init(3)


def assert_equal(a: NumpyWeights, b: NumpyWeights) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_adam_state_survives_numpy_exactly() -> None:
    state = adam_init(theta())
    back = adam_from_numpy(adam_to_numpy(state))
    assert back.count.dtype == state.count.dtype and float(back.count) == 0.0
    assert_equal([m.numpy() for m in back.mu], [m.numpy() for m in state.mu])


def test_a_worker_restored_in_a_fresh_object_continues_identically() -> None:
    original = Worker(CONFIG, 1)
    assert original.get_state()["opt"] is None  # nothing trained yet
    weights = original.run(theta()).weights
    saved = original.get_state()
    fresh = Worker(CONFIG, 1)
    fresh.set_state(saved)
    want, got = original.run(weights), fresh.run(weights)
    assert_equal(got.weights, want.weights)
    assert np.array_equal(got.loss_sums, want.loss_sums)
    with pytest.raises(ValueError, match="state of logical worker 1 given to worker 0"):
        Worker(CONFIG, 0).set_state(saved)


def test_a_dmaml_learner_restored_mid_run_ends_bit_for_bit_the_same() -> None:
    def learner() -> CentralLearner:
        # loss_moving_average reads the loss history, so the history must come back too
        generator = make_weight_generator("loss_moving_average")
        return CentralLearner(theta(), SerialBackend(CONFIG, 3), generator)

    original = learner()
    for _ in range(3):
        original.run()
    saved = original.get_state()
    assert saved["runs_done"] == 3 and saved["history"].shape == (3, 5)  # the window, full
    assert saved["generator"] == {"name": "loss_moving_average"}
    restored = learner()
    restored.set_state(saved)
    for _ in range(3):
        original.run()
        restored.run()
    assert restored.runs_done == original.runs_done == 6
    assert_equal(restored.theta, original.theta)
    assert np.array_equal(restored.history.array(), original.history.array())


def test_a_restore_with_another_generator_or_mode_is_refused() -> None:
    original = CentralLearner(theta(), SerialBackend(CONFIG, 2), make_weight_generator("plain"))
    original.run()
    saved = original.get_state()
    weighted = make_weight_generator("weighted", g=0.25)
    assert generator_state(weighted) == {"name": "weighted", "g": 0.25}
    with pytest.raises(ValueError, match="weight generator"):
        CentralLearner(theta(), SerialBackend(CONFIG, 2), weighted).set_state(saved)
    with pytest.raises(ValueError, match="cannot restore a 'task_parallel' learner"):
        TaskParallelLearner(theta(), SerialBackend(CONFIG, 2), CONFIG.maml, 4).set_state(saved)
    with pytest.raises(ValueError, match="state of 2 workers, this learner has 3"):
        CentralLearner(theta(), SerialBackend(CONFIG, 3), make_weight_generator("plain")).set_state(
            saved
        )


def test_a_task_parallel_learner_restores_its_own_adam_and_the_task_streams() -> None:
    def learner() -> TaskParallelLearner:
        return TaskParallelLearner(theta(), SerialBackend(CONFIG, 2), CONFIG.maml, 5)

    original = learner()
    for _ in range(2):
        original.run()
    saved = original.get_state()
    assert float(saved["opt"]["count"]) == 2.0
    restored = learner()
    restored.set_state(saved)
    for _ in range(2):
        original.run()
        restored.run()
    assert_equal(restored.theta, original.theta)
    assert float(restored.opt_state.count) == 4.0
