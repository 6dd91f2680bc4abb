"""MAML as pure functions over weight lists, vectorised over the tasks of a meta-batch.

    adapt(params, support)            -> one adapted weight copy per task (inner SGD, rate alpha)
    meta_loss(params, tasks)          -> sum or mean of the query losses after adaptation
    meta_step(params, opt_state, ...) -> Adam step (rate beta) on the meta-gradient

Tasks are stacked on a leading axis and the model runs all per-task weight copies at once (see
``models``), so nothing here loops over tasks in Python. ``CompiledMaml`` wraps the functions in
``tf.function`` once per (model, config) and is what workers call on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import tensorflow as tf

from dmaml_core.models import Model, NumpyWeights, Weights
from dmaml_core.optim import AdamState, adam_init, adam_update
from dmaml_core.types import LossKind as LossKind  # re-exported: the domains' loss kinds
from dmaml_core.types import Tasks as Tasks  # re-exported: the meta-batch type

Order = Literal[1, 2]
Aggregation = Literal["sum", "mean"]


@dataclass(frozen=True)
class MamlConfig:
    """Hyper-parameters of one MAML learner (defaults: sinusoid, thesis table 5.3)."""

    alpha: float = 0.01  # inner-loop SGD rate
    beta: float = 0.01  # outer-loop Adam rate
    inner_steps: int = 1
    order: Order = 2  # 2: differentiate through the inner gradient; 1: treat it as a constant
    aggregation: Aggregation = "sum"  # meta-loss over the tasks of a meta-batch
    loss: LossKind = "mse"
    # XLA: slower to compile and no faster for the MLP; a ConvNet traced under XLA takes its
    # XLA-friendly reference path, 2-3x slower than its default fast path (see models).
    jit_compile: bool = False

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha!r}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")
        if not (isinstance(self.inner_steps, int) and self.inner_steps >= 1):
            raise ValueError(f"inner_steps must be an integer >= 1, got {self.inner_steps!r}")
        if self.order not in (1, 2):
            raise ValueError(
                f"order must be 1 (first order) or 2 (second order), got {self.order!r}"
            )
        if self.aggregation not in ("sum", "mean"):
            raise ValueError(f"aggregation must be 'sum' or 'mean', got {self.aggregation!r}")
        if self.loss not in ("mse", "xent"):
            raise ValueError(f"loss must be 'mse' or 'xent', got {self.loss!r}")


def tile(params: Weights, n_tasks: int | tf.Tensor) -> Weights:
    """One copy of the shared weights per task: ``[...] -> [T, ...]``."""
    return [tf.repeat(p[None], n_tasks, axis=0) for p in params]


def task_losses(
    model: Model,
    loss: LossKind,
    weights: Weights,
    x: tf.Tensor,
    y: tf.Tensor,
    twice_differentiated: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-task mean loss [T] and accuracy [T] (accuracy is 0 for regression)."""
    out = model.apply(weights, x, twice_differentiated=twice_differentiated)
    if loss == "mse":
        losses = tf.reduce_mean(tf.square(out - y), axis=[1, 2])
        return losses, tf.zeros_like(losses)
    labels = tf.cast(y, tf.int32)
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=out)
    correct = tf.cast(tf.equal(tf.argmax(out, axis=-1, output_type=tf.int32), labels), tf.float32)
    return tf.reduce_mean(per_example, axis=1), tf.reduce_mean(correct, axis=1)


def inner_step(
    model: Model, cfg: MamlConfig, weights: Weights, x: tf.Tensor, y: tf.Tensor, first_order: bool
) -> Weights:
    """One SGD step per task on its support set. Tasks are independent, so the gradient of the
    summed task losses w.r.t. the stacked weights is the stack of per-task gradients."""
    with tf.GradientTape() as tape:
        tape.watch(weights)
        # Second order differentiates this pass twice (the outer tape sees the inner gradient).
        losses, _ = task_losses(model, cfg.loss, weights, x, y, not first_order)
        total = tf.reduce_sum(losses)
    grads = tape.gradient(total, weights)
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
    return [w - cfg.alpha * g for w, g in zip(weights, grads, strict=True)]


def adapt(
    model: Model,
    cfg: MamlConfig,
    params: Weights,
    support_x: tf.Tensor,
    support_y: tf.Tensor,
    steps: int | None = None,
    first_order: bool | None = None,
) -> Weights:
    """Adapted weights [T, ...] after ``steps`` (default ``cfg.inner_steps``) inner SGD steps."""
    first_order = cfg.order == 1 if first_order is None else first_order
    weights = tile(params, tf.shape(support_x)[0])
    for _ in range(cfg.inner_steps if steps is None else steps):
        weights = inner_step(model, cfg, weights, support_x, support_y, first_order)
    return weights


