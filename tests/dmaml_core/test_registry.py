"""``registry.build``: the one place that turns a name and parameters into an object."""

import pytest

from dmaml_core.registry import build
from dmaml_core.tasks import make_domain
from dmaml_core.weight_generators import make_weight_generator

REGISTRY = {"pair": lambda a, b=2: (a, b)}


def test_builds_with_params() -> None:
    assert build("thing", REGISTRY, "pair", {"a": 1}) == (1, 2)


def test_unknown_name_lists_the_known_ones() -> None:
    known = r"unknown thing 'pear'; known: pair; or a plug-in as module:Class$"
    with pytest.raises(ValueError, match=known):
        build("thing", REGISTRY, "pear", {})


def test_an_unknown_parameter_names_the_kind_and_the_name() -> None:
    with pytest.raises(ValueError, match=r"bad parameters for thing 'pair': .*'c'"):
        build("thing", REGISTRY, "pair", {"a": 1, "c": 3})
    with pytest.raises(ValueError, match=r"bad parameters for domain 'sinusoid'"):
        make_domain("sinusoid", amp=3)
    with pytest.raises(ValueError, match=r"bad parameters for weight generator 'weighted'"):
        make_weight_generator("weighted", h=0.5)
