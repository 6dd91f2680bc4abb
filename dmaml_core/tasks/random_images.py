"""Random images of Omniglot's or miniImageNet's shape, labelled N-way K-shot.

For *timing only*: the compute of a meta step does not depend on pixel values, so this domain lets
the timing suites run before (or without) the real data. Anything it reports about accuracy is
meaningless, and results say ``domain = random_images``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from dmaml_core.metrics import CLASSIFICATION, Metric
from dmaml_core.tasks.base import Split, check_few_shot
from dmaml_core.types import LossKind, Tasks

if TYPE_CHECKING:  # models import TensorFlow: domains stay importable without it
    from dmaml_core.models import ConvNet


@dataclass(frozen=True)
class RandomImages:
    n_way: int = 5
    k_shot: int = 1
    k_query: int = 1
    image_size: int = 28
    channels: int = 1
    filters: int = 64
    stride: int = 2
    max_pool: bool = False

    name: ClassVar[str] = "random_images"
    loss: ClassVar[LossKind] = "xent"
    metrics: ClassVar[tuple[Metric, ...]] = CLASSIFICATION  # the first is the primary

    def __post_init__(self) -> None:
        check_few_shot(self.n_way, self.k_shot, self.k_query)

    def model(self) -> ConvNet:
        from dmaml_core.models import ConvNet

        return ConvNet(
            self.n_way, self.image_size, self.channels, self.filters, self.stride, self.max_pool
        )

    def sample(self, rng: np.random.Generator, n_tasks: int, split: Split = "train") -> Tasks:
        shape = (self.image_size, self.image_size, self.channels)

        def draw(k: int) -> tuple[np.ndarray, np.ndarray]:
            images = rng.random((n_tasks, self.n_way * k, *shape), dtype=np.float32)
            labels = np.tile(np.repeat(np.arange(self.n_way, dtype=np.int32), k), (n_tasks, 1))
            return images, labels

        return Tasks(*draw(self.k_shot), *draw(self.k_query))
