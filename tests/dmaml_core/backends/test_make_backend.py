"""The backend factory and the worker-to-process assignment (no processes started here)."""

from __future__ import annotations

import pytest

from dmaml_core.backends import BACKENDS, SerialBackend, make_backend
from dmaml_core.backends.host import assign_workers
from dmaml_core.maml import MamlConfig
from dmaml_core.tasks import make_domain
from dmaml_core.worker import WorkerConfig

CONFIG = WorkerConfig(make_domain("sinusoid"), MamlConfig())


def test_known_backends() -> None:
    assert BACKENDS == ("serial", "processes", "ray")
    assert isinstance(make_backend("serial", CONFIG, 2), SerialBackend)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="unknown backend 'threads'; known: serial, processes, ray"
    ):
        make_backend("threads", CONFIG, 2)


@pytest.mark.parametrize("name", BACKENDS)
def test_workers_must_be_positive(name: str) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        make_backend(name, CONFIG, 0)


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="serial backend takes no options, got processes"):
        make_backend("serial", CONFIG, 2, processes=2)
    with pytest.raises(ValueError, match="processes must be >= 1"):
        make_backend("processes", CONFIG, 2, processes=0)
    with pytest.raises(ValueError, match="threads_per_process must be >= 1"):
        make_backend("processes", CONFIG, 2, threads_per_process=0)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        make_backend("processes", CONFIG, 2, timeout_s=0)


def test_workers_are_dealt_round_robin() -> None:
    assert assign_workers(5, 2) == [[0, 2, 4], [1, 3]]
    assert assign_workers(2, 2) == [[0], [1]]
    layout = assign_workers(64, 2)
    assert sorted(i for ids in layout for i in ids) == list(range(64))
    assert [len(ids) for ids in layout] == [32, 32]
