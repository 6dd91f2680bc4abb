"""``FinnConvNet`` (Finn et al.'s MAML conv net) against independent float64 computations.

- forward: every implementation against a plain numpy float64 per-task network;
- architecture: parameter counts, which weights the inner loop adapts, the conv bias that batch
  norm removes;
- second derivatives: the fast float32 paths against the float64 reference path;
- MAML with the batch-norm offsets kept out of the inner loop (``maml.inner_step`` honours the
  model's ``inner_loop_mask``): first- and second-order meta-gradients against finite differences
  of an explicit per-task loop and against the stopped-gradient form;
- MAML with every weight adapted (the mask ignored) on this net: second order against finite
  differences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import cast

import numpy as np
import pytest
import tensorflow as tf

from dmaml_core import maml
from dmaml_core.finn_net import FinnConvNet, finn_miniimagenet_net, finn_omniglot_net
from dmaml_core.maml import MamlConfig, Tasks, meta_gradients, task_losses
from dmaml_core.models import (
    BN_EPSILON,
    Model,
    Weights,
    grouped_conv_gradient_available,
    use_fast_convnet,
)
from dmaml_core.registry import build
from dmaml_core.tasks.miniimagenet import MiniImageNet
from dmaml_core.tasks.omniglot import Omniglot

# the conv biases are not used by the pass (batch norm removes them): their gradient is zero
ZERO = tf.UnconnectedGradients.ZERO

MEAN_NET = FinnConvNet(n_way=3, image_size=6, channels=1, filters=3, stride=2, blocks=2)
POOL_NET = FinnConvNet(
    n_way=2, image_size=8, channels=2, filters=3, stride=1, max_pool=True, blocks=2,
    features="flatten", dense_init="glorot",
)  # fmt: skip
ODD_NET = FinnConvNet(n_way=3, image_size=7, channels=2, filters=4, stride=2, blocks=3)
NETS = [MEAN_NET, POOL_NET, ODD_NET]
IDS = ["omniglot_like", "miniimagenet_like", "odd_3_blocks"]
# grouped convs have a CPU gradient only through oneDNN: their derivative tests need it
GROUPED_DIFFERENTIATED = pytest.param(
    "grouped",
    marks=pytest.mark.skipif(
        not grouped_conv_gradient_available(), reason="no grouped-conv gradient here (oneDNN off)"
    ),
)


# ---------------------------------------------------------------------------------------------
# Helpers: data, weights, a numpy network


def make_tasks(net: FinnConvNet, n_tasks: int, n: int, seed: int) -> Tasks:
    rng = np.random.default_rng(seed)
    shape = (n_tasks, n, net.image_size, net.image_size, net.channels)
    labels = np.tile(np.arange(n) % net.n_way, (n_tasks, 1)).astype(np.int32)
    return Tasks(rng.standard_normal(shape), labels, rng.standard_normal(shape), labels)


def cast_tasks(tasks: Tasks, dtype: tf.DType) -> Tasks:
    return Tasks(
        tf.constant(tasks.support_x, dtype),
        tf.constant(tasks.support_y),
        tf.constant(tasks.query_x, dtype),
        tf.constant(tasks.query_y),
    )


def task_weights(net: FinnConvNet, n_tasks: int, seed: int = 0) -> list[np.ndarray]:
    """Distinct float64 weights per task, biases and offsets non-zero."""
    rng = np.random.default_rng(seed)
    return [
        np.stack([w + 0.3 * rng.standard_normal(w.shape) for _ in range(n_tasks)])
        for w in net.init(0)
    ]


def params(net: FinnConvNet, seed: int, dtype: tf.DType) -> list[tf.Tensor]:
    """Shared weights with non-zero conv biases and offsets (init leaves them at 0)."""
    rng = np.random.default_rng(seed + 100)
    out = []
    for w in net.init(seed):
        if w.ndim == 1:
            w = w + 0.3 * rng.standard_normal(w.shape)
        out.append(tf.constant(w.astype(np.float64), dtype))
    return out


def numpy_conv_same(x: np.ndarray, k: np.ndarray, stride: int) -> np.ndarray:
    """[N, H, W, C] x [3, 3, C, F] -> [N, H', W', F]; TensorFlow's 'SAME' padding (the extra row
    or column, if any, at the bottom / right)."""
    n, h, w, _ = x.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + 3 - h, 0)
    pad_w = max((out_w - 1) * stride + 3 - w, 0)
    xp = np.pad(x, [(0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                    (0, 0)])  # fmt: skip
    out = np.zeros((n, out_h, out_w, k.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, i * stride : i * stride + 3, j * stride : j * stride + 3, :]
            out[:, i, j, :] = np.einsum("nabc,abcf->nf", patch, k)
    return out


def numpy_forward(net: FinnConvNet, weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """One task, float64, written from the architecture's description."""
    h = x.astype(np.float64)
    for i in range(net.blocks):
        kernel, bias, offset = weights[3 * i : 3 * i + 3]
        h = numpy_conv_same(h, kernel, net.stride) + bias
        mean = h.mean(axis=(0, 1, 2))
        var = ((h - mean) ** 2).mean(axis=(0, 1, 2))
        h = np.maximum((h - mean) / np.sqrt(var + BN_EPSILON) + offset, 0.0)
        if net.max_pool:
            n, hh, ww, c = h.shape
            h = h[:, : hh // 2 * 2, : ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c)
            h = h.max(axis=(2, 4))
    feats = h.mean(axis=(1, 2)) if net.features == "mean" else h.reshape(h.shape[0], -1)
    return cast(np.ndarray, feats @ weights[-2] + weights[-1])


Apply = Callable[[Weights, tf.Tensor], tf.Tensor]


def implementations(net: FinnConvNet) -> dict[str, Apply]:
    return {
        "reference": net.apply_reference,
        "per_task": net.apply_per_task,
        "task_channels": net.apply_task_channels,
        "grouped": net.apply_grouped,
    }


# ---------------------------------------------------------------------------------------------
# Architecture


def test_parameter_counts_match_finns_architecture() -> None:
    omniglot = finn_omniglot_net(5)
    convs = (3 * 3 * 1 * 64 + 64) + 3 * (3 * 3 * 64 * 64 + 64)  # kernels + conv biases
    assert sum(w.size for w in omniglot.init(0)) == convs + 4 * 64 + (64 * 5 + 5)
    assert omniglot.feature_size() == 64  # mean over the final 2x2 map
    mini = finn_miniimagenet_net(5)
    convs = (3 * 3 * 3 * 32 + 32) + 3 * (3 * 3 * 32 * 32 + 32)
    assert mini.final_side() == 5  # 84 -> 42 -> 21 -> 10 -> 5
    assert sum(w.size for w in mini.init(0)) == convs + 4 * 32 + (5 * 5 * 32 * 5 + 5)
    shapes = [w.shape for w in omniglot.init(0)]
    assert shapes[:3] == [(3, 3, 1, 64), (64,), (64,)]
    assert shapes[-2:] == [(64, 5), (5,)]


def test_inner_loop_mask_leaves_out_exactly_the_batch_norm_offsets() -> None:
    net = finn_omniglot_net()
    mask = net.inner_loop_mask
    weights = net.init(0)
    assert len(mask) == len(weights) == 4 * 3 + 2
    assert [i for i, adapted in enumerate(mask) if not adapted] == [2, 5, 8, 11]


def test_init_follows_finn() -> None:
    """Offsets and biases 0; Omniglot's head standard normal, miniImageNet's Glorot-uniform."""
    omniglot = finn_omniglot_net().init(0)
    assert all(not w.any() for w in omniglot[1:12:3] + omniglot[2:12:3] + omniglot[-1:])
    assert 0.8 < omniglot[-2].std() < 1.2
    mini = finn_miniimagenet_net().init(0)
    assert np.abs(mini[-2]).max() <= np.sqrt(6.0 / (800 + 5))
    assert all(w.dtype == np.float32 for w in omniglot + mini)


def test_bad_head_options_are_refused() -> None:
    with pytest.raises(ValueError, match="features"):
        FinnConvNet(features="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dense_init"):
        FinnConvNet(dense_init="zeros")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("impl", ["reference", "per_task", "task_channels", "grouped"])
@pytest.mark.parametrize("net", NETS, ids=IDS)
def test_forward_matches_numpy_float64(net: FinnConvNet, impl: str) -> None:
    n_tasks = 3
    weights = task_weights(net, n_tasks)
    x = make_tasks(net, n_tasks, 4, seed=1).support_x
    expected = np.stack([numpy_forward(net, [w[t] for w in weights], x[t]) for t in range(n_tasks)])
    dtype = tf.float64 if impl == "reference" else tf.float32
    got = implementations(net)[impl](
        [tf.constant(w, dtype) for w in weights], tf.constant(x, dtype)
    )
    tol = 1e-10 if dtype == tf.float64 else 1e-4
    np.testing.assert_allclose(got.numpy(), expected, rtol=tol, atol=tol * np.abs(expected).max())


def test_apply_picks_the_implementations_like_convnet() -> None:
    net = MEAN_NET
    weights = [tf.constant(w, tf.float32) for w in task_weights(net, 2)]
    x = tf.constant(make_tasks(net, 2, 3, seed=2).support_x, tf.float32)
    assert use_fast_convnet(x)
    np.testing.assert_array_equal(net.apply(weights, x), net.apply_per_task(weights, x))
    np.testing.assert_array_equal(
        net.apply(weights, x, twice_differentiated=True), net.apply_task_channels(weights, x)
    )


def test_conv_bias_is_removed_by_batch_norm() -> None:
    """Batch statistics subtract any per-channel constant again: the output does not depend on
    the conv biases and their gradient is zero (Finn's inner loop adapts them, a no-op; here
    they are not even added, so the zero is exact), while the kernels' gradient is not."""
    net = ODD_NET
    weights = task_weights(net, 2)
    x = tf.constant(make_tasks(net, 2, 4, seed=3).support_x)
    shifted = [w + 5.0 if i % 3 == 1 and i < 3 * net.blocks else w for i, w in enumerate(weights)]
    base = net.apply_reference([tf.constant(w) for w in weights], x).numpy()
    moved = net.apply_reference([tf.constant(w) for w in shifted], x).numpy()
    np.testing.assert_allclose(moved, base, rtol=1e-9, atol=1e-9 * np.abs(base).max())
    tensors = [tf.constant(w) for w in weights]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        loss = tf.reduce_sum(tf.sin(net.apply_reference(tensors, x)))
    zeros = tf.UnconnectedGradients.ZERO
    grads = [g.numpy() for g in tape.gradient(loss, tensors, unconnected_gradients=zeros)]
    kernel_scale = max(np.abs(g).max() for g in grads[0 : 3 * net.blocks : 3])
    assert kernel_scale > 1e-3
    for g in grads[1 : 3 * net.blocks : 3]:
        assert np.abs(g).max() < 1e-12 * kernel_scale
    for g in grads[2 : 3 * net.blocks : 3]:  # offsets do matter
        assert np.abs(g).max() > 1e-3


@pytest.mark.parametrize("impl", ["per_task", "task_channels", GROUPED_DIFFERENTIATED])
@pytest.mark.parametrize("net", NETS, ids=IDS)
def test_fast_hessian_vector_products_match_float64_reference(net: FinnConvNet, impl: str) -> None:
    """d/dw <d loss/dw, v> through the fast float32 paths vs the float64 reference path."""
    x = make_tasks(net, 2, 3, seed=4).support_x
    mix = np.random.default_rng(5).standard_normal((2, 3, net.n_way))

    def hvp(dtype: tf.DType, apply: Apply) -> list[np.ndarray]:
        weights = [tf.constant(w, dtype) for w in task_weights(net, 2)]
        rng = np.random.default_rng(6)
        vs = [tf.constant(rng.standard_normal(w.shape), dtype) for w in weights]
        with tf.GradientTape() as outer:
            outer.watch(weights)
            with tf.GradientTape() as inner:
                inner.watch(weights)
                loss = tf.reduce_sum(tf.sin(apply(weights, tf.constant(x, dtype))) * mix)
            grads = inner.gradient(loss, weights, unconnected_gradients=ZERO)
            dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs, strict=True)])
        return [g.numpy() for g in outer.gradient(dot, weights, unconnected_gradients=ZERO)]

    fast = hvp(tf.float32, implementations(net)[impl])
    reference = hvp(tf.float64, net.apply_reference)
    # One absolute floor for all weights: the conv biases' entries are 0 up to float32 rounding.
    scale = max(np.abs(r).max() for r in reference)
    for f, r in zip(fast, reference, strict=True):
        np.testing.assert_allclose(f, r, rtol=2e-3, atol=2e-4 * scale)


