"""``Navigation``: the meta-RL task domain, pluggable wherever a supervised domain is.

It satisfies the ``Domain`` protocol (frozen, hashable, ``model``/``sample``) and adds ``compile``,
which ``worker.compiled_maml`` uses instead of supervised MAML, so DMAML runs, backends and weight
generators work unchanged. A task is a (start, goal) pair; ``sample`` also draws the seed of the
meta-batch's rollouts from the worker's stream, which keeps runs reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from dmaml_core.metrics import NEGATIVE_RETURN, RETURN, Metric
from dmaml_core.rl.dynamics import NAV2D_HORIZON, POINT_HORIZON, Difficulty, NavDynamics
from dmaml_core.types import Activation, LossKind, NavTasks

if TYPE_CHECKING:  # these import TensorFlow: the domain stays importable without it
    from dmaml_core.maml import MamlConfig
    from dmaml_core.rl.maml_rl import MamlRL
    from dmaml_core.rl.policy import GaussianMLPPolicy

# Same as ``tasks.base.Split``; not imported from there, because ``tasks`` imports this module.
Split = Literal["train", "test"]


@dataclass(frozen=True)
class Navigation:
    """2-D navigation meta-RL: ``env='point'`` (Finn et al.) or ``'nav2d'`` (the thesis' court).

    Goals are continuous, so every sampled task is new; ``split`` is accepted for the protocol but
    train and test draw from the same distribution (held-out evaluation uses a separate seed)."""

    env: Literal["point", "nav2d"] = "point"
    difficulty: Difficulty = "hard"
    horizon: int | None = None  # default: 100 for both environments
    k_support: int = 20  # trajectories per task for the inner step
    k_query: int = 20  # trajectories per task with the adapted policy
    gamma: float = 0.99
    hidden: tuple[int, ...] = (100, 100)
    activation: Activation = "tanh"
    init_log_std: float = 0.0
    normalize_advantages: bool = True

    name: ClassVar[str] = "navigation"
    # Unused (the RL learner defines its own policy-gradient losses); present for ``Domain``.
    loss: ClassVar[LossKind] = "mse"
    metrics: ClassVar[tuple[Metric, ...]] = (RETURN, NEGATIVE_RETURN)  # the first is the primary

    def __post_init__(self) -> None:
        if self.env not in ("point", "nav2d"):
            raise ValueError(f"env must be 'point' or 'nav2d', got {self.env!r}")
        if self.k_support < 1 or self.k_query < 1:
            raise ValueError(
                f"k_support and k_query must be >= 1, got {self.k_support}, {self.k_query}"
            )
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")

    def dynamics(self) -> NavDynamics:
        default = POINT_HORIZON if self.env == "point" else NAV2D_HORIZON
        return NavDynamics(self.env, self.difficulty, self.horizon or default)

    def model(self) -> GaussianMLPPolicy:
        from dmaml_core.rl.policy import GaussianMLPPolicy

        dyn = self.dynamics()
        return GaussianMLPPolicy(
            dyn.obs_dim, dyn.act_dim, self.hidden, self.activation, self.init_log_std
        )

    def sample(self, rng: np.random.Generator, n_tasks: int, split: Split = "train") -> NavTasks:
        starts, goals = self.dynamics().sample_tasks(rng, n_tasks)
        return NavTasks(starts, goals, int(rng.integers(2**31 - 1)))

    def compile(self, cfg: MamlConfig) -> MamlRL:
        from dmaml_core.rl.maml_rl import MamlRL

        return MamlRL(
            self.dynamics(),
            self.model(),
            cfg,
            self.k_support,
            self.k_query,
            self.gamma,
            self.normalize_advantages,
        )
