"""Finn et al.'s MAML convolutional network (the architecture the 2020 thesis, section 5.4, says
it used), as a task-batched ``Model`` beside our own ``ConvNet``.

What Finn's public code (github.com/cbfinn/maml, ``maml.py`` ``construct_conv_weights`` /
``forward_conv`` and ``utils.py`` ``conv_block`` / ``normalize``) builds, and what differs from
``models.ConvNet``:

- 4 blocks of [3x3 'same' conv + a per-channel *bias*, batch norm, ReLU]. Omniglot: 64 filters,
  stride-2 convs, no pooling; miniImageNet: 32 filters, stride-1 convs, each block followed by a
  2x2 'valid' max-pool. (``ConvNet``: same blocks, no conv bias.)
- Batch norm is ``tf.contrib.layers.batch_norm`` with its defaults: batch statistics (always in
  training mode), epsilon 1e-3, an offset (beta) and *no* scale. Its offset is a variable outside
  the ``weights`` dict that the inner loop differentiates, so it is learned by the outer Adam only
  and *not* adapted per task. (``ConvNet``: a scale and an offset, both adapted.)
- Head: Omniglot averages the last feature map over space (64 features; ``ConvNet`` flattens
  2x2x64 = 256); miniImageNet flattens 5x5x32 = 800 (as ``ConvNet``).
- Initialisation: convs Glorot-uniform (fan 9 * channels), biases and offsets 0; the dense head is
  standard normal for Omniglot and Glorot-uniform for miniImageNet.

Two consequences worth knowing:

- With batch statistics, a conv bias is removed again by the batch-norm mean: the network's output
  does not depend on it and its gradient is exactly zero. Finn's inner loop "adapts" it, a no-op;
  it is kept here so the parameter list and count match the original, but it is not added in the
  forward pass: adding it changes nothing but float32 rounding, and that rounding grows with the
  bias against the channel's spread (Finn's float32 bias gradient is noise, which Adam turns into
  steps of about beta, so the bias drifts). Its gradient is therefore an exact zero here (MAML
  asks for unconnected gradients as zeros), and Adam leaves it where it was initialised.
- Keeping the offsets out of the inner loop needs the MAML inner step to skip them. A model cannot
  do that on its own: the support pass and the query pass call ``apply`` identically (first order
  and validation pass the same ``twice_differentiated=False``), so nothing tells it which gradient
  must vanish; and a ``tf.stop_gradient`` on the offsets would also drop the second-order term
  through which an offset changes the inner gradient of the other weights. The net therefore
  declares ``inner_loop_mask`` (``False`` for the offsets), which ``maml.inner_step`` honours;
  checked in ``tests/dmaml_core/test_finn_net.py`` against finite differences to second order.

Defaults of ``tf.contrib.layers.batch_norm`` as documented for TensorFlow 1.15: ``center=True,
scale=False, epsilon=0.001, is_training=True``. Whether Finn's TensorFlow 1 graph differentiated
its batch norm exactly to second order depended on the version (fused or not); this one does.
Not part of the network and not reproduced here: Finn's label smoothing in ``xent`` and the
[-10, 10] meta-gradient clipping for miniImageNet.

Weights, per block: ``[kernel [3, 3, C_in, F], conv bias [F], batch-norm offset [F]]``, then
``[dense [features, n_way], dense bias [n_way]]``; every tensor carries the leading task axis ``T``
in ``apply``, except the grouped layout's own copies (``models.grouped_copies``).

Implementations and ``layout`` values, as in ``ConvNet`` (whose building blocks are reused): a
reference one (im2col convs, hand-written batch norm differentiated exactly; any dtype, dynamic
task count, XLA) and, for float32 with a static task count outside XLA, per-task native convs with
fused batch norm, tasks side by side on channels, or one grouped conv per layer. Having ``layout``
makes ``maml.CompiledMaml`` run the net in chunks of tasks with a measured layout choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import tensorflow as tf

from dmaml_core.models import (
    BN_EPSILON,
    LAYOUTS,
    NumpyWeights,
    Weights,
    channels_to_tasks,
    fused_batch_norm,
    grouped_task_conv3x3,
    kink_free_head,
    kink_free_offsets,
    task_conv3x3,
    task_copies,
    tasks_to_channels,
    use_fast_convnet,
)

WEIGHTS_PER_BLOCK = 3  # kernel, conv bias, batch-norm offset


def _glorot(
    rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int
) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def task_batch_norm_offset(x: tf.Tensor, offset: tf.Tensor) -> tf.Tensor:
    """Per-task batch norm with an offset and no scale; mean and variance over each task's
    [N, H, W], both differentiated through (``tf.nn.moments`` would stop the gradient through the
    mean inside the variance, which breaks second derivatives)."""
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    centred = x - mean
    variance = tf.reduce_mean(tf.square(centred), axis=[1, 2, 3], keepdims=True)
    return centred * tf.math.rsqrt(variance + BN_EPSILON) + offset[:, None, None, None, :]


@dataclass(frozen=True)
class FinnConvNet:
    """Finn et al.'s 4-block MAML conv net; see the module docstring and the two factories."""

    n_way: int = 5
    image_size: int = 28
    channels: int = 1
    filters: int = 64
    stride: int = 2
    max_pool: bool = False
    blocks: int = 4
    features: Literal["mean", "flatten"] = "mean"  # head input: spatial mean or flattened map
    dense_init: Literal["normal", "glorot"] = "normal"
    layout: str = "auto"  # one of models.LAYOUTS: which fast implementation ``apply`` runs

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.features not in ("mean", "flatten"):
            raise ValueError(f"features must be 'mean' or 'flatten', got {self.features!r}")
        if self.dense_init not in ("normal", "glorot"):
            raise ValueError(f"dense_init must be 'normal' or 'glorot', got {self.dense_init!r}")

    @property
    def inner_loop_mask(self) -> tuple[bool, ...]:
        """Per weight, whether the MAML inner loop adapts it: every weight but the batch-norm
        offsets, which only the outer loop learns (Finn's code keeps them out of ``weights``)."""
        block = (True, True, False)
        return block * self.blocks + (True, True)

    def kink_free(self, params: NumpyWeights) -> NumpyWeights:
        """``params`` with the batch-norm offsets moved away from every ReLU kink and the head
        scaled to match (``models.kink_free_offsets``, ``kink_free_head``): where the
        meta-gradient is smooth and well conditioned, so float32 layouts can be held to float32
        noise."""
        out = [np.array(p) for p in params]
        for i in range(self.blocks):
            offset = out[WEIGHTS_PER_BLOCK * i + 2]
            offset[...] = kink_free_offsets(offset.shape)
        out[-2] = kink_free_head(out[-2])
        return out

    def final_side(self) -> int:
        side = self.image_size
        for _ in range(self.blocks):
            side = -(-side // self.stride)
            if self.max_pool:
                side = side // 2
        return side

    def feature_size(self) -> int:
        if self.features == "mean":
            return self.filters
        return self.final_side() ** 2 * self.filters

    def init(self, seed: int) -> NumpyWeights:
        rng = np.random.default_rng(seed)
        weights: NumpyWeights = []
        c_in = self.channels
        for _ in range(self.blocks):
            weights.append(_glorot(rng, (3, 3, c_in, self.filters), 9 * c_in, 9 * self.filters))
            weights.append(np.zeros((self.filters,), np.float32))  # conv bias
            weights.append(np.zeros((self.filters,), np.float32))  # batch-norm offset
            c_in = self.filters
        features = self.feature_size()
        if self.dense_init == "normal":
            dense = rng.standard_normal((features, self.n_way)).astype(np.float32)
        else:
            dense = _glorot(rng, (features, self.n_way), features, self.n_way)
        weights.append(dense)
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
        """Per-task weight copies for ``apply`` on ``x`` (see ``models.task_copies``)."""
        return task_copies(self.layout, params, x)

    def _head(self, h: tf.Tensor, w: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        """[T, N, H, W, C] feature maps -> [T, N, n_way] logits."""
        if self.features == "mean":
            flat = tf.reduce_mean(h, axis=[2, 3])
        else:
            shape = tf.shape(h)
            flat = tf.reshape(h, tf.stack([shape[0], shape[1], -1]))
        return tf.matmul(flat, w) + b[:, None, :]

    def apply_reference(self, weights: Weights, x: tf.Tensor) -> tf.Tensor:
        """Any dtype, dynamic task count, XLA-friendly: im2col convs, hand-written batch norm."""
        h = x
        for i in range(self.blocks):
            kernel, _, offset = weights[WEIGHTS_PER_BLOCK * i : WEIGHTS_PER_BLOCK * (i + 1)]
            h = tf.nn.relu(task_batch_norm_offset(task_conv3x3(h, kernel, self.stride), offset))
            if self.max_pool:
                shape = tf.shape(h)
                pooled = tf.nn.max_pool2d(
                    tf.reshape(h, tf.concat([[-1], shape[2:]], 0)), 2, 2, "VALID"
                )
                h = tf.reshape(pooled, tf.concat([shape[:2], tf.shape(pooled)[1:]], 0))
        return self._head(h, weights[-2], weights[-1])

    def apply_per_task(self, weights: Weights, x: tf.Tensor) -> tf.Tensor:
        """Float32, static task count: a native conv + fused batch norm chain per task (cheapest
        when differentiated once; see ``models.ConvNet.apply_per_task``)."""
        n_tasks = int(x.shape[0])
        per_layer = [tf.unstack(w, num=n_tasks) for w in weights]
        ones = tf.ones([self.filters], x.dtype)  # no batch-norm scale
        outputs = []
        for t, h in enumerate(tf.unstack(x, num=n_tasks)):
            for i in range(self.blocks):
                kernel, _, offset = (
                    per_layer[WEIGHTS_PER_BLOCK * i + j][t] for j in range(WEIGHTS_PER_BLOCK)
                )
                h = fused_batch_norm(tf.nn.conv2d(h, kernel, self.stride, "SAME"), ones, offset)
                h = tf.nn.relu(h)
                if self.max_pool:
                    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
            outputs.append(h)
        return self._head(tf.stack(outputs), weights[-2], weights[-1])

    def apply_task_channels(self, weights: Weights, x: tf.Tensor) -> tf.Tensor:
        """Float32, static task count: per-task native convs, tasks side by side on channels, so
        one fused batch norm over T * F channels normalises every task (one gradient-of-gradient
        per layer; see ``models.ConvNet.apply_task_channels``)."""
        n_tasks = int(x.shape[0])
        inputs = tf.unstack(x, num=n_tasks)  # T x [N, H, W, C]
        ones = tf.ones([n_tasks * self.filters], x.dtype)
        for i in range(self.blocks):
            kernel, _, offset = weights[WEIGHTS_PER_BLOCK * i : WEIGHTS_PER_BLOCK * (i + 1)]
            convs = [
                tf.nn.conv2d(a, k, self.stride, "SAME")
                for a, k in zip(inputs, tf.unstack(kernel, num=n_tasks), strict=True)
            ]
            h = fused_batch_norm(tf.concat(convs, axis=-1), ones, tf.reshape(offset, [-1]))
            h = tf.nn.relu(h)
            if self.max_pool:
                h = tf.nn.max_pool2d(h, 2, 2, "VALID")
            if i < self.blocks - 1:
                inputs = tf.split(h, n_tasks, axis=-1)
        return self._head(channels_to_tasks(h, n_tasks, self.filters), weights[-2], weights[-1])

    def apply_grouped(self, weights: Weights, x: tf.Tensor) -> tf.Tensor:
        """Float32, static task count: the task-channel layout with ONE grouped conv per layer, so
        the graph and its tracing time do not grow with T (``models.ConvNet.apply_grouped``; its
        CPU gradient needs oneDNN)."""
        n_tasks = int(x.shape[0])
        ones = tf.ones([n_tasks * self.filters], x.dtype)
        h = tasks_to_channels(x)
        for i in range(self.blocks):
            kernel, _, offset = weights[WEIGHTS_PER_BLOCK * i : WEIGHTS_PER_BLOCK * (i + 1)]
            h = fused_batch_norm(
                grouped_task_conv3x3(h, kernel, self.stride), ones, tf.reshape(offset, [-1])
            )
            h = tf.nn.relu(h)
            if self.max_pool:
                h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        return self._head(channels_to_tasks(h, n_tasks, self.filters), weights[-2], weights[-1])


def finn_omniglot_net(n_way: int = 5, image_size: int = 28) -> FinnConvNet:
    return FinnConvNet(n_way, image_size, 1, 64, stride=2, max_pool=False, features="mean")


def finn_miniimagenet_net(n_way: int = 5, image_size: int = 84) -> FinnConvNet:
    return FinnConvNet(
        n_way, image_size, 3, 32, stride=1, max_pool=True, features="flatten", dense_init="glorot"
    )
