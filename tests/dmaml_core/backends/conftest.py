"""Shared by the backend tests: a check that a backend's worker processes are really gone (not
merely unreachable) after a fault or close."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil
import pytest


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: list[int], within_s: float = 15.0) -> list[int]:
    """The pids still running after ``within_s`` (Ray kills actors asynchronously)."""
    deadline = time.monotonic() + within_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.fixture
def assert_gone() -> Callable[[list[int]], None]:
    def check(pids: list[int]) -> None:
        assert pids and all(p > 0 for p in pids)
        assert wait_gone(pids) == [], "worker processes left behind"

    return check