# ---------------------------------------------------------------------------------------------
# MAML with the offsets kept out of the inner loop


def unmasked_inner_step(
    model: Model, cfg: MamlConfig, weights: Weights, x: tf.Tensor, y: tf.Tensor, first_order: bool
) -> Weights:
    """An inner step that ignores ``inner_loop_mask`` (adapts every weight, offsets included)."""
    with tf.GradientTape() as tape:
        tape.watch(weights)
        losses, _ = task_losses(model, cfg.loss, weights, x, y, not first_order)
        total = tf.reduce_sum(losses)
    grads = tape.gradient(total, weights, unconnected_gradients=ZERO)
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
    return [w - cfg.alpha * g for w, g in zip(weights, grads, strict=True)]


@pytest.fixture
def unmasked_maml(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(maml, "inner_step", unmasked_inner_step)
    yield


def reference_query_loss(
    net: FinnConvNet, alpha: float, steps: int, params: list[tf.Tensor], tasks: Tasks, t: int,
    first_order: bool = False,
) -> tf.Tensor:  # fmt: skip
    """Task ``t`` alone (T = 1), explicit inner SGD on kernels, conv biases and the head only."""
    adaptable = [i for i in range(len(params)) if not (i < 3 * net.blocks and i % 3 == 2)]
    weights = [p[None] for p in params]
    labels = lambda y: tf.constant(y[t : t + 1])  # noqa: E731

    def loss(ws: list[tf.Tensor], x: np.ndarray, y: np.ndarray) -> tf.Tensor:
        logits = net.apply_reference(ws, tf.constant(x[t : t + 1]))
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels(y), logits=logits)
        )

    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            support = loss(weights, tasks.support_x, tasks.support_y)
        grads = tape.gradient(support, [weights[i] for i in adaptable], unconnected_gradients=ZERO)
        for i, g in zip(adaptable, grads, strict=True):
            weights[i] = weights[i] - alpha * (tf.stop_gradient(g) if first_order else g)
    return loss(weights, tasks.query_x, tasks.query_y)


