from __future__ import annotations

import numpy as np
import pytest

from dmaml_core.backends import SerialBackend
from dmaml_core.dmaml import CentralLearner, LossHistory, TaskParallelLearner, split_tasks
from dmaml_core.maml import CompiledMaml, MamlConfig, Tasks, to_numpy, to_tensors
from dmaml_core.optim import adam_init, adam_update
from dmaml_core.tasks import make_domain
from dmaml_core.weight_generators import Plain, make_weight_generator
from dmaml_core.worker import WorkerConfig, task_stream

DOMAIN = make_domain("sinusoid")


def learner(workers: int, epochs: int = 1, seed: int = 0, generator: str = "plain", **maml):
    cfg = WorkerConfig(DOMAIN, MamlConfig(**maml), epochs=epochs, tasks_per_step=5, seed=seed)
    theta = DOMAIN.model().init(seed)
    return CentralLearner(theta, SerialBackend(cfg, workers), make_weight_generator(generator))


def test_one_worker_one_epoch_is_plain_maml_bit_for_bit() -> None:
    dmaml = learner(workers=1)
    for _ in range(6):
        dmaml.run()

    maml = CompiledMaml(DOMAIN.model(), MamlConfig())
    params = to_tensors(DOMAIN.model().init(0))
    state = maml.init_optimizer(params)
    rng = task_stream(0, 0)
    for _ in range(6):
        params, state, _ = maml.step(params, state, DOMAIN.sample(rng, 5))
    for a, b in zip(dmaml.theta, to_numpy(params), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("generator", ["plain", "loss_median", "loss_moving_average"])
def test_same_seed_same_runs(generator: str) -> None:
    a, b, c = learner(3, 2, 7, generator), learner(3, 2, 7, generator), learner(3, 2, 8, generator)
    for _ in range(3):
        ra, rb, rc = a.run(), b.run(), c.run()
    np.testing.assert_array_equal(ra.loss_sums, rb.loss_sums)
    assert ra.loss_sums.shape == (3, 2)
    for x, y in zip(a.theta, b.theta, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(ra.loss_sums, rc.loss_sums)


def test_merge_is_the_mean_of_what_workers_returned() -> None:
    cfg = WorkerConfig(DOMAIN, MamlConfig(), epochs=2, tasks_per_step=5, seed=3)
    backend = SerialBackend(cfg, 3)
    theta = DOMAIN.model().init(0)
    returned = backend.run(theta, 0).results
    fresh = CentralLearner(theta, SerialBackend(cfg, 3), Plain())
    record = fresh.run()
    want = [np.mean([r.weights[j] for r in returned], axis=0) for j in range(len(theta))]
    for got, expected in zip(fresh.theta, want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert record.kept == (0, 1, 2) and not record.diverged
    assert record.compute_s.shape == (3,) and record.wall_s >= record.compute_s.sum()


def test_loss_history_keeps_the_last_five() -> None:
    history = LossHistory(2)
    for run in range(4):
        history.extend(np.array([[run, run + 0.5], [10 + run, 11 + run]]))
    assert history.array().shape == (2, 5)
    np.testing.assert_array_equal(history.array()[0], [1.5, 2, 2.5, 3, 3.5])


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
def test_task_parallel_equals_single_worker_maml_on_the_same_tasks(aggregation: str) -> None:
    maml_cfg = MamlConfig(aggregation=aggregation)
    cfg = WorkerConfig(DOMAIN, maml_cfg, tasks_per_step=7, seed=1)
    theta = DOMAIN.model().init(1)
    parallel = TaskParallelLearner(theta, SerialBackend(cfg, 3), maml_cfg, tasks_per_step=7)
    parallel.run()

    shares = split_tasks(7, 3)
    parts = [DOMAIN.sample(task_stream(1, i), n) for i, n in enumerate(shares)]
    union = Tasks(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))
    maml = CompiledMaml(DOMAIN.model(), maml_cfg)
    grads, _ = maml.gradients(to_tensors(theta), union)
    params, _ = adam_update(grads, adam_init(theta), to_tensors(theta), maml_cfg.beta)
    for got, want in zip(parallel.theta, to_numpy(params), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_clear_errors() -> None:
    cfg = WorkerConfig(DOMAIN, MamlConfig())
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        SerialBackend(cfg, 0)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        WorkerConfig(DOMAIN, MamlConfig(), epochs=0)
    with pytest.raises(ValueError, match="unknown domain 'sine'; known: "):
        make_domain("sine")
    with pytest.raises(ValueError, match="needs tasks >= workers"):
        split_tasks(2, 3)
