"""The limits every parallel backend shares (``backends.host``): the per-run timeout that scales
from the measured runs, and the size bounds that refuse absurd settings before anything starts.
No processes are started here."""

from __future__ import annotations

import pytest

from dmaml_core.backends import make_backend
from dmaml_core.backends.host import (
    MAX_WORKERS,
    TIMEOUT_FACTOR,
    TIMEOUT_FLOOR_S,
    WARMUP_TIMEOUT_S,
    RunTimeout,
    check_scale,
)
from dmaml_core.maml import MamlConfig
from dmaml_core.tasks import make_domain
from dmaml_core.worker import WorkerConfig

CONFIG = WorkerConfig(make_domain("sinusoid"), MamlConfig())
RAISE = "raise it with the suite field `worker_timeout_s` or the flag `--worker-timeout`"


def test_the_limit_scales_from_the_runs_after_the_warm_up() -> None:
    limits = RunTimeout()
    assert limits.limit("run") == WARMUP_TIMEOUT_S == 600.0
    assert limits.explain("run") == f"the limit for the first, tracing call; {RAISE}"
    limits.observe("run", 30.0)  # the warm-up: it stands in until a later run is measured
    assert limits.limit("run") == TIMEOUT_FACTOR * 30.0 == 300.0
    limits.observe("run", 2.0)
    assert limits.limit("run") == TIMEOUT_FLOOR_S == 60.0  # 10 x 2 s is below the floor
    limits.observe("run", 8.0)
    limits.observe("run", 7.0)
    assert limits.limit("run") == 80.0  # the slowest later run, not the last one
    assert limits.explain("run").startswith(
        "max(60 s, 10 x the slowest run call so far, 8 s); raise it"
    )
    # Task-parallel calls are traced on their own first call: their own warm-up limit.
    assert limits.limit("gradients") == WARMUP_TIMEOUT_S


def test_a_fixed_limit_applies_from_the_first_run_on() -> None:
    limits = RunTimeout(fixed_s=5.0)
    assert limits.limit("run") == 5.0
    limits.observe("run", 100.0)
    limits.observe("run", 100.0)
    assert limits.limit("run") == 5.0
    assert limits.explain("run") == f"the limit set for this case; {RAISE}"


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_a_timeout_must_be_a_finite_positive_number(bad: float) -> None:
    with pytest.raises(ValueError, match="timeout_s must be > 0 and finite"):
        make_backend("processes", CONFIG, 2, timeout_s=bad)


def test_absurd_sizes_are_refused_with_the_way_to_lift_the_bound() -> None:
    lift = r"set DMAML_BENCH_NO_LIMITS=1 \(harness\) or pass allow_large=True to the backend"
    with pytest.raises(ValueError, match=rf"workers = 1000000 is more than the 4096 .*; {lift}"):
        check_scale(1_000_000, "processes", None, None, 2)
    with pytest.raises(ValueError, match=rf"threads_per_process = 100000 is more .*\(8\); {lift}"):
        check_scale(2, "processes", None, 100_000, 2)
    with pytest.raises(ValueError, match=rf"actors = 9 is more than 4 x the 2 cores .*; {lift}"):
        check_scale(16, "actors", 9, None, 2)
    check_scale(MAX_WORKERS, "processes", 8, 8, 2)  # at the bounds: fine
    check_scale(1_000_000, "processes", 100, 100_000, 2, allow_large=True)


@pytest.mark.parametrize("name", ["serial", "processes"])
def test_every_backend_refuses_a_million_workers_before_building_any(name: str) -> None:
    with pytest.raises(ValueError, match="workers = 1000000 is more than the 4096"):
        make_backend(name, CONFIG, 1_000_000)