def reference_meta_loss(
    net: FinnConvNet, alpha: float, steps: int, params: list[tf.Tensor], tasks: Tasks
) -> tf.Tensor:
    n_tasks = tasks.support_x.shape[0]
    return tf.add_n(
        [reference_query_loss(net, alpha, steps, params, tasks, t) for t in range(n_tasks)]
    )


def finite_differences(
    objective: Callable[[list[tf.Tensor]], tf.Tensor], base: list[np.ndarray], eps: float = 1e-6
) -> np.ndarray:
    graph = tf.function(objective)
    out = []
    for i, p in enumerate(base):
        for idx in np.ndindex(p.shape):
            values = []
            for sign in (1.0, -1.0):
                shifted = [q.copy() for q in base]
                shifted[i][idx] += sign * eps
                values.append(float(graph([tf.constant(q) for q in shifted])))
            out.append((values[0] - values[1]) / (2 * eps))
    return np.array(out)


def flat(weights: list[tf.Tensor]) -> np.ndarray:
    return np.concatenate([np.ravel(w.numpy()) for w in weights])


FD_NETS = [MEAN_NET, POOL_NET]
FD_IDS = IDS[:2]


@pytest.mark.slow  # 3-8 s each here (finite differences, per-task graphs)
@pytest.mark.parametrize("inner_steps", [1, 2])
@pytest.mark.parametrize("net", FD_NETS, ids=FD_IDS)
def test_masked_second_order_matches_finite_differences(net: FinnConvNet, inner_steps: int) -> None:
    cfg = MamlConfig(alpha=0.4, order=2, loss="xent", inner_steps=inner_steps)
    p = params(net, 3, tf.float64)
    tasks = make_tasks(net, 2, 6, seed=7)
    grads, metrics = meta_gradients(net, cfg, p, tasks)
    fd = finite_differences(
        lambda w: reference_meta_loss(net, cfg.alpha, inner_steps, w, tasks),
        [q.numpy() for q in p],
    )
    np.testing.assert_allclose(flat(grads), fd, rtol=1e-5, atol=1e-7)
    reference = reference_meta_loss(net, cfg.alpha, inner_steps, p, tasks)
    np.testing.assert_allclose(metrics.loss_sum, reference, rtol=1e-12)


