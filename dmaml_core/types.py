"""Small value types shared by the maths and the task domains, with no TensorFlow import.

They live apart from ``maml`` so that a suite's domain parameters can be checked (by building the
frozen domain dataclass) in well under a second, before TensorFlow is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

LossKind = Literal["mse", "xent"]
Activation = Literal["tanh", "relu"]


class Tasks(NamedTuple):
    """A meta-batch: every array has the task axis first. Labels are int class ids for ``xent``."""

    support_x: np.ndarray | tf.Tensor
    support_y: np.ndarray | tf.Tensor
    query_x: np.ndarray | tf.Tensor
    query_y: np.ndarray | tf.Tensor

    @property
    def n_tasks(self) -> int:
        return int(self.support_x.shape[0])


class NavTasks(NamedTuple):
    """A meta-batch of navigation tasks; ``seed`` drives every rollout of this batch, so a step
    is reproducible from the worker's task stream alone."""

    starts: np.ndarray  # [T, 2]
    goals: np.ndarray  # [T, 2]
    seed: int

    @property
    def n_tasks(self) -> int:
        return int(self.goals.shape[0])
