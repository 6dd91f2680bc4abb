"""The N-way K-shot shape check shared by the image domains."""

from typing import Any

import pytest

from dmaml_core.tasks.miniimagenet import MiniImageNet
from dmaml_core.tasks.omniglot import Omniglot
from dmaml_core.tasks.random_images import RandomImages


@pytest.mark.parametrize("domain", [Omniglot, MiniImageNet, RandomImages])
@pytest.mark.parametrize(
    "shape", [{"n_way": 1}, {"k_shot": 0}, {"k_query": 0}], ids=["n_way", "k_shot", "k_query"]
)
def test_bad_few_shot_shape_is_refused_by_every_image_domain(
    domain: Any, shape: dict[str, int]
) -> None:
    with pytest.raises(ValueError, match="need n_way >= 2, k_shot >= 1, k_query >= 1; got"):
        domain(**shape)


@pytest.mark.parametrize("domain", [Omniglot, MiniImageNet, RandomImages])
def test_good_few_shot_shape_is_accepted(domain: Any) -> None:
    assert domain(n_way=2, k_shot=1, k_query=1).n_way == 2
