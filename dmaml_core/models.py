"""Models as pure functions of a weight list, batched over the tasks of a meta-batch.

Every weight tensor carries a leading task axis ``T``: ``apply(weights, x)`` runs ``T`` independent
copies of the network at once, copy ``t`` on ``x[t]`` (the grouped layout keeps its own shapes:
``grouped_copies``). This is what lets MAML adapt one weight copy per task without a Python loop.
The reference path turns a convolution with per-task filters into one batched matmul over image
patches (``tf.vectorized_map`` falls back to a loop for conv gradients); the fast layouts below
use TensorFlow's native convs. A single, un-batched model is simply ``T = 1``.

Batch norm uses the statistics of the current batch of each task (as in the original MAML) and is
written out by hand: ``tf.nn.moments`` stops the gradient through the mean inside the variance,
which is harmless to first order but corrupts second-order MAML.

``ConvNet`` has three implementations of the same function. The reference one (im2col +
hand-written batch norm) works for any dtype, a dynamic task count and under XLA. The fast
ones, used for float32 with a static task count outside XLA, run one native ``conv2d`` per task
(TensorFlow runs the independent per-task ops side by side, so together they cost about what one
shared conv over all images costs) and fused batch norm, whose first and second derivatives are
native or exact:

- ``apply_per_task``: a separate conv / batch norm / ReLU chain per task, nothing copied between
  tasks. Fastest for passes differentiated once (first-order MAML, the query pass), but its
  gradient-of-gradient is thousands of small ops that take long to trace.
- ``apply_task_channels``: activations as ``[N, H, W, T * C]``, so per-task batch norm is one
  ``FusedBatchNormV3`` over ``T * C`` channels. Used where second derivatives are taken
  (``twice_differentiated``, second-order MAML's inner step): one gradient-of-gradient per layer.

- ``apply_grouped``: the same channel layout, but each layer is ONE grouped ``conv2d`` (tasks as
  channel groups), so tracing does not grow with T. TensorFlow has a CPU gradient for grouped convs
  only through oneDNN (``grouped_conv_gradient_available``); how fast it is depends on the machine.

Which fast layout runs is ``ConvNet.layout`` (``LAYOUTS``): ``"auto"`` is per-task chains for passes
differentiated once and task channels where second derivatives are taken; the others force one
implementation everywhere. ``dmaml_core.layouts`` times the candidates on the actual shapes and
picks the fastest (per machine, cached on disk); the default stays ``"auto"``.

``tests/dmaml_core/test_fast_convnet.py`` checks all of them agree to second order. Under XLA the
per-task unrolled graph compiles for minutes, hence the reference path there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from dmaml_core.layouts import LAYOUTS as LAYOUTS  # re-exported: ConvNet.layout values

Weights = list[tf.Tensor]
NumpyWeights = list[np.ndarray]

BN_EPSILON = 1e-3
# How many batch-norm standard deviations ``kink_free_offsets`` puts each channel away from its ReLU
# kink: a normalised value beyond 6 has probability 2e-9, so even T = 32 tasks of 25 images with
# 14 x 14 x 64 maps are unlikely to hold one.
KINK_MARGIN = 6.0

# Layouts whose graph holds one op chain per task: tracing time grows linearly with T.
UNROLLED_LAYOUTS = frozenset({"auto", "per_task", "task_channels"})


class Model(Protocol):
    """What MAML needs from a network: fresh weights and a task-batched forward pass."""

    def init(self, seed: int) -> NumpyWeights: ...

    def apply(
        self, weights: Weights, x: tf.Tensor, *, twice_differentiated: bool = False
    ) -> tf.Tensor:
        """Run the T per-task weight copies. ``twice_differentiated`` says the caller will take
        second derivatives through this pass (second-order MAML's inner step): a model may then
        pick an implementation whose gradient-of-gradient is cheaper to trace. A model may also
        offer ``task_copies(params, x)``, the per-task copies in the shapes its ``apply`` uses
        (``maml.task_copies``; default: a leading task axis)."""
        ...


def _glorot(
    rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int
) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


@dataclass(frozen=True)
class MLP:
    """Fully connected ReLU network; the sinusoid model is ``MLP((1, 40, 40, 1))``."""

    sizes: tuple[int, ...] = (1, 40, 40, 1)

    def init(self, seed: int) -> NumpyWeights:
        rng = np.random.default_rng(seed)
        weights: NumpyWeights = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            weights.append(_glorot(rng, (n_in, n_out), n_in, n_out))
            weights.append(np.zeros((n_out,), np.float32))
        return weights

    def apply(
        self, weights: Weights, x: tf.Tensor, *, twice_differentiated: bool = False
    ) -> tf.Tensor:
        """``x``: [T, N, sizes[0]] -> [T, N, sizes[-1]] (one graph for every use)."""
        h = x
        n_layers = len(weights) // 2
        for i in range(n_layers):
            w, b = weights[2 * i], weights[2 * i + 1]
            h = tf.matmul(h, w) + b[:, None, :]
            if i < n_layers - 1:
                h = tf.nn.relu(h)
        return h


def task_conv3x3(x: tf.Tensor, w: tf.Tensor, stride: int) -> tf.Tensor:
    """3x3 'same' convolution with a different filter per task.

    ``x``: [T, N, H, W, C_in], ``w``: [T, 3, 3, C_in, C_out] -> [T, N, H', W', C_out].
    The 9 shifted (strided) views of the zero-padded input are concatenated into patches and
    multiplied by each task's filter in one batched matmul; every op here has cheap first and second
    derivatives.
    """
    t, n, h, wd, c = (tf.shape(x)[i] for i in range(5))
    c_static = x.shape[-1]
    c_out = w.shape[-1]
    h_out = (h + stride - 1) // stride
    w_out = (wd + stride - 1) // stride
    # TensorFlow's SAME padding: total = max((out - 1) * stride + 3 - in, 0), extra row at the end.
    pad_h = tf.maximum((h_out - 1) * stride + 3 - h, 0)
    pad_w = tf.maximum((w_out - 1) * stride + 3 - wd, 0)
    flat = tf.reshape(x, tf.stack([t * n, h, wd, c]))
    # Pad so that the padded extent is a multiple of the stride; then every strided view is a plain
    # slice of a [.., H/s, s, W/s, s, C] reshape (TensorFlow's strided slices are slow on CPU).
    span_h = (h_out - 1) * stride + 3
    span_w = (w_out - 1) * stride + 3
    full_h = (span_h + stride - 1) // stride * stride
    full_w = (span_w + stride - 1) // stride * stride
    top, left = pad_h // 2, pad_w // 2
    padded = tf.pad(
        flat,
        tf.stack([[0, 0], [top, full_h - h - top], [left, full_w - wd - left], [0, 0]]),
    )
    grid = tf.reshape(
        padded, tf.stack([t * n, full_h // stride, stride, full_w // stride, stride, c])
    )
    views = [
        grid[
            :,
            dy // stride : dy // stride + h_out,
            dy % stride,
            dx // stride : dx // stride + w_out,
            dx % stride,
            :,
        ]
        for dy in range(3)
        for dx in range(3)
    ]
    patches = tf.reshape(tf.concat(views, axis=-1), tf.stack([t, n * h_out * w_out, 9 * c]))
    kernel = tf.reshape(w, [-1, 9 * c_static, c_out])
    out = tf.matmul(patches, kernel)
    return tf.reshape(out, tf.stack([t, n, h_out, w_out, c_out]))


def task_batch_norm(x: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """Normalise each task's batch with its own mean and variance (both differentiated through)."""
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    centred = x - mean
    variance = tf.reduce_mean(tf.square(centred), axis=[1, 2, 3], keepdims=True)
    return (
        centred * tf.math.rsqrt(variance + BN_EPSILON) * scale[:, None, None, None, :]
        + offset[:, None, None, None, :]
    )


def kink_free_offsets(shape: tuple[int, ...]) -> np.ndarray:
    """Batch-norm offsets +KINK_MARGIN, -KINK_MARGIN, ... on alternate channels (the last axis).

    With batch statistics and a unit scale, a ReLU input is a normalised value plus its offset, so
    every ReLU sits far from its kink: half the channels always on, half always off. There the
    meta-gradient is smooth, and two float32 implementations differ by rounding only, while near a
    kink one flipped ReLU in a large early map moves a first-block gradient by about
    1 / sqrt(N * H * W) (1e-3 to 1e-2: issue 18). Tests and the layout search compare layouts on
    weights made so."""
    signs = np.where(np.arange(shape[-1]) % 2 == 0, 1.0, -1.0)
    return np.broadcast_to(KINK_MARGIN * signs, shape).astype(np.float32)


def kink_free_head(dense: np.ndarray) -> np.ndarray:
    """The dense head scaled so that each class's weight column has norm 1 / KINK_MARGIN: with the
    features of ``kink_free_offsets`` (about KINK_MARGIN on half the channels) the logits stay
    O(1), and the cross-entropy is not a float32 difference of large logits."""
    norms = np.linalg.norm(dense, axis=0, keepdims=True)
    return (dense / (KINK_MARGIN * np.maximum(norms, 1e-12))).astype(np.float32)


def fused_batch_norm(h: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """Training-mode ``FusedBatchNormV3`` over the channels of ``h`` [N, H, W, C], on input whose
    per-channel mean is removed first.

    Why centre: batch norm is shift-invariant per channel, so ``BN(h - c) == BN(h)`` for any
    constant ``c``, with the same derivatives of every order in ``h``; ``c`` is the channel mean
    under ``stop_gradient``, which autodiff treats as such a constant (exact to second order). The
    fused kernel's float32 variance loses digits as the channel mean grows against its spread (with
    oneDNN on: 2.3e-5 off the float64 result at mean/std = 10, 2.8e-6 centred, measured on
    25 x 14 x 14 x 64 maps, AMD EPYC AVX2; README "Layouts against float64"), and every such
    error can flip a ReLU kink in the large early maps, which moves a first-block gradient by
    about 1 / sqrt(N * H * W) (issue 18)."""
    centred = h - tf.stop_gradient(tf.reduce_mean(h, axis=[0, 1, 2]))
    out, _, _ = tf.compat.v1.nn.fused_batch_norm(
        centred, scale, offset, epsilon=BN_EPSILON, is_training=True
    )
    return out


@dataclass(frozen=True)
class ConvNet:
    """4 x [3x3 conv, batch norm, ReLU (, 2x2 max-pool)] + dense N-way head.

    Omniglot: ``ConvNet(n_way, 28, 1, 64, stride=2, max_pool=False)``;
    miniImageNet: ``ConvNet(n_way, 84, 3, 32, stride=1, max_pool=True)``.
    """

    n_way: int = 5
    image_size: int = 28
    channels: int = 1
    filters: int = 64
    stride: int = 2
    max_pool: bool = False
    blocks: int = 4
    layout: str = "auto"  # one of LAYOUTS: which fast implementation ``apply`` runs

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")

    def kink_free(self, params: NumpyWeights) -> NumpyWeights:
        """``params`` with unit batch-norm scales, offsets moved away from every ReLU kink
        (``kink_free_offsets``) and the head scaled to match (``kink_free_head``): where the
        meta-gradient is smooth and well conditioned."""
        out = [np.array(p) for p in params]
        for i in range(self.blocks):
            out[3 * i + 1][...] = 1.0
            out[3 * i + 2][...] = kink_free_offsets(out[3 * i + 2].shape)
        out[-2] = kink_free_head(out[-2])
        return out

    def feature_size(self) -> int:
        side = self.image_size
        for _ in range(self.blocks):
            side = -(-side // self.stride)
            if self.max_pool:
                side = side // 2
        return side * side * self.filters

    def init(self, seed: int) -> NumpyWeights:
        rng = np.random.default_rng(seed)
        weights: NumpyWeights = []
        c_in = self.channels
        for _ in range(self.blocks):
            weights.append(_glorot(rng, (3, 3, c_in, self.filters), 9 * c_in, 9 * self.filters))
            weights.append(np.ones((self.filters,), np.float32))  # batch-norm scale
            weights.append(np.zeros((self.filters,), np.float32))  # batch-norm offset
            c_in = self.filters
        features = self.feature_size()
        weights.append(_glorot(rng, (features, self.n_way), features, self.n_way))
        weights.append(np.zeros((self.n_way,), np.float32))
        return weights

    def apply(
        self, weights: Weights, x: tf.Tensor, *, twice_differentiated: bool = False
    ) -> tf.Tensor:
        """``x``: [T, N, H, W, C] images -> [T, N, n_way] logits."""
        x = tf.convert_to_tensor(x)
        if not use_fast_convnet(x) or self.layout == "reference":
            return self.apply_reference(weights, x)
        if self.layout == "grouped":
            return self.apply_grouped(weights, x)
        if self.layout == "task_channels" or (self.layout == "auto" and twice_differentiated):
            return self.apply_task_channels(weights, x)
        return self.apply_per_task(weights, x)

    def task_copies(self, params: Weights, x: tf.Tensor) -> Weights:
        """Per-task weight copies for ``apply`` on input ``x``: in the grouped layout's own shapes
        where ``apply`` will take it (``grouped_copies``), else with a leading task axis."""
        return task_copies(self.layout, params, x)

    def apply_reference(self, weights: Weights, x: tf.Tensor) -> tf.Tensor:
        """Any dtype, dynamic task count, XLA-friendly: im2col convs and hand-written batch norm."""
        h = x
        for i in range(self.blocks):
            kernel, scale, offset = weights[3 * i : 3 * i + 3]
            h = task_conv3x3(h, kernel, self.stride)
            h = tf.nn.relu(task_batch_norm(h, scale, offset))
            if self.max_pool:
                shape = tf.shape(h)
                pooled = tf.nn.max_pool2d(
                    tf.reshape(h, tf.concat([[-1], shape[2:]], 0)), 2, 2, "VALID"
                )
                h = tf.reshape(pooled, tf.concat([shape[:2], tf.shape(pooled)[1:]], 0))
        shape = tf.shape(h)
        flat = tf.reshape(h, tf.stack([shape[0], shape[1], -1]))
        w, b = weights[-2], weights[-1]
        return tf.matmul(flat, w) + b[:, None, :]

    def apply_per_task(self, weights: Weights, x: tf.Tensor) -> tf.Tensor:
        """Float32, static task count: a separate native conv + fused batch norm chain per task.

        Nothing is copied between tasks, and TensorFlow runs the independent per-task ops side by
        side on its inter-op threads, so T small chains cost about what one chain over all images
        costs. Its second derivatives are many small ops (slow to trace): see ``apply``."""
        n_tasks = int(x.shape[0])
        per_layer = [tf.unstack(w, num=n_tasks) for w in weights]
        logits = []
        for t, h in enumerate(tf.unstack(x, num=n_tasks)):
            for i in range(self.blocks):
                kernel, scale, offset = (per_layer[3 * i + j][t] for j in range(3))
                h = tf.nn.conv2d(h, kernel, self.stride, "SAME")
                h = fused_batch_norm(h, scale, offset)
                h = tf.nn.relu(h)
                if self.max_pool:
                    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
            flat = tf.reshape(h, tf.stack([tf.shape(h)[0], -1]))
            logits.append(tf.matmul(flat, per_layer[-2][t]) + per_layer[-1][t])
        return tf.stack(logits)

    def apply_task_channels(self, weights: Weights, x: tf.Tensor) -> tf.Tensor:
        """Float32, static task count: per-task native convs, tasks side by side on channels.

        One ``FusedBatchNormV3`` over ``T * C`` channels normalises every task at once; its
        gradient-of-gradient is one op per layer, which keeps second-order MAML quick to trace."""
        n_tasks = int(x.shape[0])
        inputs = tf.unstack(x, num=n_tasks)  # T x [N, H, W, C]
        for i in range(self.blocks):
            kernel, scale, offset = weights[3 * i : 3 * i + 3]
            kernels = tf.unstack(kernel, num=n_tasks)
            convs = [
                tf.nn.conv2d(a, k, self.stride, "SAME")
                for a, k in zip(inputs, kernels, strict=True)
            ]
            h = tf.concat(convs, axis=-1)  # [N, H', W', T * C_out]: task t owns channel block t
            # Training-mode batch norm normalises each channel over (N, H, W): per task.
            h = fused_batch_norm(h, tf.reshape(scale, [-1]), tf.reshape(offset, [-1]))
            h = tf.nn.relu(h)
            if self.max_pool:
                h = tf.nn.max_pool2d(h, 2, 2, "VALID")
            if i < self.blocks - 1:
                inputs = tf.split(h, n_tasks, axis=-1)
        shape = tf.shape(h)
        per_task = tf.reshape(h, tf.stack([shape[0], shape[1], shape[2], n_tasks, self.filters]))
        flat = tf.reshape(
            tf.transpose(per_task, [3, 0, 1, 2, 4]), tf.stack([n_tasks, shape[0], -1])
        )
        w, b = weights[-2], weights[-1]
        return tf.matmul(flat, w) + b[:, None, :]

    def apply_grouped(self, weights: Weights, x: tf.Tensor) -> tf.Tensor:
        """Float32, static task count: one grouped conv per layer, tasks as channel groups.

        Activations are ``[N, H, W, T * C]`` as in ``apply_task_channels``, but the T convs of a
        layer are one ``conv2d`` whose filter ``[3, 3, C_in, T * C_out]`` has T groups, so the graph
        (and its tracing time) does not grow with T. Its gradient on CPU needs oneDNN (see
        ``grouped_conv_gradient_available``)."""
        n_tasks = int(x.shape[0])
        h = tasks_to_channels(x)
        for i in range(self.blocks):
            kernel, scale, offset = weights[3 * i : 3 * i + 3]
            h = grouped_task_conv3x3(h, kernel, self.stride)
            h = fused_batch_norm(h, tf.reshape(scale, [-1]), tf.reshape(offset, [-1]))
            h = tf.nn.relu(h)
            if self.max_pool:
                h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        per_task = channels_to_tasks(h, n_tasks, self.filters)
        shape = tf.shape(per_task)
        flat = tf.reshape(per_task, tf.stack([n_tasks, shape[1], -1]))
        w, b = weights[-2], weights[-1]
        return tf.matmul(flat, w) + b[:, None, :]


def tasks_to_channels(x: tf.Tensor) -> tf.Tensor:
    """[T, N, H, W, C] -> [N, H, W, T * C]: channel block t holds task t (the grouped layout)."""
    h = tf.transpose(x, [1, 2, 3, 0, 4])  # [N, H, W, T, C]
    shape = tf.shape(h)
    channels = x.shape[0] * x.shape[4] if x.shape[0] and x.shape[4] else -1  # static if known
    return tf.reshape(h, tf.stack([shape[0], shape[1], shape[2], channels]))


def channels_to_tasks(h: tf.Tensor, n_tasks: int, filters: int) -> tf.Tensor:
    """[N, H, W, T * F] -> [T, N, H, W, F], the inverse of ``tasks_to_channels``."""
    shape = tf.shape(h)
    per_task = tf.reshape(h, tf.stack([shape[0], shape[1], shape[2], n_tasks, filters]))
    return tf.transpose(per_task, [3, 0, 1, 2, 4])


def grouped_task_conv3x3(h: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """Per-task 3x3 'SAME' convs as ONE grouped conv: ``h`` [N, H, W, T * C_in] (task t in channel
    block t), ``kernel`` [T, 3, 3, C_in, C_out] or already grouped [3, 3, C_in, T * C_out]
    (``grouped_copies``) -> [N, H', W', T * C_out]. With one input channel per task it is a
    depthwise conv instead, whose gradient is native everywhere."""
    if kernel.shape.rank == 4:  # already grouped: [3, 3, C_in, T * C_out] (``grouped_copies``)
        grouped = kernel
        c_in = int(kernel.shape[2])
        n_tasks = int(h.shape[-1]) // c_in
    else:
        n_tasks, c_in = int(kernel.shape[0]), int(kernel.shape[3])
        # [T, 3, 3, C_in, C_out] -> [3, 3, C_in, T * C_out]: output block t is task t's filter
        grouped = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [3, 3, c_in, -1])
    if n_tasks == 1 or c_in > 1:
        return tf.nn.conv2d(h, grouped, stride, "SAME")
    # one input channel per task: [3, 3, 1, T * C_out] is the depthwise filter [3, 3, T, C_out]
    depthwise = tf.reshape(grouped, [3, 3, n_tasks, -1])
    return tf.nn.depthwise_conv2d(h, depthwise, [1, stride, stride, 1], "SAME")


def tile(params: Weights, n_tasks: int | tf.Tensor) -> Weights:
    """One copy of the shared weights per task: ``[...] -> [T, ...]``."""
    return [tf.repeat(tf.convert_to_tensor(p)[None], n_tasks, axis=0) for p in params]


def grouped_copies(params: Weights, n_tasks: int | tf.Tensor) -> Weights:
    """One copy of a conv net's shared weights per task, stored the way the grouped layout uses
    them, so the inner loop never transposes: a kernel [3, 3, C_in, C_out] becomes
    [3, 3, C_in, T * C_out] and a per-channel vector [C] becomes [T * C] (channel block t: task t);
    the dense head (the last two weights) gets a leading task axis (``tile``). The outer
    gradient through ``tf.tile`` sums the blocks back."""
    head = len(params) - 2
    copies = []
    for p in map(tf.convert_to_tensor, params[:head]):
        multiples = [1, 1, 1, n_tasks] if p.shape.rank == 4 else [n_tasks]
        copies.append(tf.tile(p, tf.stack(multiples)))
    return copies + tile(params[head:], n_tasks)


def task_copies(layout: str, params: Weights, x: tf.Tensor) -> Weights:
    """``grouped_copies`` where a conv net in ``layout`` takes the grouped path on ``x``, else a
    plain copy per task on a leading axis (every other path expects that)."""
    x = tf.convert_to_tensor(x)
    if layout == "grouped" and use_fast_convnet(x):
        return grouped_copies(params, int(x.shape[0]))
    return tile(params, tf.shape(x)[0])


def grouped_conv_gradient_available() -> bool:
    """Whether a grouped ``conv2d`` can be differentiated twice here: TensorFlow's CPU kernels
    refuse its backward ("Gradients for grouped convolutions are not supported on CPU") unless
    oneDNN is on; GPUs have it. Probed once per process with a tiny second-order gradient."""
    return _grouped_probe()


@functools.cache
def _grouped_probe() -> bool:
    x = tf.ones([1, 4, 4, 4])
    k = tf.ones([3, 3, 2, 4])
    try:
        with tf.GradientTape() as outer:
            outer.watch(k)
            with tf.GradientTape() as inner:
                inner.watch(k)
                y = tf.reduce_sum(tf.square(tf.nn.conv2d(x, k, 2, "SAME")))
            g = inner.gradient(y, k)
            z = tf.reduce_sum(tf.square(g))
        return bool(np.isfinite(outer.gradient(z, k).numpy()).all())
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return False


def use_fast_convnet(x: tf.Tensor) -> bool:
    """Whether ``ConvNet.apply`` takes the fast path for input ``x`` (see the module docstring)."""
    if x.dtype != tf.float32 or x.shape.rank != 5 or x.shape[0] is None:
        return False
    if tf.executing_eagerly():
        return True
    return not control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def omniglot_convnet(n_way: int = 5) -> ConvNet:
    return ConvNet(n_way=n_way, image_size=28, channels=1, filters=64, stride=2, max_pool=False)


def miniimagenet_convnet(n_way: int = 5) -> ConvNet:
    return ConvNet(n_way=n_way, image_size=84, channels=3, filters=32, stride=1, max_pool=True)
