"""Backends: where the logical workers run (serial here; processes and Ray plug in beside it)."""

from __future__ import annotations

from dmaml_core.backends.base import Backend, BackendRun, WorkerError
from dmaml_core.backends.serial import SerialBackend

__all__ = ["Backend", "BackendRun", "SerialBackend", "WorkerError"]
