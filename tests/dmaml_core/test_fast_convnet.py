"""The fast ``ConvNet`` paths (per-task native convs and fused batch norm, in the per-task, the
task-channels and the grouped-conv layout) against the reference path (im2col, hand-written batch
norm): same outputs, same second derivatives, same first- and second-order MAML gradients.

The fast path is float32 only, so it is compared with the reference path run in float64; the
reference path itself is checked against finite differences in ``test_maml.py``."""

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf

from dmaml_core.maml import MamlConfig, Tasks, meta_gradients
from dmaml_core.models import ConvNet, grouped_conv_gradient_available, use_fast_convnet

NETS = [
    ConvNet(n_way=3, image_size=7, channels=2, filters=4, stride=2, blocks=2),
    ConvNet(n_way=3, image_size=8, channels=1, filters=3, stride=2, blocks=3),
    ConvNet(n_way=2, image_size=8, channels=3, filters=4, stride=1, max_pool=True, blocks=2),
    ConvNet(n_way=2, image_size=9, channels=2, filters=3, stride=1, max_pool=True, blocks=2),
]
IDS = ["odd_s2", "even_s2", "even_s1_pool", "odd_s1_pool"]


def _tasks(net: ConvNet, n_tasks: int, n: int, seed: int) -> Tasks:
    rng = np.random.default_rng(seed)
    shape = (n_tasks, n, net.image_size, net.image_size, net.channels)
    labels = np.tile(np.arange(n) % net.n_way, (n_tasks, 1)).astype(np.int32)
    return Tasks(rng.standard_normal(shape), labels, rng.standard_normal(shape), labels)


def _cast(tasks: Tasks, dtype: tf.DType) -> Tasks:
    return Tasks(
        tf.constant(tasks.support_x, dtype),
        tf.constant(tasks.support_y),
        tf.constant(tasks.query_x, dtype),
        tf.constant(tasks.query_y),
    )


def _weights(net: ConvNet, n_tasks: int, dtype: tf.DType, seed: int = 0) -> list[tf.Tensor]:
    """Distinct weights per task (and non-trivial batch-norm parameters)."""
    rng = np.random.default_rng(seed)
    out = []
    for w in net.init(0):
        stacked = np.stack([w + 0.3 * rng.standard_normal(w.shape) for _ in range(n_tasks)])
        out.append(tf.constant(stacked, dtype))
    return out


LAYOUTS = ["per_task", "task_channels", "grouped"]
# grouped convs have a CPU gradient only through oneDNN: their derivative tests need it
NEEDS_GROUPED_GRADIENT = pytest.mark.skipif(
    not grouped_conv_gradient_available(), reason="no grouped-conv gradient here (oneDNN off)"
)
DIFF_LAYOUTS = [
    "per_task",
    "task_channels",
    pytest.param("grouped", marks=NEEDS_GROUPED_GRADIENT),
]


def _fast_apply(net: ConvNet, layout: str) -> Callable[[list[tf.Tensor], tf.Tensor], tf.Tensor]:
    return {
        "per_task": net.apply_per_task,
        "task_channels": net.apply_task_channels,
        "grouped": net.apply_grouped,
    }[layout]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("net", NETS, ids=IDS)
def test_fast_forward_matches_reference(net: ConvNet, layout: str) -> None:
    tasks = _tasks(net, 3, 4, seed=1)
    x = tf.constant(tasks.support_x, tf.float32)
    weights = _weights(net, 3, tf.float32)
    assert use_fast_convnet(x)
    fast = _fast_apply(net, layout)(weights, x).numpy()
    reference = net.apply_reference(weights, x).numpy()
    np.testing.assert_allclose(fast, reference, rtol=1e-4, atol=1e-4)
    twice = layout == "task_channels"
    # other layouts reduce the batch-norm mean in another order: equal up to float32 rounding
    same = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(
        net.apply(weights, x, twice_differentiated=twice).numpy(), fast, **same
    )
    forced = dataclasses.replace(net, layout=layout)
    np.testing.assert_allclose(forced.apply(weights, x, twice_differentiated=not twice), fast)


