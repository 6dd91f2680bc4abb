"""MAML for reinforcement learning (Finn et al. 2017, sec. 3.3) over task-batched policy weights.

One meta step on T tasks:

1. support: K trajectories per task with the meta-policy (numpy rollouts, all T x K at once);
2. inner loop: one REINFORCE step per task, ``theta'_i = theta + alpha * g_i`` (gradient *ascent*
   on the return), with a per-task linear feature baseline and discounted returns;
3. query: K new trajectories per task with the adapted policy ``theta'_i`` in the same task;
4. outer loop: policy-gradient surrogate of the query trajectories under ``theta'_i(theta)``,
   summed or averaged over tasks, Adam with rate beta.

``order=1`` treats ``g_i`` as a constant (the outer gradient w.r.t. ``theta'_i`` is used for
``theta``). ``order=2`` differentiates through ``g_i``. For that the inner objective is written as
a DiCE objective (Foerster et al. 2018) with the baseline of Mao et al. (2019): its gradient is the
usual REINFORCE-with-baseline estimate, and - unlike the plain surrogate ``sum log pi * A``, whose
Hessian misses the score outer product - its Hessian is an unbiased estimate of the Hessian of the
discounted return. What order 2 leaves out, like Finn et al. and ProMP's formulation II, is the
dependence of the *support sampling distribution* on theta (the E-MAML term).

Both the inner and the outer estimates weight step t by ``gamma^t (G_t - b_t)`` (the gradient of
the discounted return; ``G_t`` the discounted return-to-go, ``b_t`` the baseline), normalised per
task to zero mean and unit variance; the normalisation is a positive rescaling of rewards plus a
change of baseline, so it keeps the estimator (and the DiCE form) valid while making alpha
independent of the reward scale. Sums over steps are divided by the number of live steps.

Rollouts run in numpy (policy mean and dynamics for all T x K trajectories per time step); the
likelihoods and all derivatives run in compiled TensorFlow functions, one call per inner step and
one per outer step.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from dmaml_core.maml import MamlConfig, StepMetrics
from dmaml_core.models import NumpyWeights, Weights
from dmaml_core.optim import AdamState, adam_init, adam_update
from dmaml_core.rl.dynamics import NavDynamics
from dmaml_core.rl.policy import GaussianMLPPolicy
from dmaml_core.types import NavTasks

BASELINE_REG = 1e-5


class Trajectories(NamedTuple):
    """K trajectories per task, padded to the horizon H; ``mask`` is 1 up to and including the
    terminating step."""

    obs: np.ndarray  # [T, K, H, obs_dim] float32
    actions: np.ndarray  # [T, K, H, act_dim] float32, unit scale, unclipped
    rewards: np.ndarray  # [T, K, H] float64, 0 after termination
    mask: np.ndarray  # [T, K, H] float32

    def returns(self) -> np.ndarray:
        """Mean undiscounted return per task, [T]."""
        return np.asarray(self.rewards.sum(axis=2).mean(axis=1))


class PGBatch(NamedTuple):
    """What the TensorFlow side needs of a batch of trajectories (all float32 [T, K, H] but obs and
    actions). ``advantage`` drives the REINFORCE surrogate; ``reward_term`` and ``baseline_term``
    are the same estimate split for the DiCE objective (sum_{t'>=t} reward_term - baseline_term
    == advantage)."""

    obs: np.ndarray | tf.Tensor
    actions: np.ndarray | tf.Tensor
    mask: np.ndarray | tf.Tensor
    advantage: np.ndarray | tf.Tensor
    reward_term: np.ndarray | tf.Tensor
    baseline_term: np.ndarray | tf.Tensor


# ---- rollouts (numpy) --------------------------------------------------------------------------


def tile_np(params: NumpyWeights, n_tasks: int) -> NumpyWeights:
    return [np.repeat(np.asarray(p)[None], n_tasks, axis=0) for p in params]


def rollout(
    dynamics: NavDynamics,
    policy: GaussianMLPPolicy,
    weights: NumpyWeights,
    starts: np.ndarray,
    goals: np.ndarray,
    k: int,
    rng: np.random.Generator,
) -> Trajectories:
    """K trajectories in each of T tasks, task t acting with weight copy ``weights[.][t]``.

    One policy evaluation and one dynamics call per time step for all T x K trajectories."""
    n_tasks, horizon = goals.shape[0], dynamics.horizon
    pos = np.repeat(np.asarray(starts, np.float64)[:, None], k, axis=1)
    goal = np.repeat(np.asarray(goals, np.float64)[:, None], k, axis=1)
    alive = np.ones((n_tasks, k), bool)
    obs = np.zeros((n_tasks, k, horizon, dynamics.obs_dim), np.float32)
    actions = np.zeros((n_tasks, k, horizon, dynamics.act_dim), np.float32)
    rewards = np.zeros((n_tasks, k, horizon))
    mask = np.zeros((n_tasks, k, horizon), np.float32)
    for t in range(horizon):
        o = dynamics.observe(pos, goal)
        a = policy.sample_np(weights, o, rng)
        new_pos, reward, terminated = dynamics.step(pos, goal, a)
        obs[:, :, t], actions[:, :, t], mask[:, :, t] = o, a, alive
        rewards[:, :, t] = np.where(alive, reward, 0.0)
        pos = np.where(alive[..., None], new_pos, pos)
        alive = alive & ~terminated
        if not alive.any():
            break
    return Trajectories(obs, actions, rewards, mask)


# ---- advantages (numpy) ------------------------------------------------------------------------


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Return-to-go ``G_t = sum_{t'>=t} gamma^(t'-t) r_t'`` along the last axis."""
    horizon = rewards.shape[-1]
    lag = np.arange(horizon)[:, None] - np.arange(horizon)[None, :]  # [t', t] = t' - t
    kernel = np.where(lag >= 0, gamma ** np.maximum(lag, 0), 0.0)
    return np.asarray(rewards @ kernel)


def baseline_features(obs: np.ndarray, horizon: int) -> np.ndarray:
    """Duan et al. (2016) linear-baseline features: obs, obs^2, t, t^2, t^3 (t scaled by 1/H)
    and a constant; [T, K, H, 2 * obs_dim + 4]."""
    o = np.clip(obs.astype(np.float64), -10.0, 10.0)
    steps = np.arange(obs.shape[2])[None, None, :, None] / horizon
    time = np.broadcast_to(steps, (*o.shape[:3], 1))
    return np.concatenate([o, o**2, time, time**2, time**3, np.ones_like(time)], axis=-1)


def fit_baseline(features: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-task ridge least squares of ``targets`` on ``features`` over the live steps; returns
    the fitted values [T, K, H]. Batched over tasks with one ``np.linalg.solve``."""
    n_tasks, n_feat = features.shape[0], features.shape[-1]
    x = features.reshape(n_tasks, -1, n_feat) * mask.reshape(n_tasks, -1, 1)
    y = (targets * mask).reshape(n_tasks, -1, 1)
    gram = np.transpose(x, (0, 2, 1)) @ x
    scale = np.trace(gram, axis1=1, axis2=2)[:, None, None] / n_feat + 1e-8
    rhs = np.transpose(x, (0, 2, 1)) @ y
    coef = np.linalg.solve(gram + BASELINE_REG * scale * np.eye(n_feat), rhs)
    return np.asarray((features @ coef[:, None]).squeeze(-1))


def pg_batch(traj: Trajectories, gamma: float, normalize: bool = True) -> PGBatch:
    """Advantages ``gamma^t (G_t - b_t)`` (per-task baseline fitted to G_t on this batch),
    optionally normalised per task, and their DiCE split (see the module docstring)."""
    horizon = traj.rewards.shape[-1]
    mask = traj.mask.astype(np.float64)
    returns = discounted_returns(traj.rewards, gamma)
    baseline = fit_baseline(baseline_features(traj.obs, horizon), returns, mask) * mask
    discount = gamma ** np.arange(horizon)
    raw = discount * (returns - baseline) * mask
    if normalize:
        count = mask.sum(axis=(1, 2), keepdims=True)
        mean = raw.sum(axis=(1, 2), keepdims=True) / count
        std = np.sqrt((((raw - mean) * mask) ** 2).sum(axis=(1, 2), keepdims=True) / count) + 1e-8
    else:
        mean, std = np.zeros((1, 1, 1)), np.ones((1, 1, 1))
    advantage = (raw - mean) / std * mask
    reward_term = discount * traj.rewards / std * mask
    baseline_term = (discount * baseline + mean) / std * mask
    f32 = np.float32
    return PGBatch(
        traj.obs,
        traj.actions,
        traj.mask,
        advantage.astype(f32),
        reward_term.astype(f32),
        baseline_term.astype(f32),
    )


# ---- objectives (TensorFlow) -------------------------------------------------------------------


def _log_probs(policy: GaussianMLPPolicy, weights: Weights, batch: PGBatch) -> tf.Tensor:
    """log pi(a_t | s_t) per step, [T, K, H], zero on padded steps."""
    shape = tf.shape(batch.mask)
    obs = tf.reshape(batch.obs, tf.stack([shape[0], -1, policy.obs_dim]))
    actions = tf.reshape(batch.actions, tf.stack([shape[0], -1, policy.act_dim]))
    return tf.reshape(policy.log_prob(weights, obs, actions), shape) * batch.mask


def _live_steps(batch: PGBatch) -> tf.Tensor:
    return tf.maximum(tf.reduce_sum(batch.mask, axis=[1, 2]), 1.0)


def surrogate(policy: GaussianMLPPolicy, weights: Weights, batch: PGBatch) -> tf.Tensor:
    """REINFORCE surrogate per task [T]: mean over live steps of ``log pi * advantage``; its
    gradient is the policy-gradient estimate (its Hessian is *not* the return's Hessian)."""
    logp = _log_probs(policy, weights, batch)
    return tf.reduce_sum(logp * batch.advantage, axis=[1, 2]) / _live_steps(batch)


def _magic_box(x: tf.Tensor) -> tf.Tensor:
    """DiCE's operator: value 1, derivative ``x' * box(x)`` to every order."""
    return tf.exp(x - tf.stop_gradient(x))


def dice_objective(policy: GaussianMLPPolicy, weights: Weights, batch: PGBatch) -> tf.Tensor:
    """DiCE objective with baseline per task [T]. Same value scale and same gradient as
    ``surrogate``; its Hessian is an unbiased estimate of the discounted return's Hessian."""
    logp = _log_probs(policy, weights, batch)
    causal = _magic_box(tf.cumsum(logp, axis=-1))  # dependence of r_t on actions up to t
    total = causal * batch.reward_term + (1.0 - _magic_box(logp)) * batch.baseline_term
    return tf.reduce_sum(total * batch.mask, axis=[1, 2]) / _live_steps(batch)


def tile(params: Weights, n_tasks: int) -> Weights:
    return [tf.repeat(p[None], n_tasks, axis=0) for p in params]


def inner_step(
    policy: GaussianMLPPolicy, alpha: float, weights: Weights, batch: PGBatch, first_order: bool
) -> Weights:
    """One policy-gradient ascent step per task on its own trajectories (tasks are independent,
    so the gradient of the summed objective w.r.t. the stacked weights is per task)."""
    with tf.GradientTape() as tape:
        tape.watch(weights)
        objective = tf.reduce_sum(dice_objective(policy, weights, batch))
    grads = tape.gradient(objective, weights)
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
    return [w + alpha * g for w, g in zip(weights, grads, strict=True)]


def outer_gradients(
    policy: GaussianMLPPolicy,
    cfg: MamlConfig,
    params: Weights,
    adapted: Weights,
    supports: tuple[PGBatch, ...],
    query: PGBatch,
) -> Weights:
    """Gradient of the aggregated outer loss ``-surrogate(query)`` w.r.t. ``params``.

    First order (or no support batch: joint pre-training): the gradient at the given ``adapted``
    weights, summed over the task axis (d theta'_i / d theta = I). Second order: the adaptation is
    recomputed from ``params`` under the tape, through the DiCE inner objective."""
    aggregate = tf.reduce_sum if cfg.aggregation == "sum" else tf.reduce_mean
    n_tasks = tf.shape(query.mask)[0]
    if cfg.order == 1 or not supports:
        with tf.GradientTape() as tape:
            tape.watch(adapted)
            loss = aggregate(-surrogate(policy, adapted, query))
        return [tf.reduce_sum(g, axis=0) for g in tape.gradient(loss, adapted)]
    with tf.GradientTape() as tape:
        tape.watch(params)
        weights = tile(params, n_tasks)
        for batch in supports:
            weights = inner_step(policy, cfg.alpha, weights, batch, first_order=False)
        loss = aggregate(-surrogate(policy, weights, query))
    return list(tape.gradient(loss, params))


def _tensors(batch: PGBatch) -> PGBatch:
    return PGBatch(*(tf.convert_to_tensor(a) for a in batch))


# ---- the compiled learner ----------------------------------------------------------------------


class MamlRL:
    """MAML-RL with ``CompiledMaml``'s interface, so workers, backends and weight generators run
    it unchanged. ``StepMetrics.loss_sum`` is the negative query return summed over tasks (what the
    loss-based weight generators rank), ``accuracy`` the mean query return."""

    def __init__(
        self,
        dynamics: NavDynamics,
        policy: GaussianMLPPolicy,
        cfg: MamlConfig,
        k_support: int = 20,
        k_query: int = 20,
        gamma: float = 0.99,
        normalize_advantages: bool = True,
    ) -> None:
        self.dynamics = dynamics
        self.policy = policy
        self.cfg = cfg
        self.k_support = k_support
        self.k_query = k_query
        self.gamma = gamma
        self.normalize = normalize_advantages
        opts = {"jit_compile": cfg.jit_compile, "reduce_retracing": True}
        self._inner = tf.function(
            lambda w, b: inner_step(policy, cfg.alpha, w, b, first_order=True), **opts
        )
        self._outer = tf.function(
            lambda p, a, s, q: outer_gradients(policy, cfg, p, a, s, q), **opts
        )
        self._adam = tf.function(lambda g, s, p: adam_update(g, s, p, cfg.beta), **opts)

    def init_optimizer(self, params: NumpyWeights | Weights) -> AdamState:
        return adam_init(params)

    def _batch(self, traj: Trajectories) -> PGBatch:
        return _tensors(pg_batch(traj, self.gamma, self.normalize))

    def _adapt_rollouts(
        self, params: Weights, tasks: NavTasks, rng: np.random.Generator, steps: int, k: int
    ) -> tuple[list[Trajectories], list[PGBatch], Weights]:
        """Alternate rollouts and inner steps ``steps`` times, then roll out once more: returns the
        ``steps + 1`` batches of trajectories (the last from the final weights), the support
        batches and the final per-task weights."""
        weights = tile([tf.convert_to_tensor(p) for p in params], tasks.n_tasks)
        trajs, supports = [], []
        for s in range(steps + 1):
            traj = rollout(
                self.dynamics,
                self.policy,
                [w.numpy() for w in weights],
                tasks.starts,
                tasks.goals,
                k if s == steps else self.k_support,
                rng,
            )
            trajs.append(traj)
            if s < steps:
                batch = self._batch(traj)
                supports.append(batch)
                weights = self._inner(weights, batch)
        return trajs, supports, weights

    def gradients(self, params: Weights, tasks: NavTasks) -> tuple[Weights, StepMetrics]:
        """Meta-gradient of one meta-batch (no update) and its metrics."""
        rng = np.random.default_rng(tasks.seed)
        trajs, supports, adapted = self._adapt_rollouts(
            params, tasks, rng, self.cfg.inner_steps, self.k_query
        )
        query = self._batch(trajs[-1])
        grads = self._outer(list(params), adapted, tuple(supports), query)
        returns = trajs[-1].returns()
        metrics = StepMetrics(
            tf.constant(-returns.sum(), tf.float32), tf.constant(returns.mean(), tf.float32)
        )
        return grads, metrics

    def step(
        self, params: Weights, opt_state: AdamState, tasks: NavTasks
    ) -> tuple[Weights, AdamState, StepMetrics]:
        grads, metrics = self.gradients(params, tasks)
        new_params, new_state = self._adam(grads, opt_state, list(params))
        return new_params, new_state, metrics

    def apply_gradients(
        self, grads: Weights, opt_state: AdamState, params: Weights
    ) -> tuple[Weights, AdamState]:
        return self._adam(list(grads), opt_state, list(params))  # type: ignore[no-any-return]

    def joint_step(
        self, params: Weights, opt_state: AdamState, tasks: NavTasks
    ) -> tuple[Weights, AdamState, StepMetrics]:
        """Baseline: one policy-gradient step of the *un-adapted* policy on all tasks jointly
        (the 'pretrained' policy of Finn et al.), same estimator, rollouts and Adam."""
        rng = np.random.default_rng(tasks.seed)
        trajs, _, weights = self._adapt_rollouts(params, tasks, rng, 0, self.k_query)
        grads = self._outer(list(params), weights, (), self._batch(trajs[0]))
        new_params, new_state = self._adam(grads, opt_state, list(params))
        returns = trajs[0].returns()
        metrics = StepMetrics(
            tf.constant(-returns.sum(), tf.float32), tf.constant(returns.mean(), tf.float32)
        )
        return new_params, new_state, metrics

    def validate(
        self, params: Weights, tasks: NavTasks, steps: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Matrices [steps + 1, V]: row s holds, per task, minus the mean return (loss) and the mean
        return ("accuracy") of the policy after s inner steps; each row's trajectories are also
        the support of the next inner step."""
        rng = np.random.default_rng(tasks.seed)
        trajs, _, _ = self._adapt_rollouts(params, tasks, rng, steps, self.k_support)
        returns = np.stack([t.returns() for t in trajs])
        return -returns, returns
