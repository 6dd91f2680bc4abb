"""What a task domain provides: a model, a loss, and a seeded sampler of meta-batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from dmaml_core.metrics import Metric
from dmaml_core.types import LossKind

if TYPE_CHECKING:  # models import TensorFlow: domains stay importable without it
    from dmaml_core.models import Model

Split = Literal["train", "test"]


class Domain(Protocol):
    """A frozen, picklable description of a task distribution (workers rebuild it in-process)."""

    @property
    def name(self) -> str: ...

    @property
    def loss(self) -> LossKind: ...

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """What validation reports (dmaml_core/metrics.py); the first is the one compared."""
        ...

    def __hash__(self) -> int: ...

    def model(self) -> Model: ...

    def sample(self, rng: np.random.Generator, n_tasks: int, split: Split = "train") -> Any:
        """A meta-batch: ``Tasks`` for supervised domains; a domain with its own ``compile(cfg)``
        (e.g. RL) returns whatever its learner's ``step`` takes."""
        ...


def check_few_shot(n_way: int, k_shot: int, k_query: int) -> None:
    """The one shape check every N-way K-shot domain shares."""
    if n_way < 2 or k_shot < 1 or k_query < 1:
        raise ValueError(
            f"need n_way >= 2, k_shot >= 1, k_query >= 1; got {n_way}, {k_shot}, {k_query}"
        )