@pytest.mark.parametrize("layout", DIFF_LAYOUTS)
@pytest.mark.parametrize("net", NETS, ids=IDS)
def test_fast_input_and_weight_hessian_vector_products_match_reference(
    net: ConvNet, layout: str
) -> None:
    """Second derivatives of a task loss through the fast path: d/dw <d loss/dw, v>."""
    tasks = _tasks(net, 2, 3, seed=2)
    mix = np.random.default_rng(3).standard_normal((2, 3, net.n_way))

    def hvp(dtype: tf.DType, fast: bool) -> list[np.ndarray]:
        x = tf.constant(tasks.support_x, dtype)
        weights = _weights(net, 2, dtype)
        rng = np.random.default_rng(4)
        vs = [tf.constant(rng.standard_normal(w.shape), dtype) for w in weights]
        apply = _fast_apply(net, layout) if fast else net.apply_reference
        with tf.GradientTape() as outer:
            outer.watch(weights)
            with tf.GradientTape() as inner:
                inner.watch(weights)
                loss = tf.reduce_sum(tf.sin(apply(weights, x)) * tf.constant(mix, dtype))
            grads = inner.gradient(loss, weights)
            dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs, strict=True)])
        return [g.numpy() for g in outer.gradient(dot, weights)]

    fast = hvp(tf.float32, fast=True)
    reference = hvp(tf.float64, fast=False)
    for f, r in zip(fast, reference, strict=True):
        np.testing.assert_allclose(f, r, rtol=2e-3, atol=2e-3 * np.abs(r).max())


@pytest.mark.parametrize("layout", ["auto", *DIFF_LAYOUTS])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("net", NETS, ids=IDS)
def test_fast_meta_gradients_match_reference(net: ConvNet, order: int, layout: str) -> None:
    """Every layout, forced through the model's ``layout`` field, against the float64 reference
    (float64 always takes the reference path), first and second order."""
    net = dataclasses.replace(net, layout=layout)
    cfg = MamlConfig(alpha=0.1, order=order, loss="xent")  # type: ignore[arg-type]
    tasks = _tasks(net, 3, 4, seed=5)
    params32 = [tf.constant(w) for w in net.init(6)]
    params64 = [tf.constant(w.astype(np.float64)) for w in net.init(6)]
    graph = tf.function(lambda p, t: meta_gradients(net, cfg, p, t))
    fast, fast_metrics = graph(params32, _cast(tasks, tf.float32))
    reference, ref_metrics = graph(params64, _cast(tasks, tf.float64))
    np.testing.assert_allclose(fast_metrics.loss_sum, ref_metrics.loss_sum, rtol=1e-4)
    for f, r in zip(fast, reference, strict=True):
        np.testing.assert_allclose(f, r, rtol=2e-3, atol=2e-3 * np.abs(r.numpy()).max())


def test_fast_path_is_chosen_only_where_it_applies() -> None:
    x = tf.zeros((2, 1, 4, 4, 1))
    assert use_fast_convnet(x)
    assert not use_fast_convnet(tf.zeros((2, 1, 4, 4, 1), tf.float64))
    in_graph = tf.function(lambda x: tf.constant(use_fast_convnet(x)))
    assert bool(in_graph(x))
    under_xla = tf.function(lambda x: tf.constant(use_fast_convnet(x)), jit_compile=True)
    assert not bool(under_xla(x))
    dynamic = tf.function(
        lambda x: tf.constant(use_fast_convnet(x)),
        input_signature=[tf.TensorSpec([None, 1, 4, 4, 1])],
    )
    assert not bool(dynamic(x))


def test_meta_gradients_agree_with_and_without_xla() -> None:
    """XLA traces the reference path, plain graphs the fast one: both give the same step."""
    net = NETS[0]
    cfg = MamlConfig(alpha=0.1, order=2, loss="xent")
    tasks = _cast(_tasks(net, 3, 4, seed=7), tf.float32)
    params = [tf.constant(w) for w in net.init(8)]
    plain = tf.function(lambda p, t: meta_gradients(net, cfg, p, t)[0])(params, tasks)
    xla = tf.function(lambda p, t: meta_gradients(net, cfg, p, t)[0], jit_compile=True)(
        params, tasks
    )
    for a, b in zip(plain, xla, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * np.abs(b.numpy()).max())
