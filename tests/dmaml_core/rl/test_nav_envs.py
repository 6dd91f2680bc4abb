"""Navigation environments: hand-made transitions, Gymnasium's checker, seeded replay, and the
batched dynamics (and full rollouts) against the Env stepped one transition at a time."""

from __future__ import annotations

from typing import Any, Literal

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from dmaml_core.rl.dynamics import (
    NAV2D_SOLVED_RETURN,
    NavDynamics,
    nav2d_observe,
    nav2d_step,
    point_step,
)
from dmaml_core.rl.envs import Nav2d, PointNavigation
from dmaml_core.rl.maml_rl import rollout, tile_np
from dmaml_core.rl.policy import GaussianMLPPolicy


def test_point_step_clips_the_action_and_rewards_minus_the_distance_after_the_move() -> None:
    pos, reward, done = point_step(np.zeros(2), np.array([0.3, 0.4]), np.array([0.5, -0.05]))
    np.testing.assert_allclose(pos, [0.1, -0.05])
    np.testing.assert_allclose(reward, -np.hypot(0.2, 0.45))
    assert not done
    _, reward, done = point_step(np.array([0.295, 0.4]), np.array([0.3, 0.4]), np.zeros(2))
    assert done and reward == pytest.approx(-0.005)


def test_point_navigation_episode_starts_at_origin_and_truncates_at_100_steps() -> None:
    env = PointNavigation()
    obs, info = env.reset(seed=0, options={"goal": (0.5, 0.5)})
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    np.testing.assert_array_equal(info["goal"], [0.5, 0.5])
    for t in range(1, 101):
        obs, reward, terminated, truncated, _ = env.step(np.array([-1.0, 0.0], np.float32))
        assert not terminated and truncated == (t == 100)
    np.testing.assert_allclose(obs, [-10.0, 0.0], atol=1e-5)
    assert reward == pytest.approx(-np.hypot(10.5, 0.5))


def test_nav2d_action_mapping_walls_and_goal_bonus() -> None:
    goal = np.array([200.0, 200.0])
    # a0 = -1 -> 0 degrees, a1 = 1 -> 10 units; a0 = -0.5 -> 90 degrees, a1 = 0 -> 5 units
    pos, reward, done = nav2d_step(np.array([100.0, 100.0]), goal, np.array([-1.0, 1.0]))
    np.testing.assert_allclose(pos, [110.0, 100.0])
    assert reward == -1.0 and not done
    pos, _, _ = nav2d_step(np.array([100.0, 100.0]), goal, np.array([-0.5, 0.0]))
    np.testing.assert_allclose(pos, [100.0, 105.0], atol=1e-12)
    pos, _, _ = nav2d_step(np.array([250.0, 100.0]), goal, np.array([-1.0, 1.0]))
    np.testing.assert_allclose(pos, [255.0, 100.0])  # stopped by the wall
    _, reward, done = nav2d_step(
        np.array([100.0, 100.0]), np.array([115.0, 100.0]), np.array([-1.0, 1.0])
    )
    assert done and reward == 367.0  # +368 bonus, -1 step
    obs = nav2d_observe(np.array([0.0, 255.0]), np.array([255.0, 0.0]))
    np.testing.assert_allclose(obs, [-1.0, 1.0, 1.0, -1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize(("steps", "solved"), [(37, True), (38, False)])
def test_nav2d_return_above_330_iff_goal_reached_in_fewer_than_38_steps(
    steps: int, solved: bool
) -> None:
    env = Nav2d()
    # 2.5 units a step along x; the goal disc (radius 10) is entered exactly at step ``steps``
    goal = (100.0 + 2.5 * steps + 9.9, 100.0)
    env.reset(seed=0, options={"start": (100.0, 100.0), "goal": goal})
    total, terminated, info = 0.0, False, dict[str, Any]()
    while not terminated:
        _, reward, terminated, truncated, info = env.step(np.array([-1.0, -0.5], np.float32))
        total += reward
        assert not truncated
    assert env.t == steps
    assert (total > NAV2D_SOLVED_RETURN) == solved == info["solved"]


@pytest.mark.parametrize("env_id", ["dmaml/PointNavigation-v0", "dmaml/Nav2d-v0"])
@pytest.mark.parametrize("render_mode", ["ansi", "rgb_array"])
def test_registered_envs_pass_gymnasium_check_env_and_render(env_id: str, render_mode: str) -> None:
    env = gymnasium.make(env_id, render_mode=render_mode)
    check_env(env.unwrapped)
    env.reset(seed=1)
    frame = env.render()
    if render_mode == "ansi":
        assert isinstance(frame, str) and "A" in frame and "G" in frame
    else:
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape[2] == 3
    env.close()


@pytest.mark.parametrize("make", [PointNavigation, lambda: Nav2d("hard"), lambda: Nav2d("easy")])
def test_seeded_reset_replays_the_task_and_trajectory(make) -> None:  # type: ignore[no-untyped-def]
    def episode(seed: int) -> np.ndarray:
        env = make()
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        rows = [obs]
        for _ in range(30):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            rows.append(np.append(obs, reward))
            if terminated or truncated:
                break
        return np.concatenate(rows)

    np.testing.assert_array_equal(episode(7), episode(7))
    assert not np.array_equal(episode(7), episode(8))


@pytest.mark.parametrize("env", ["point", "nav2d"])
def test_batched_dynamics_equal_env_step_by_step(env: Literal["point", "nav2d"]) -> None:
    dyn = NavDynamics(env, "hard", horizon=40)
    rng = np.random.default_rng(0)
    starts, goals = dyn.sample_tasks(rng, 3)
    if env == "nav2d":
        starts[0] = goals[0] + [12.0, 0.0]  # close to the goal: some trajectories terminate
    else:
        goals[0] = [0.05, 0.0]
    k = 4
    policy = GaussianMLPPolicy(dyn.obs_dim, dyn.act_dim, hidden=(8,), init_log_std=0.0)
    weights = tile_np(policy.init(0), 3)
    traj = rollout(dyn, policy, weights, starts, goals, k, np.random.default_rng(1))
    scale = dyn.action_scale
    terminated_any = False
    for t in range(3):
        for j in range(k):
            one = PointNavigation() if env == "point" else Nav2d()
            obs, _ = one.reset(options={"start": starts[t], "goal": goals[t]})
            for h in range(dyn.horizon):
                assert traj.mask[t, j, h] == 1.0
                np.testing.assert_allclose(traj.obs[t, j, h], obs, rtol=1e-6, atol=1e-6)
                action = traj.actions[t, j, h].astype(np.float64) * scale
                obs, reward, terminated, _, _ = one.step(action)
                assert traj.rewards[t, j, h] == pytest.approx(reward, rel=1e-9, abs=1e-12)
                if terminated:
                    terminated_any = True
                    assert not traj.mask[t, j, h + 1 :].any()
                    assert not traj.rewards[t, j, h + 1 :].any()
                    break
    assert terminated_any or env == "point"
