"""MAML-RL: returns, baseline, policy-gradient estimates against hand-computed ones, the DiCE
Hessian, the outer gradient, and DMAML runs with the navigation domain."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import tensorflow as tf

from dmaml_core.backends.serial import SerialBackend
from dmaml_core.dmaml import CentralLearner
from dmaml_core.maml import MamlConfig, to_tensors
from dmaml_core.rl.maml_rl import (
    PGBatch,
    Trajectories,
    dice_objective,
    discounted_returns,
    fit_baseline,
    pg_batch,
    surrogate,
)
from dmaml_core.rl.policy import GaussianMLPPolicy
from dmaml_core.tasks import make_domain
from dmaml_core.weight_generators import make_weight_generator
from dmaml_core.worker import WorkerConfig

SMALL = {"horizon": 15, "k_support": 3, "k_query": 3, "hidden": (16, 16)}


def test_discounted_returns_by_hand() -> None:
    got = discounted_returns(np.array([[1.0, 2.0, 3.0]]), 0.5)
    np.testing.assert_allclose(got, [[1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0]])


def test_baseline_fits_targets_that_are_linear_in_its_features() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 3, 5, 4))
    targets = features @ np.array([1.0, -2.0, 0.5, 3.0])
    fitted = fit_baseline(features, targets, np.ones((2, 3, 5)))
    np.testing.assert_allclose(fitted, targets, atol=1e-3)


def test_advantage_is_normalised_and_its_dice_split_sums_back() -> None:
    rng = np.random.default_rng(1)
    mask = np.ones((2, 3, 6), np.float32)
    mask[0, 1, 4:] = 0.0
    traj = Trajectories(
        rng.normal(size=(2, 3, 6, 2)).astype(np.float32),
        rng.normal(size=(2, 3, 6, 2)).astype(np.float32),
        rng.normal(size=(2, 3, 6)) * mask,
        mask,
    )
    batch = pg_batch(traj, gamma=0.9)
    live = mask.astype(bool)
    for t in range(2):
        assert batch.advantage[t][live[t]].mean() == pytest.approx(0.0, abs=1e-5)
        assert batch.advantage[t][live[t]].std() == pytest.approx(1.0, abs=1e-4)
    to_go = np.flip(np.cumsum(np.flip(batch.reward_term, -1), -1), -1)
    np.testing.assert_allclose((to_go - batch.baseline_term) * mask, batch.advantage, atol=1e-5)


def _bandit(policy: GaussianMLPPolicy, theta: list[np.ndarray], n: int, seed: int):  # type: ignore[no-untyped-def]
    """One-step bandit, linear-Gaussian policy a ~ N(w * s + b, exp(log_std)^2), reward
    -(a - 0.2)^2: samples, rewards and the weights as a single task."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, size=(1, n, 1, 1)).astype(np.float32)
    w, b, log_std = (float(np.ravel(x)[0]) for x in theta)
    std = np.exp(log_std)
    actions = (w * obs + b + std * rng.standard_normal(obs.shape)).astype(np.float32)
    rewards = -((actions[..., 0] - 0.2) ** 2)
    return obs, actions, rewards, to_tensors([x[None] for x in theta]), (w, b, log_std, std)


def test_policy_gradient_matches_the_hand_computed_reinforce_estimate() -> None:
    policy = GaussianMLPPolicy(obs_dim=1, act_dim=1, hidden=())
    theta = [
        np.array([[0.7]], np.float32),
        np.array([-0.3], np.float32),
        np.array([-0.5], np.float32),
    ]
    obs, actions, rewards, weights, (w, b, _, std) = _bandit(policy, theta, 16, 0)
    advantage = (rewards - rewards.mean()).astype(np.float32)
    batch = PGBatch(
        obs, actions, np.ones_like(rewards), advantage, advantage, np.zeros_like(advantage)
    )
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(weights)
        plain = tf.reduce_sum(surrogate(policy, weights, batch))
        dice = tf.reduce_sum(dice_objective(policy, weights, batch))
    # d log N(a; m, s) / dm = (a - m) / s^2 and / d log s = (a - m)^2 / s^2 - 1, with m = w s + b
    s, a, adv = obs.ravel(), actions.ravel(), advantage.ravel()
    z = (a - (w * s + b)) / std
    want = [
        np.mean(z / std * s * adv),
        np.mean(z / std * adv),
        np.mean((z**2 - 1.0) * adv),
    ]
    for objective in (plain, dice):
        got = [float(np.ravel(g)[0]) for g in tape.gradient(objective, weights)]
        np.testing.assert_allclose(got, want, rtol=1e-4)


