"""The sinusoid domain's validation-only support size (paper table 1: train with K = 10, validate
with K in {5, 10, 20})."""

from __future__ import annotations

import numpy as np
import pytest

from dmaml_core.tasks import make_domain
from dmaml_core.tasks.sinusoid import Sinusoid


def test_validation_tasks_adapt_on_their_own_k_and_training_is_unchanged() -> None:
    plain, k5 = Sinusoid(), Sinusoid(validation_k_support=5)
    train = [d.sample(np.random.default_rng(0), 3) for d in (plain, k5)]
    for a, b in zip(*train, strict=True):
        np.testing.assert_array_equal(a, b)  # training draws do not see the validation K
    tasks = k5.sample(np.random.default_rng(1), 4, "test")
    assert tasks.support_x.shape == (4, 5, 1) and tasks.query_x.shape == (4, 10, 1)
    assert plain.sample(np.random.default_rng(1), 4, "test").support_x.shape == (4, 10, 1)


def test_validation_sets_that_differ_in_k_hold_the_same_functions() -> None:
    """Amplitude and phase are drawn first: with the same seed every K gives the same sine curves
    (checked against the draws made independently), so cases validated with K = 5 and K = 20
    are compared on the same tasks."""
    rng = np.random.default_rng(2)
    amplitude = rng.uniform(0.1, 5.0, size=(3, 1))
    phase = rng.uniform(0.0, np.pi, size=(3, 1))
    for k in (5, 20):
        tasks = Sinusoid(validation_k_support=k).sample(np.random.default_rng(2), 3, "test")
        assert tasks.support_x.shape == (3, k, 1)
        for x, y in ((tasks.support_x, tasks.support_y), (tasks.query_x, tasks.query_y)):
            expected = amplitude * np.sin(x[..., 0] - phase)
            np.testing.assert_allclose(y[..., 0], expected, rtol=1e-5, atol=1e-5)


def test_bad_validation_k_is_refused() -> None:
    with pytest.raises(ValueError, match="validation_k_support"):
        Sinusoid(validation_k_support=0)
    with pytest.raises(ValueError, match="validation_k_support"):
        make_domain("sinusoid", validation_k_support=2.5)