@pytest.mark.parametrize("net", FD_NETS, ids=FD_IDS)
def test_masked_first_order_is_the_stopped_gradient_form(net: FinnConvNet) -> None:
    cfg1 = MamlConfig(alpha=0.4, order=1, loss="xent")
    p = params(net, 4, tf.float64)
    tasks = make_tasks(net, 2, 6, seed=8)
    got, _ = meta_gradients(net, cfg1, p, tasks)
    with tf.GradientTape() as tape:
        tape.watch(p)
        total = tf.add_n(
            [reference_query_loss(net, 0.4, 1, p, tasks, t, first_order=True) for t in range(2)]
        )
    expected = tape.gradient(total, p, unconnected_gradients=ZERO)
    np.testing.assert_allclose(flat(got), flat(expected), rtol=1e-10, atol=1e-12)
    second, _ = meta_gradients(net, MamlConfig(alpha=0.4, order=2, loss="xent"), p, tasks)
    assert not np.allclose(flat(got), flat(second), rtol=1e-3)


@pytest.mark.slow  # 3-8 s each here (finite differences, per-task graphs)
@pytest.mark.parametrize("layout", ["auto", GROUPED_DIFFERENTIATED])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("net", NETS, ids=IDS)
def test_masked_fast_meta_gradients_match_float64_reference(
    net: FinnConvNet, order: int, layout: str
) -> None:
    """Float32 takes the fast paths ("auto": task-channels in the twice-differentiated inner step;
    or grouped convs everywhere), float64 the reference path: same masked meta-gradients."""
    net = dataclasses.replace(net, layout=layout)
    cfg = MamlConfig(alpha=0.1, order=order, loss="xent")  # type: ignore[arg-type]
    tasks = make_tasks(net, 3, 4, seed=9)
    graph = tf.function(lambda p, t: meta_gradients(net, cfg, p, t))
    fast, fast_metrics = graph(params(net, 10, tf.float32), cast_tasks(tasks, tf.float32))
    reference, ref_metrics = graph(params(net, 10, tf.float64), cast_tasks(tasks, tf.float64))
    np.testing.assert_allclose(fast_metrics.loss_sum, ref_metrics.loss_sum, rtol=1e-4)
    scale = max(np.abs(r.numpy()).max() for r in reference)
    for f, r in zip(fast, reference, strict=True):
        np.testing.assert_allclose(f, r, rtol=2e-3, atol=2e-4 * scale)


