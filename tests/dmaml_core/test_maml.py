"""MAML gradients against independent computations: finite differences of the whole
adapt-then-evaluate map (second order), an explicit per-task loop, and the stopped-gradient form
(first order). Run in float64 so finite differences are meaningful."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from dmaml_core.maml import MamlConfig, Tasks, meta_gradients, meta_loss
from dmaml_core.models import MLP, ConvNet, Model

TINY_CONV = ConvNet(n_way=3, image_size=6, channels=1, filters=3, stride=2, blocks=2)


def f64(weights: list[np.ndarray]) -> list[tf.Tensor]:
    return [tf.constant(w.astype(np.float64)) for w in weights]


def regression_tasks(rng: np.random.Generator, n_tasks: int = 3) -> Tasks:
    return Tasks(*(rng.standard_normal((n_tasks, 4, 1)) for _ in range(4)))


def classification_tasks(rng: np.random.Generator, n_tasks: int = 2) -> Tasks:
    images = lambda: rng.standard_normal((n_tasks, 6, 6, 6, 1))  # noqa: E731
    labels = lambda: np.tile(np.arange(6) % 3, (n_tasks, 1)).astype(np.int32)  # noqa: E731
    return Tasks(images(), labels(), images(), labels())


CASES = [
    (MLP((1, 5, 5, 1)), "mse", regression_tasks, 0.1),
    (TINY_CONV, "xent", classification_tasks, 0.4),
]


def flat(weights: list[tf.Tensor]) -> np.ndarray:
    return np.concatenate([np.ravel(w.numpy()) for w in weights])


def finite_difference(
    model: Model, cfg: MamlConfig, params: list[tf.Tensor], tasks: Tasks, eps: float = 1e-6
) -> np.ndarray:
    base = [p.numpy() for p in params]
    objective = tf.function(lambda weights: meta_loss(model, cfg, weights, tasks))
    grads = []
    for i, p in enumerate(base):
        for idx in np.ndindex(p.shape):
            values = []
            for sign in (1.0, -1.0):
                shifted = [q.copy() for q in base]
                shifted[i][idx] += sign * eps
                values.append(float(objective(f64(shifted))))
            grads.append((values[0] - values[1]) / (2 * eps))
    return np.array(grads)


@pytest.mark.parametrize("model,loss,make_tasks,alpha", CASES, ids=["mlp", "conv_bn"])
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_second_order_matches_finite_differences(model, loss, make_tasks, alpha, inner_steps):
    rng = np.random.default_rng(0)
    cfg = MamlConfig(alpha=alpha, order=2, loss=loss, inner_steps=inner_steps)
    params = f64(model.init(3))
    tasks = make_tasks(rng)
    grads, _ = meta_gradients(model, cfg, params, tasks)
    fd = finite_difference(model, cfg, params, tasks)
    np.testing.assert_allclose(flat(grads), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model,loss,make_tasks,alpha", CASES, ids=["mlp", "conv_bn"])
def test_first_order_ignores_curvature_and_differs_from_second_order(
    model, loss, make_tasks, alpha
):
    """First order = gradient of the query loss at theta - alpha * stop_gradient(inner grad),
    computed here task by task with an un-batched model (T = 1)."""
    rng = np.random.default_rng(1)
    params = f64(model.init(4))
    tasks = make_tasks(rng)
    cfg1 = MamlConfig(alpha=alpha, order=1, loss=loss)
    got, _ = meta_gradients(model, cfg1, params, tasks)

    from dmaml_core.maml import task_losses

    want = [tf.zeros_like(p) for p in params]
    for t in range(tasks.n_tasks):
        one = Tasks(*(a[t : t + 1] for a in tasks))
        with tf.GradientTape() as inner:
            inner.watch(params)
            support_loss, _ = task_losses(model, loss, [p[None] for p in params], one[0], one[1])
        inner_grads = inner.gradient(support_loss, params)
        with tf.GradientTape() as outer:
            outer.watch(params)
            adapted = [
                p - alpha * tf.stop_gradient(g) for p, g in zip(params, inner_grads, strict=True)
            ]
            query_loss, _ = task_losses(model, loss, [a[None] for a in adapted], one[2], one[3])
        want = [w + g for w, g in zip(want, outer.gradient(query_loss, params), strict=True)]
    np.testing.assert_allclose(flat(got), flat(want), rtol=1e-10, atol=1e-12)

    second, _ = meta_gradients(model, MamlConfig(alpha=alpha, order=2, loss=loss), params, tasks)
    assert np.abs(flat(second) - flat(got)).max() > 1e-6  # curvature term is really there


@pytest.mark.parametrize("order", [1, 2])
def test_sum_is_n_tasks_times_mean(order: int) -> None:
    model = MLP((1, 5, 5, 1))
    params = f64(model.init(0))
    tasks = regression_tasks(np.random.default_rng(2), n_tasks=4)
    g_sum, _ = meta_gradients(model, MamlConfig(order=order, aggregation="sum"), params, tasks)
    g_mean, _ = meta_gradients(model, MamlConfig(order=order, aggregation="mean"), params, tasks)
    np.testing.assert_allclose(flat(g_sum), 4 * flat(g_mean), rtol=1e-12)


def test_batched_tasks_equal_a_loop_over_single_tasks() -> None:
    model = TINY_CONV
    params = f64(model.init(5))
    tasks = classification_tasks(np.random.default_rng(3), n_tasks=3)
    cfg = MamlConfig(alpha=0.4, order=2, loss="xent", inner_steps=2)
    batched, metrics = meta_gradients(model, cfg, params, tasks)
    total = np.zeros_like(flat(batched))
    for t in range(3):
        one = Tasks(*(a[t : t + 1] for a in tasks))
        total += flat(meta_gradients(model, cfg, params, one)[0])
    np.testing.assert_allclose(flat(batched), total, rtol=1e-10, atol=1e-12)
    assert 0.0 <= float(metrics.accuracy) <= 1.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"alpha": -1.0}, "alpha must be > 0"),
        ({"beta": 0.0}, "beta must be > 0"),
        ({"order": 3}, "order must be 1"),
        ({"inner_steps": 0}, "inner_steps must be an integer >= 1"),
        ({"aggregation": "median"}, "aggregation must be 'sum' or 'mean'"),
        ({"loss": "hinge"}, "loss must be 'mse' or 'xent'"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MamlConfig(**kwargs)