def test_dice_hessian_is_unbiased_where_the_plain_surrogate_is_not() -> None:
    """J(b) = E[-(a - 0.2)^2] = -((b - 0.2)^2 + std^2) with a ~ N(b, std^2): d2J/db2 = -2."""
    policy = GaussianMLPPolicy(obs_dim=1, act_dim=1, hidden=())
    theta = [np.zeros((1, 1), np.float32), np.array([0.5], np.float32), np.zeros(1, np.float32)]
    obs, actions, rewards, weights, _ = _bandit(policy, theta, 200_000, 1)
    rewards = rewards.astype(np.float32)
    batch = PGBatch(
        np.zeros_like(obs), actions, np.ones_like(rewards), rewards, rewards, np.zeros_like(rewards)
    )
    hessians = []
    for objective in (dice_objective, surrogate):
        with tf.GradientTape() as outer:
            outer.watch(weights)
            with tf.GradientTape() as inner:
                inner.watch(weights)
                value = tf.reduce_sum(objective(policy, weights, batch))
            grad_b = inner.gradient(value, weights)[1]
        hessians.append(float(np.ravel(outer.gradient(grad_b, weights)[1])[0]))
    assert hessians[0] == pytest.approx(-2.0, abs=0.1)
    assert hessians[1] == pytest.approx((0.5 - 0.2) ** 2 + 1.0, abs=0.1)  # -E[r] / std^2


def test_numpy_and_tensorflow_policy_means_agree() -> None:
    policy = GaussianMLPPolicy(obs_dim=5, act_dim=2, hidden=(7, 6), activation="relu")
    weights = [np.stack([w, w * 0.5]) for w in policy.init(3)]
    obs = np.random.default_rng(0).normal(size=(2, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(
        policy.mean_np(weights, obs), policy.apply(to_tensors(weights), obs).numpy(), rtol=1e-5
    )


@pytest.mark.parametrize(("env", "order"), [("point", 1), ("point", 2), ("nav2d", 1)])
def test_outer_gradient_is_finite_and_non_zero(env: str, order: Literal[1, 2]) -> None:
    domain = make_domain("navigation", env=env, **SMALL)
    learner = domain.compile(MamlConfig(alpha=0.1, order=order))  # type: ignore[attr-defined]
    params = to_tensors(domain.model().init(0))
    tasks = domain.sample(np.random.default_rng(0), 2)
    grads, metrics = learner.gradients(params, tasks)
    assert len(grads) == len(params)
    for g, p in zip(grads, params, strict=True):
        assert g.shape == p.shape and np.isfinite(g.numpy()).all()
    assert any(np.abs(g.numpy()).max() > 0 for g in grads)
    if env == "point":
        assert float(metrics.loss_sum) > 0  # point navigation returns are negative
    assert float(metrics.accuracy) == pytest.approx(-float(metrics.loss_sum) / 2, rel=1e-5)


def test_second_order_adds_a_term_through_the_adaptation() -> None:
    domain = make_domain("navigation", **SMALL)
    params = to_tensors(domain.model().init(0))
    tasks = domain.sample(np.random.default_rng(0), 2)
    g1, _ = domain.compile(MamlConfig(alpha=0.1, order=1)).gradients(params, tasks)  # type: ignore[attr-defined]
    g2, _ = domain.compile(MamlConfig(alpha=0.1, order=2)).gradients(params, tasks)  # type: ignore[attr-defined]
    diffs = [np.abs(a.numpy() - b.numpy()).max() for a, b in zip(g1, g2, strict=True)]
    assert max(diffs) > 1e-6
    # same rollouts (seeded by the batch), so both orders agree to first order in alpha
    assert np.abs(g1[-1].numpy() - g2[-1].numpy()).max() < np.abs(g1[-1].numpy()).max()


def test_validate_returns_loss_and_return_matrices() -> None:
    domain = make_domain("navigation", **SMALL)
    learner = domain.compile(MamlConfig(alpha=0.1))  # type: ignore[attr-defined]
    tasks = domain.sample(np.random.default_rng(0), 3, "test")
    losses, returns = learner.validate(to_tensors(domain.model().init(0)), tasks, 2)
    assert losses.shape == returns.shape == (3, 3)
    np.testing.assert_array_equal(losses, -returns)


def test_dmaml_with_navigation_through_central_learner_and_serial_backend() -> None:
    domain = make_domain("navigation", **SMALL)
    cfg = WorkerConfig(domain, MamlConfig(alpha=0.1, beta=0.01), epochs=1, tasks_per_step=2, seed=0)

    def learner() -> CentralLearner:
        theta = domain.model().init(0)
        backend = SerialBackend(cfg, 2)
        return CentralLearner(theta, backend, make_weight_generator("loss_median"))

    a, b = learner(), learner()
    start = [w.copy() for w in a.theta]
    for _ in range(2):
        ra, rb = a.run(), b.run()
    assert ra.loss_sums.shape == (2, 1) and np.isfinite(ra.loss_sums).all()
    assert (ra.loss_sums > 0).all() and not ra.diverged
    np.testing.assert_array_equal(ra.loss_sums, rb.loss_sums)  # reproducible from the seed
    assert any(not np.array_equal(x, y) for x, y in zip(start, a.theta, strict=True))
