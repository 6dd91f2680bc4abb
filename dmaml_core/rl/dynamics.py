"""2-D navigation dynamics as numpy functions over arrays with any leading batch shape.

Every transition is written once, here. The Gymnasium environments (``envs``) call these functions
with a batch of one, and MAML-RL rollouts call them with all (task, trajectory) pairs of a
meta-batch at once: one call per time step instead of one environment call per step, task and
trajectory. Numpy only, so the meta-learning domain does not need Gymnasium.

See ``envs`` for the two environments and the Nav2d reward scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Difficulty = Literal["easy", "hard"]

# --- PointNavigation ----------------------------------------------------------------------------

POINT_MAX_ACTION = 0.1
POINT_GOAL_LOW, POINT_GOAL_HIGH = -0.5, 0.5
POINT_TOLERANCE = 0.01
POINT_HORIZON = 100


def point_step(
    pos: np.ndarray, goal: np.ndarray, action: np.ndarray, max_action: float = POINT_MAX_ACTION
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One PointNavigation transition for a batch ``[..., 2]``: (new position, reward, terminated).

    The reward is taken after the move (Finn et al.), so standing on the goal earns 0."""
    new_pos = pos + np.clip(action, -max_action, max_action)
    distance = np.linalg.norm(new_pos - goal, axis=-1)
    return new_pos, -distance, distance < POINT_TOLERANCE


# --- Nav2d --------------------------------------------------------------------------------------

COURT = 255.0
NAV2D_MAX_STEP = 10.0
NAV2D_GOAL_RADIUS = 10.0
NAV2D_STEP_PENALTY = 1.0
NAV2D_GOAL_BONUS = 368.0  # return = 368 - steps when reached: > 330 <=> fewer than 38 steps
NAV2D_SOLVED_RETURN = 330.0
NAV2D_SOLVED_STEPS = 38  # solved: goal reached in fewer steps than this
NAV2D_HORIZON = 100
NAV2D_EASY_GOAL = (COURT / 2, COURT / 2)  # 'easy' keeps the goal in the centre of the court


def nav2d_observe(pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """[agent x, agent y, goal x, goal y] in [-1, 1] and the distance in [0, 1], float32."""
    distance = np.linalg.norm(pos - goal, axis=-1, keepdims=True) / (COURT * np.sqrt(2.0))
    scaled = np.concatenate([pos, goal], axis=-1) / (COURT / 2) - 1.0
    return np.concatenate([scaled, distance], axis=-1).astype(np.float32)


def nav2d_step(
    pos: np.ndarray, goal: np.ndarray, action: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Nav2d transition for a batch ``[..., 2]``: (new position, reward, terminated).

    Action (angle, length) in [-1, 1]^2 -> angle (a0 + 1) * 180 degrees, length (a1 + 1) * 5
    units; the agent stops at the walls of the court."""
    action = np.clip(action, -1.0, 1.0)
    angle = np.deg2rad((action[..., 0] + 1.0) * 180.0)
    length = (action[..., 1] + 1.0) * (NAV2D_MAX_STEP / 2)
    move = np.stack([np.cos(angle), np.sin(angle)], axis=-1) * length[..., None]
    new_pos = np.clip(pos + move, 0.0, COURT)
    reached = np.linalg.norm(new_pos - goal, axis=-1) <= NAV2D_GOAL_RADIUS
    reward = np.where(reached, NAV2D_GOAL_BONUS, 0.0) - NAV2D_STEP_PENALTY
    return new_pos, reward, reached


def nav2d_sample(
    rng: np.random.Generator, n: int, difficulty: Difficulty
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (start, goal) pairs, [n, 2] each; a start never lies already within the goal radius."""
    if difficulty == "hard":
        goal = rng.uniform(0.0, COURT, size=(n, 2))
    else:
        goal = np.tile(np.asarray(NAV2D_EASY_GOAL), (n, 1))
    start = rng.uniform(0.0, COURT, size=(n, 2))
    bad = np.linalg.norm(start - goal, axis=-1) <= NAV2D_GOAL_RADIUS
    while bad.any():  # rejection: rare (the goal disc is ~0.5% of the court)
        start[bad] = rng.uniform(0.0, COURT, size=(int(bad.sum()), 2))
        bad = np.linalg.norm(start - goal, axis=-1) <= NAV2D_GOAL_RADIUS
    return start, goal


# --- batched dynamics for rollouts --------------------------------------------------------------


@dataclass(frozen=True)
class NavDynamics:
    """What a rollout needs from an environment, for arrays of any batch shape ``[...]``.

    ``action_scale`` maps the policy's unit-scale actions to the environment's units (a policy
    with std ~1 then explores the whole action range of either environment)."""

    env: Literal["point", "nav2d"] = "point"
    difficulty: Difficulty = "hard"  # Nav2d only
    horizon: int = POINT_HORIZON

    @property
    def obs_dim(self) -> int:
        return 2 if self.env == "point" else 5

    @property
    def act_dim(self) -> int:
        return 2

    @property
    def action_scale(self) -> float:
        return POINT_MAX_ACTION if self.env == "point" else 1.0

    def sample_tasks(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(start, goal) per task, [n, 2] each."""
        if self.env == "point":
            goal = rng.uniform(POINT_GOAL_LOW, POINT_GOAL_HIGH, size=(n, 2))
            return np.zeros((n, 2)), goal
        return nav2d_sample(rng, n, self.difficulty)

    def observe(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        if self.env == "point":
            return pos.astype(np.float32)
        return nav2d_observe(pos, goal)

    def step(
        self, pos: np.ndarray, goal: np.ndarray, action: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``action`` in policy units; returns (new position, reward, terminated)."""
        scaled = np.asarray(action, np.float64) * self.action_scale
        if self.env == "point":
            return point_step(pos, goal, scaled)
        return nav2d_step(pos, goal, scaled)
