"""MAML as pure functions over weight lists, vectorised over the tasks of a meta-batch.

    adapt(params, support)            -> one adapted weight copy per task (inner SGD, rate alpha)
    meta_loss(params, tasks)          -> sum or mean of the query losses after adaptation
    meta_step(params, opt_state, ...) -> Adam step (rate beta) on the meta-gradient

Tasks are stacked on a leading axis and the model runs all per-task weight copies at once (see
``models``), so nothing here loops over tasks in Python. ``CompiledMaml`` wraps the functions in
``tf.function`` once per (model, config) and is what workers call on the hot path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import tensorflow as tf

from dmaml_core import layouts
from dmaml_core.layouts import LayoutChoice
from dmaml_core.layouts import parse_layout as parse_layout  # re-exported
from dmaml_core.models import Model, NumpyWeights, Weights, grouped_conv_gradient_available
from dmaml_core.models import tile as tile  # re-exported: the plain per-task copies
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


def task_copies(model: Model, params: Weights, x: tf.Tensor) -> Weights:
    """The per-task weight copies the inner loop adapts: the model's own ``task_copies`` where it
    has one (a conv net in the grouped layout keeps them in the shapes its grouped convs use, so
    no step transposes them), else ``tile``. Either way the inner loop only subtracts gradients of
    the same shapes."""
    own = getattr(model, "task_copies", None)
    if own is not None:
        return own(params, x)  # type: ignore[no-any-return]
    return tile(params, tf.shape(x)[0])


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


def inner_loop_mask(model: Model, n_weights: int) -> tuple[bool, ...]:
    """Which weights the inner loop adapts: the model's optional ``inner_loop_mask`` (e.g. Finn
    et al.'s batch-norm offsets are learned by the outer loop only), else all of them."""
    mask = getattr(model, "inner_loop_mask", None)
    if mask is None:
        return (True,) * n_weights
    if len(mask) != n_weights:
        raise ValueError(f"inner_loop_mask has {len(mask)} entries for {n_weights} weights")
    return tuple(bool(a) for a in mask)


