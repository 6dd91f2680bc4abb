"""get_state / set_state across process boundaries: the processes and Ray backends hand back every
logical worker's state in worker order, and a fresh pool given that state continues bit for bit
like the pool it came from (same thread settings)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from backend_scenario import config, theta

from dmaml_core.backends import Backend, SerialBackend, make_backend
from dmaml_core.dmaml import CentralLearner
from dmaml_core.weight_generators import make_weight_generator

# each starts two pools of two processes (or actors) with TensorFlow: ~15 s apiece here
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _learner(backend: Backend) -> CentralLearner:
    return CentralLearner(theta(), backend, make_weight_generator("plain"))


def _continue_exactly(name: str, **options: Any) -> None:
    cfg = config()
    serial = _learner(SerialBackend(cfg, 3))
    with make_backend(name, cfg, 3, **options) as first:  # type: ignore[attr-defined]
        learner = _learner(first)
        for _ in range(2):
            learner.run()
            serial.run()
        saved = learner.get_state()
        assert [w["worker_id"] for w in saved["workers"]] == [0, 1, 2]
        # the task streams are where the serial reference's are: they do not depend on threads
        want = serial.get_state()["workers"]
        assert [w["rng"] for w in saved["workers"]] == [w["rng"] for w in want]
        learner.run()
        expected = learner.theta
    with make_backend(name, cfg, 3, **options) as second:  # type: ignore[attr-defined]
        restored = _learner(second)
        restored.set_state(saved)
        again = restored.get_state()["workers"]
        for a, b in zip(again, saved["workers"], strict=True):
            assert a["rng"] == b["rng"] and float(a["opt"]["count"]) == float(b["opt"]["count"])
            assert all(
                np.array_equal(x, y) for x, y in zip(a["opt"]["mu"], b["opt"]["mu"], strict=True)
            )
        restored.run()
        for got, want_w in zip(restored.theta, expected, strict=True):
            assert np.array_equal(got, want_w)
        with pytest.raises(ValueError, match="2 worker states for 3 workers"):
            second.set_state(saved["workers"][:2])


def test_processes_state_round_trip_continues_exactly() -> None:
    _continue_exactly("processes", processes=2)


@pytest.fixture
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_state_round_trip_continues_exactly(ray_cluster: None) -> None:
    _continue_exactly("ray", actors=2)