def _adapt_changes(net: FinnConvNet, first_order: bool) -> list[float]:
    """Largest |adapted - initial| per weight after two inner steps on three tasks."""
    cfg = MamlConfig(alpha=0.4, order=1 if first_order else 2, loss="xent", inner_steps=2)
    p = params(net, 11, tf.float32)
    tasks = cast_tasks(make_tasks(net, 3, 6, seed=12), tf.float32)
    adapted = maml.adapt(net, cfg, p, tasks.support_x, tasks.support_y)
    return [
        float(np.abs(a.numpy() - w.numpy()[None]).max()) for a, w in zip(adapted, p, strict=True)
    ]


@pytest.mark.parametrize("first_order", [True, False])
def test_masked_inner_loop_keeps_offsets_and_adapts_kernels_and_head(first_order: bool) -> None:
    net = MEAN_NET
    changes = _adapt_changes(net, first_order)
    kernels, biases, offsets = (changes[j : 3 * net.blocks : 3] for j in range(3))
    assert offsets == [0.0] * net.blocks  # exactly the outer weights
    assert min(kernels) > 1e-4 and min(changes[-2:]) > 1e-4
    # Conv biases are "adapted", but their gradient is exactly zero (batch norm removes them).
    assert max(biases) == 0.0


def test_maml_inner_step_keeps_the_offsets() -> None:
    changes = _adapt_changes(MEAN_NET, first_order=True)
    assert changes[2 : 3 * MEAN_NET.blocks : 3] == [0.0] * MEAN_NET.blocks