def inner_step(
    model: Model, cfg: MamlConfig, weights: Weights, x: tf.Tensor, y: tf.Tensor, first_order: bool
) -> Weights:
    """One SGD step per task on its support set. Tasks are independent, so the gradient of the
    summed task losses w.r.t. the stacked weights is the stack of per-task gradients. Weights
    outside the model's ``inner_loop_mask`` pass through unchanged (and still carry the outer
    gradient, to second order, through their effect on the adapted ones)."""
    mask = inner_loop_mask(model, len(weights))
    adapted = [w for w, a in zip(weights, mask, strict=True) if a]
    with tf.GradientTape() as tape:
        tape.watch(adapted)
        # Second order differentiates this pass twice (the outer tape sees the inner gradient).
        losses, _ = task_losses(model, cfg.loss, weights, x, y, not first_order)
        total = tf.reduce_sum(losses)
    # zeros, not None, for a weight the pass does not use (``finn_net``'s conv bias)
    grads = tape.gradient(total, adapted, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
    step = iter(grads)
    return [w - cfg.alpha * next(step) if a else w for w, a in zip(weights, mask, strict=True)]


def adapt(
    model: Model,
    cfg: MamlConfig,
    params: Weights,
    support_x: tf.Tensor,
    support_y: tf.Tensor,
    steps: int | None = None,
    first_order: bool | None = None,
) -> Weights:
    """Adapted weights, one copy per task (``task_copies``), after ``steps`` (default
    ``cfg.inner_steps``) inner SGD steps."""
    first_order = cfg.order == 1 if first_order is None else first_order
    weights = task_copies(model, params, support_x)
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
    grads = tape.gradient(objective, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
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
    weights = task_copies(model, params, tasks.support_x)
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


# A model with layouts (``ConvNet``) runs a meta-batch as equal chunks of tasks through one traced
# graph and adds the chunks' meta-gradients up (tasks are independent, so the sum is the
# meta-gradient): tracing then stops growing with T. The chunk size is part of the measured choice
# ("grouped/8": grouped convs, 8 tasks per call); CHUNK_TASKS is the default where none is given
# and the most tasks the search times candidates on.
CHUNK_TASKS = 32
CHUNK_CANDIDATES = (8, 32)


def chunk_sizes(n_tasks: int, most: int | None = None) -> list[int]:
    """``n_tasks`` split into the fewest chunks of at most ``most`` (default ``CHUNK_TASKS``), as
    equal as possible (at most two sizes, hence at most two traced shapes)."""
    count = -(-n_tasks // (CHUNK_TASKS if most is None else most))
    base, extra = divmod(n_tasks, count)
    return [base + 1] * extra + [base] * (count - extra)


def layout_candidates(order: int, grouped_ok: bool) -> list[str]:
    """The "layout/chunk" pairs worth timing, most promising and cheapest to trace first (the
    search budget may stop before the last). Measured here (AVX-512, oneDNN on, busy 2-core VM,
    T = 32): grouped convs in chunks of 8 tasks were the fastest at both orders. Per-task chains
    everywhere are left out for second order: their gradient-of-gradient traced for 17 s at T = 32;
    "auto" already runs them where a pass is differentiated once."""
    small, large = CHUNK_CANDIDATES
    grouped = [f"grouped/{small}", f"grouped/{large}"] if grouped_ok else []
    unrolled = ["per_task", "task_channels"] if order == 1 else ["task_channels", "auto"]
    return [
        *grouped,
        *(f"{name}/{small}" for name in unrolled),
        *(f"{name}/{large}" for name in unrolled),
    ]


class _Functions:
    """The traced functions of one model variant (one layout)."""

    def __init__(self, model: Model, cfg: MamlConfig, reduce_retracing: bool) -> None:
        opts = {"jit_compile": cfg.jit_compile, "reduce_retracing": reduce_retracing}
        self.step = tf.function(lambda p, s, t: meta_step(model, cfg, p, s, t), **opts)
        self.grads = tf.function(lambda p, t: meta_gradients(model, cfg, p, t), **opts)
        self.validate = tf.function(
            lambda p, t, steps: validation_curves(model, cfg, p, t, steps),
            reduce_retracing=reduce_retracing,
        )

    def tracing_count(self) -> int:
        return sum(
            f.experimental_get_tracing_count() for f in (self.step, self.grads, self.validate)
        )


class CompiledMaml:
    """The functions above, compiled once for one (model, config) pair.

    Tracing happens on the first call (the warm-up run); later calls with the same shapes reuse the
    graph. Parameters stay TensorFlow tensors between steps; convert with ``to_numpy`` at the edges.

    A model with layouts (``ConvNet`` outside XLA) runs in chunks of tasks, and on the first call
    per task shape its "layout/chunk" is chosen (``dmaml_core.layouts``: forced by
    ``DMAML_LAYOUT``, cached on disk, or measured); ``layout`` says which ran and why. Its traced
    functions never generalise a shape (no ``reduce_retracing``): an unknown task count would send
    ``ConvNet`` down its slow reference path.
    """

    def __init__(self, model: Model, cfg: MamlConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.has_layouts = isinstance(getattr(model, "layout", None), str) and not cfg.jit_compile
        self._functions: dict[str | None, _Functions] = {}
        self._default = self._fns(None)
        self._apply_grads = tf.function(
            lambda g, s, p: adam_update(g, s, p, cfg.beta),
            jit_compile=cfg.jit_compile,
            reduce_retracing=True,
        )
        self.choices: dict[tuple[tuple[int, ...], ...], LayoutChoice] = {}
        self.layout: LayoutChoice | None = None  # the layout of the latest step / gradients call
        self.chunk_tasks: int | None = None  # most tasks per traced call; None: CHUNK_TASKS

    def _fns(self, layout: str | None) -> _Functions:
        if layout not in self._functions:
            model = self.model
            if layout is not None and layout != getattr(model, "layout", None):
                model = dataclasses.replace(model, layout=layout)  # type: ignore[type-var]
            self._functions[layout] = _Functions(model, self.cfg, not self.has_layouts)
        return self._functions[layout]

    def tracing_count(self) -> int:
        """Traces so far, all layouts (a call that leaves it unchanged reused a traced graph)."""
        return self._apply_grads.experimental_get_tracing_count() + sum(
            f.tracing_count() for f in self._functions.values()
        )

    def init_optimizer(self, params: NumpyWeights | Weights) -> AdamState:
        return adam_init(params)

    def _chunks(self, tasks: Tasks, chunk: int | None) -> tuple[list[Tasks], list[int]]:
        most = chunk if chunk is not None else self.chunk_tasks
        sizes = chunk_sizes(int(tasks.support_x.shape[0]), most)
        if len(sizes) == 1:
            return [tasks], sizes
        parts = [tf.split(a, sizes, axis=0) for a in tasks]
        return [Tasks(*p) for p in zip(*parts, strict=True)], sizes

    def choose(self, params: Weights, tasks: Tasks) -> LayoutChoice:
        """The "layout/chunk" for this task shape: forced (``DMAML_LAYOUT``, or the model's own
        layout), else ``layouts.choose``: cached on disk and re-checked, or measured on the first
        ``CHUNK_TASKS`` tasks of ``tasks`` (every candidate on the same tasks, so times compare;
        one search serves every T >= CHUNK_TASKS). Agreement is checked on ``kink_free`` weights
        of the same shapes, where correct layouts differ by rounding only."""
        probe = Tasks(*(a[:CHUNK_TASKS] for a in tasks))
        key = tuple(tuple(int(d) for d in a.shape) for a in probe)
        if key in self.choices:
            return self.choices[key]
        model_layout = str(getattr(self.model, "layout", "auto"))
        forced = os.environ.get("DMAML_LAYOUT", "").strip()
        order = 1 if self.cfg.order == 1 else 2
        if forced:
            try:
                parse_layout(forced)
            except ValueError as err:
                raise ValueError(f"DMAML_LAYOUT: {err}") from None
            choice = LayoutChoice(forced, "forced", detail="DMAML_LAYOUT")
        elif model_layout != "auto":
            choice = LayoutChoice(model_layout, "forced", detail="the model's layout field")
        else:
            candidates = layout_candidates(order, grouped_conv_gradient_available())
            problem = {
                "model": repr(self.model),
                "cfg": [self.cfg.order, self.cfg.inner_steps, self.cfg.loss, self.cfg.aggregation],
                "shapes": key,
                "candidates": candidates,
            }
            kink_free = getattr(self.model, "kink_free", None)
            smooth = params if kink_free is None else to_tensors(kink_free(to_numpy(params)))

            def prepare(name: str) -> Callable[[], list[np.ndarray]]:
                def run() -> list[np.ndarray]:
                    grads, metrics = self._run(name, params, probe)
                    return [metrics.loss_sum.numpy()] + [g.numpy() for g in grads]

                return run

            def check(name: str) -> list[np.ndarray]:
                grads, metrics = self._run(name, smooth, probe)
                return [metrics.loss_sum.numpy()] + [g.numpy() for g in grads]

            choice = layouts.choose(candidates, prepare, check, layouts.cache_key(problem))
        self.choices[key] = choice
        return choice

    def _run(self, name: str, params: Weights, tasks: Tasks) -> tuple[Weights, StepMetrics]:
        """Meta-gradients of ``tasks`` with layout ``name`` ("layout/chunk"), chunk by chunk."""
        layout, chunk = parse_layout(name)
        fns = self._fns(layout)
        chunks, sizes = self._chunks(tasks, chunk)
        if len(chunks) == 1:
            return fns.grads(list(params), chunks[0])  # type: ignore[no-any-return]
        total = sum(sizes)
        summed: Weights | None = None
        loss_sum, correct = tf.constant(0.0), tf.constant(0.0)
        for part, size in zip(chunks, sizes, strict=True):
            grads, metrics = fns.grads(list(params), part)
            if self.cfg.aggregation == "mean":  # chunk means -> the mean over all tasks
                grads = [g * (size / total) for g in grads]
            summed = (
                grads if summed is None else [a + g for a, g in zip(summed, grads, strict=True)]
            )
            loss_sum += metrics.loss_sum
            correct += metrics.accuracy * size
        assert summed is not None
        return summed, StepMetrics(loss_sum, correct / total)

    def _gradients(self, params: Weights, tasks: Tasks) -> tuple[Weights, StepMetrics]:
        tasks = _as_tensors(tasks)
        self.layout = choice = self.choose(params, tasks)
        return self._run(choice.layout, params, tasks)

    def step(
        self, params: Weights, opt_state: AdamState, tasks: Tasks
    ) -> tuple[Weights, AdamState, StepMetrics]:
        if not self.has_layouts:
            return self._default.step(list(params), opt_state, _as_tensors(tasks))  # type: ignore[no-any-return]
        grads, metrics = self._gradients(params, tasks)
        new_params, new_state = self.apply_gradients(grads, opt_state, params)
        return new_params, new_state, metrics

    def gradients(self, params: Weights, tasks: Tasks) -> tuple[Weights, StepMetrics]:
        if not self.has_layouts:
            return self._default.grads(list(params), _as_tensors(tasks))  # type: ignore[no-any-return]
        return self._gradients(params, tasks)

    def apply_gradients(
        self, grads: Weights, opt_state: AdamState, params: Weights
    ) -> tuple[Weights, AdamState]:
        return self._apply_grads(list(grads), opt_state, list(params))  # type: ignore[no-any-return]

    def validate(self, params: Weights, tasks: Tasks, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Validation curves; a model with layouts runs them in chunks, in the layout forced by
        ``DMAML_LAYOUT``, else the one chosen for the latest step (a first-order pass costs about
        what a step costs, and that layout is traced already), else one chosen on these tasks
        as for a step. Unrolled layouts over hundreds of validation tasks traced for minutes."""
        if not self.has_layouts:
            losses, accuracy = self._default.validate(list(params), _as_tensors(tasks), steps)
            return losses.numpy(), accuracy.numpy()
        forced = os.environ.get("DMAML_LAYOUT", "").strip()
        if forced:
            layout, chunk = parse_layout(forced)
        else:  # before any step (a validation at run 0): choose for these shapes now
            choice = self.layout or self.choose(params, _as_tensors(tasks))
            layout, chunk = parse_layout(choice.layout)
        fns = self._fns(layout)
        chunks, _ = self._chunks(_as_tensors(tasks), chunk)
        parts = [fns.validate(list(params), chunk, steps) for chunk in chunks]
        losses = np.concatenate([p[0].numpy() for p in parts], axis=1)
        accuracy = np.concatenate([p[1].numpy() for p in parts], axis=1)
        return losses, accuracy


def to_tensors(weights: NumpyWeights | Weights) -> Weights:
    return [tf.convert_to_tensor(w, tf.float32) for w in weights]


def to_numpy(weights: Weights) -> NumpyWeights:
    return [np.asarray(w.numpy() if hasattr(w, "numpy") else w) for w in weights]