def query_losses(
    model: Model, cfg: MamlConfig, params: Weights, tasks: Tasks
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-task query loss and accuracy of the adapted weights."""
    adapted = adapt(model, cfg, params, tasks.support_x, tasks.support_y)
    return task_losses(model, cfg.loss, adapted, tasks.query_x, tasks.query_y)


def aggregate(cfg: MamlConfig, losses: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(losses) if cfg.aggregation == "sum" else tf.reduce_mean(losses)


def meta_loss(model: Model, cfg: MamlConfig, params: Weights, tasks: Tasks) -> tf.Tensor:
    return aggregate(cfg, query_losses(model, cfg, params, tasks)[0])


class StepMetrics(NamedTuple):
    loss_sum: tf.Tensor  # sum over tasks of the post-adaptation query loss
    accuracy: tf.Tensor  # mean over tasks of the post-adaptation query accuracy


def meta_gradients(
    model: Model, cfg: MamlConfig, params: Weights, tasks: Tasks
) -> tuple[Weights, StepMetrics]:
    """Gradient of the aggregated query loss w.r.t. the shared initialisation ``params``."""
    with tf.GradientTape() as tape:
        tape.watch(params)
        losses, accuracy = query_losses(model, cfg, params, tasks)
        objective = aggregate(cfg, losses)
    grads = tape.gradient(objective, params)
    return grads, StepMetrics(tf.reduce_sum(losses), tf.reduce_mean(accuracy))


def meta_step(
    model: Model, cfg: MamlConfig, params: Weights, opt_state: AdamState, tasks: Tasks
) -> tuple[Weights, AdamState, StepMetrics]:
    """One MAML step: meta-gradient, then Adam with rate beta."""
    grads, metrics = meta_gradients(model, cfg, params, tasks)
    new_params, new_state = adam_update(grads, opt_state, params, cfg.beta)
    return new_params, new_state, metrics


def validation_curves(
    model: Model, cfg: MamlConfig, params: Weights, tasks: Tasks, steps: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Query loss and accuracy matrices [steps + 1, V]: row s is every validation task after s
    inner SGD steps (thesis fig. 5.1); the validation figure for step s is the row mean."""
    weights = tile(params, tf.shape(tasks.support_x)[0])
    loss_rows, acc_rows = [], []
    for s in range(steps + 1):
        if s > 0:
            weights = inner_step(model, cfg, weights, tasks.support_x, tasks.support_y, True)
        losses, accuracy = task_losses(model, cfg.loss, weights, tasks.query_x, tasks.query_y)
        loss_rows.append(losses)
        acc_rows.append(accuracy)
    return tf.stack(loss_rows), tf.stack(acc_rows)


def _as_tensors(tasks: Tasks) -> Tasks:
    return Tasks(*(tf.convert_to_tensor(a) for a in tasks))


class CompiledMaml:
    """The functions above, compiled once for one (model, config) pair.

    Tracing happens on the first call (the warm-up run); later calls with the same shapes reuse the
    graph. Parameters stay TensorFlow tensors between steps; convert with ``to_numpy`` at the edges.
    """

    def __init__(self, model: Model, cfg: MamlConfig) -> None:
        self.model = model
        self.cfg = cfg
        compile_opts = {"jit_compile": cfg.jit_compile, "reduce_retracing": True}
        self._step = tf.function(lambda p, s, t: meta_step(model, cfg, p, s, t), **compile_opts)
        self._grads = tf.function(lambda p, t: meta_gradients(model, cfg, p, t), **compile_opts)
        self._apply_grads = tf.function(
            lambda g, s, p: adam_update(g, s, p, cfg.beta), **compile_opts
        )
        self._validate = tf.function(
            lambda p, t, steps: validation_curves(model, cfg, p, t, steps), reduce_retracing=True
        )

    def init_optimizer(self, params: NumpyWeights | Weights) -> AdamState:
        return adam_init(params)

    def step(
        self, params: Weights, opt_state: AdamState, tasks: Tasks
    ) -> tuple[Weights, AdamState, StepMetrics]:
        return self._step(list(params), opt_state, _as_tensors(tasks))  # type: ignore[no-any-return]

    def gradients(self, params: Weights, tasks: Tasks) -> tuple[Weights, StepMetrics]:
        return self._grads(list(params), _as_tensors(tasks))  # type: ignore[no-any-return]

    def apply_gradients(
        self, grads: Weights, opt_state: AdamState, params: Weights
    ) -> tuple[Weights, AdamState]:
        return self._apply_grads(list(grads), opt_state, list(params))  # type: ignore[no-any-return]

    def validate(self, params: Weights, tasks: Tasks, steps: int) -> tuple[np.ndarray, np.ndarray]:
        losses, accuracy = self._validate(list(params), _as_tensors(tasks), steps)
        return losses.numpy(), accuracy.numpy()


def to_tensors(weights: NumpyWeights | Weights) -> Weights:
    return [tf.convert_to_tensor(w, tf.float32) for w in weights]


def to_numpy(weights: Weights) -> NumpyWeights:
    return [np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in weights]
