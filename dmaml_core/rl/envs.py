"""2-D navigation environments for meta-RL on Gymnasium (registered on import as
``dmaml/PointNavigation-v0`` and ``dmaml/Nav2d-v0``).

The transitions live in ``dynamics`` as numpy functions over batches; these classes call them with
a batch of one, MAML-RL rollouts with every (task, trajectory) pair of a meta-batch at once.

- ``PointNavigation``: the 2-D navigation task of Finn et al. (2017). A point starts at the origin,
  the goal of a task lies in [-0.5, 0.5]^2, actions are velocities clipped to [-0.1, 0.1] per
  coordinate, the reward is minus the distance to the goal after the move, an episode ends within
  0.01 of the goal or after 100 steps. The observation is the position only: the goal has to be
  inferred from rewards, which is what adaptation is for.
- ``Nav2d``: the thesis' court. 255 x 255 units, observation [agent x, agent y, goal x, goal y]
  scaled to [-1, 1] plus the distance scaled to [0, 1], action (angle, step length) in [-1, 1]^2
  mapped to 0-360 degrees and 0-10 units. Reward scale (ours; the thesis only states the threshold):
  -1 per step and +368 on the step that reaches the goal (within ``NAV2D_GOAL_RADIUS`` = 10 units),
  so an episode that reaches the goal after n steps returns 368 - n and one that does not returns
  -horizon.
  Hence *return > 330 <=> goal reached in fewer than 38 steps*, the thesis' "solved".
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium
import numpy as np
from gymnasium import spaces

from dmaml_core.rl.dynamics import (
    COURT,
    NAV2D_HORIZON,
    NAV2D_SOLVED_STEPS,
    POINT_GOAL_HIGH,
    POINT_GOAL_LOW,
    POINT_HORIZON,
    POINT_MAX_ACTION,
    Difficulty,
    nav2d_observe,
    nav2d_sample,
    nav2d_step,
    point_step,
)

RenderMode = Literal["ansi", "rgb_array"]

# --- rendering ----------------------------------------------------------------------------------


def _text_grid(pos: np.ndarray, goal: np.ndarray, low: float, high: float, cells: int) -> str:
    """A ``cells`` x ``cells`` character map, y up: 'A' agent, 'G' goal, '*' both."""

    def cell(p: np.ndarray) -> tuple[int, int]:
        ij = np.clip(((p - low) / (high - low) * cells).astype(int), 0, cells - 1)
        return int(cells - 1 - ij[1]), int(ij[0])

    grid = [["."] * cells for _ in range(cells)]
    g, a = cell(goal), cell(pos)
    grid[g[0]][g[1]] = "G"
    grid[a[0]][a[1]] = "*" if a == g else "A"
    return "\n".join("".join(row) for row in grid) + "\n"


def _image(
    pos: np.ndarray, goal: np.ndarray, low: float, high: float, size: int, radius: int
) -> np.ndarray:
    """RGB uint8 image [size, size, 3], y up: goal red, agent blue, on white."""
    image = np.full((size, size, 3), 255, np.uint8)
    rows, cols = np.mgrid[0:size, 0:size]
    for p, colour in ((goal, (220, 30, 30)), (pos, (30, 60, 220))):
        px = (np.clip(p, low, high) - low) / (high - low) * (size - 1)
        disc = (cols - px[0]) ** 2 + (size - 1 - rows - px[1]) ** 2 <= radius**2
        image[disc] = colour
    return image


# --- Gymnasium classes --------------------------------------------------------------------------


class PointNavigation(gymnasium.Env[np.ndarray, np.ndarray]):
    """Finn et al. (2017) 2-D point navigation (see module docstring).

    The goal is sampled from ``np_random`` at each reset unless fixed by ``goal=`` or
    ``reset(options={"goal": ...})``; ``reset(seed=s)`` therefore replays a task."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self, goal: tuple[float, float] | None = None, render_mode: RenderMode | None = None
    ) -> None:
        self.fixed_goal = None if goal is None else np.asarray(goal, np.float64)
        self.render_mode = render_mode
        reach = POINT_HORIZON * POINT_MAX_ACTION  # farthest the agent gets within the horizon
        self.observation_space = spaces.Box(-reach, reach, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(
            -POINT_MAX_ACTION, POINT_MAX_ACTION, shape=(2,), dtype=np.float32
        )
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)
        self.t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        goal = (options or {}).get("goal", self.fixed_goal)
        if goal is None:
            goal = self.np_random.uniform(POINT_GOAL_LOW, POINT_GOAL_HIGH, size=2)
        self.goal = np.asarray(goal, np.float64)
        self.pos = np.zeros(2)
        self.t = 0
        return self.pos.astype(np.float32), {"goal": self.goal.copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        pos, reward, terminated = point_step(self.pos, self.goal, np.asarray(action, np.float64))
        self.pos = pos
        self.t += 1
        info = {"goal": self.goal.copy(), "distance": float(-reward)}
        return (
            pos.astype(np.float32),
            float(reward),
            bool(terminated),
            self.t >= POINT_HORIZON and not terminated,
            info,
        )

    def render(self) -> str | np.ndarray | None:  # type: ignore[override]
        if self.render_mode == "ansi":
            return _text_grid(self.pos, self.goal, -1.0, 1.0, 21)
        if self.render_mode == "rgb_array":
            return _image(self.pos, self.goal, -1.0, 1.0, 64, 2)
        return None


class Nav2d(gymnasium.Env[np.ndarray, np.ndarray]):
    """The thesis' 255 x 255 navigation court (see module docstring for the reward scale).

    ``difficulty='easy'``: random start, goal in the centre; ``'hard'``: random start and goal.
    Start and goal come from ``np_random`` (or ``reset(options={"start": ..., "goal": ...})``), so
    ``reset(seed=s)`` replays a task, e.g. for the query trajectories of the same task."""

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        difficulty: Difficulty = "hard",
        horizon: int = NAV2D_HORIZON,
        render_mode: RenderMode | None = None,
    ) -> None:
        if difficulty not in ("easy", "hard"):
            raise ValueError(f"difficulty must be 'easy' or 'hard', got {difficulty!r}")
        self.difficulty: Difficulty = difficulty
        self.horizon = horizon
        self.render_mode = render_mode
        self.observation_space = spaces.Box(
            np.array([-1, -1, -1, -1, 0], np.float32), np.ones(5, np.float32), dtype=np.float32
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.pos = np.zeros(2)
        self.goal = np.zeros(2)
        self.t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start, goal = nav2d_sample(self.np_random, 1, self.difficulty)
        options = options or {}
        self.pos = np.asarray(options.get("start", start[0]), np.float64)
        self.goal = np.asarray(options.get("goal", goal[0]), np.float64)
        self.t = 0
        return nav2d_observe(self.pos, self.goal), {"start": self.pos.copy(), "goal": self.goal}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        pos, reward, reached = nav2d_step(self.pos, self.goal, np.asarray(action, np.float64))
        self.pos = pos
        self.t += 1
        solved = bool(reached) and self.t < NAV2D_SOLVED_STEPS
        info = {"goal": self.goal.copy(), "solved": solved}
        obs = nav2d_observe(pos, self.goal)
        return obs, float(reward), bool(reached), self.t >= self.horizon and not reached, info

    def render(self) -> str | np.ndarray | None:  # type: ignore[override]
        if self.render_mode == "ansi":
            return _text_grid(self.pos, self.goal, 0.0, COURT, 32)
        if self.render_mode == "rgb_array":
            return _image(self.pos, self.goal, 0.0, COURT, 128, 3)
        return None


def register_envs() -> None:
    """Register both environments with Gymnasium once (re-registering would warn)."""
    for env_id, entry in (
        ("dmaml/PointNavigation-v0", "dmaml_core.rl.envs:PointNavigation"),
        ("dmaml/Nav2d-v0", "dmaml_core.rl.envs:Nav2d"),
    ):
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry)


register_envs()
