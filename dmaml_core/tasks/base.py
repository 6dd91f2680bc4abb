"""What a task domain provides: a model, a loss, and a seeded sampler of meta-batches."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from dmaml_core.maml import LossKind, Tasks
from dmaml_core.models import Model

Split = Literal["train", "test"]


class Domain(Protocol):
    """A frozen, picklable description of a task distribution (workers rebuild it in-process)."""

    @property
    def name(self) -> str: ...

    @property
    def loss(self) -> LossKind: ...

    def __hash__(self) -> int: ...

    def model(self) -> Model: ...

    def sample(self, rng: np.random.Generator, n_tasks: int, split: Split = "train") -> Tasks: ...
