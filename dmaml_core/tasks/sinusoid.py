"""Sinusoid regression (Finn et al. 2017): y = A sin(x - b), one (A, b) per task. Embedded: nothing
to download, which makes it the default domain for the main job and for CI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from dmaml_core.metrics import REGRESSION, Metric
from dmaml_core.tasks.base import Split
from dmaml_core.types import LossKind, Tasks

if TYPE_CHECKING:  # models import TensorFlow: domains stay importable without it
    from dmaml_core.models import MLP


# Points per task: 100,000 is far past any paper's K (5-20) and keeps a validation set of a
# thousand tasks under a gigabyte.
MAX_POINTS = 100_000


@dataclass(frozen=True)
class Sinusoid:
    k_support: int = 10
    k_query: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, float(np.pi))
    x_range: tuple[float, float] = (-5.0, 5.0)
    hidden: tuple[int, ...] = (40, 40)
    # Support points of validation ("test") tasks; None: k_support. The paper (table 1) trains
    # with K = 10 and validates with K in {5, 10, 20}.
    validation_k_support: int | None = None

    name: ClassVar[str] = "sinusoid"
    loss: ClassVar[LossKind] = "mse"
    metrics: ClassVar[tuple[Metric, ...]] = REGRESSION  # the first is the primary

    def __post_init__(self) -> None:
        if self.k_support < 1 or self.k_query < 1:
            raise ValueError(
                f"k_support and k_query must be >= 1, got {self.k_support}, {self.k_query}"
            )
        if self.validation_k_support is not None and self.validation_k_support < 1:
            raise ValueError(
                f"validation_k_support must be >= 1 (or absent), got {self.validation_k_support}"
            )
        for name in ("k_support", "k_query", "validation_k_support"):
            value = getattr(self, name)
            if value is not None and value > MAX_POINTS:
                raise ValueError(
                    f"{name} = {value} is above {MAX_POINTS:,} points per task (a typo would "
                    "otherwise fail with an out-of-memory error only after the sweep started)"
                )

    def model(self) -> MLP:
        from dmaml_core.models import MLP

        return MLP((1, *self.hidden, 1))

    def sample(self, rng: np.random.Generator, n_tasks: int, split: Split = "train") -> Tasks:
        """One meta-batch; the task distribution has no train/test split (every draw is new), but
        "test" tasks (validation) adapt on ``validation_k_support`` points where it is set. The
        amplitudes and phases are drawn first, so validation sets that differ only in K hold the
        same functions."""
        amplitude = rng.uniform(*self.amplitude, size=(n_tasks, 1, 1))
        phase = rng.uniform(*self.phase, size=(n_tasks, 1, 1))
        k = self.k_support
        if split == "test" and self.validation_k_support is not None:
            k = self.validation_k_support
        x = rng.uniform(*self.x_range, size=(n_tasks, k + self.k_query, 1))
        y = amplitude * np.sin(x - phase)
        x, y = x.astype(np.float32), y.astype(np.float32)
        return Tasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:])