@pytest.mark.slow  # ~4 s here (finite differences)
@pytest.mark.usefixtures("unmasked_maml")
def test_unmasked_maml_second_order_matches_finite_differences() -> None:
    """With every weight adapted (the mask ignored), still an exact second-order MAML."""
    net = MEAN_NET
    cfg = MamlConfig(alpha=0.4, order=2, loss="xent")
    p = params(net, 13, tf.float64)
    tasks = make_tasks(net, 2, 6, seed=14)
    grads, _ = meta_gradients(net, cfg, p, tasks)
    fd = finite_differences(lambda w: maml.meta_loss(net, cfg, w, tasks), [q.numpy() for q in p])
    np.testing.assert_allclose(flat(grads), fd, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Domains


def test_domains_build_the_finn_net_on_request() -> None:
    registry = {"omniglot": Omniglot, "miniimagenet": MiniImageNet}
    omniglot = build("domain", registry, "omniglot", {"network": "finn", "n_way": 20})
    assert omniglot.model() == finn_omniglot_net(20)
    assert build("domain", registry, "omniglot", {}).model().__class__.__name__ == "ConvNet"
    mini = build("domain", registry, "miniimagenet", {"network": "finn", "image_size": 42})
    assert mini.model() == finn_miniimagenet_net(5, 42)
    assert cast(FinnConvNet, mini.model()).final_side() == 2  # 42 -> 21 -> 10 -> 5 -> 2
    with pytest.raises(ValueError, match="network"):
        build("domain", registry, "omniglot", {"network": "resnet"})
    with pytest.raises(ValueError, match="network"):
        MiniImageNet(network="resnet")  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["auto/2", GROUPED_DIFFERENTIATED])
def test_compiled_maml_runs_the_finn_net_in_chunks_with_a_layout(
    monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    """The net has a ``layout`` field, so ``CompiledMaml`` chunks it and applies the layout choice
    (``DMAML_LAYOUT``): 5 tasks in chunks (float32) == all 5 at once (float64 reference), masked,
    second order."""
    name = layout if "/" in layout else f"{layout}/2"
    monkeypatch.setenv("DMAML_LAYOUT", name)
    net = MEAN_NET
    cfg = MamlConfig(alpha=0.1, order=2, loss="xent")
    compiled = maml.CompiledMaml(net, cfg)
    assert compiled.has_layouts
    tasks = make_tasks(net, 5, 4, seed=13)
    grads, metrics = compiled.gradients(params(net, 14, tf.float32), cast_tasks(tasks, tf.float32))
    assert compiled.layout is not None and compiled.layout.layout == name
    whole = tf.function(lambda p, t: meta_gradients(net, cfg, p, t))
    ref, ref_metrics = whole(params(net, 14, tf.float64), cast_tasks(tasks, tf.float64))
    np.testing.assert_allclose(metrics.loss_sum, ref_metrics.loss_sum, rtol=1e-4)
    scale = max(np.abs(r.numpy()).max() for r in ref)
    for g, r in zip(grads, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=2e-3, atol=2e-4 * scale)
