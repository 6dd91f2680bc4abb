"""Backends: where the logical workers run - in this process (``serial``), in P spawned processes
on this machine (``processes``) or in Ray actors on a local or multi-machine cluster (``ray``).

``make_backend(name, config, n_workers, **options)`` is the one entry point the harness needs. Ray
is an optional dependency and slow to import, so ``ray_backend`` is imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dmaml_core.backends.base import Backend, BackendConnectionError, BackendRun, WorkerError
from dmaml_core.backends.host import check_scale
from dmaml_core.backends.processes import ProcessesBackend
from dmaml_core.backends.serial import SerialBackend
from dmaml_core.worker import WorkerConfig

if TYPE_CHECKING:
    from dmaml_core.backends.ray_backend import RayBackend

BACKENDS = ("serial", "processes", "ray")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendConnectionError",
    "BackendRun",
    "ProcessesBackend",
    "RayBackend",
    "SerialBackend",
    "WorkerError",
    "make_backend",
]


def make_backend(name: str, config: WorkerConfig, n_workers: int, **options: Any) -> Backend:
    """Build backend ``name`` for W = ``n_workers`` logical workers; ``options`` go to its
    constructor (e.g. ``processes=``, ``threads_per_process=``, ``timeout_s=``, ``address=``,
    ``allow_large=``)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1, got {n_workers}")
    if name == "serial":
        # The serial backend builds every worker here: the same W bound as the others.
        check_scale(n_workers, "processes", None, None, 1, options.pop("allow_large", False))
        if options:
            raise ValueError(f"the serial backend takes no options, got {', '.join(options)}")
        return SerialBackend(config, n_workers)
    if name == "processes":
        return ProcessesBackend(config, n_workers, **options)
    from dmaml_core.backends.ray_backend import RayBackend

    return RayBackend(config, n_workers, **options)


def __getattr__(name: str) -> Any:
    """``from dmaml_core.backends import RayBackend`` imports Ray only at that moment."""
    if name == "RayBackend":
        from dmaml_core.backends.ray_backend import RayBackend

        return RayBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
