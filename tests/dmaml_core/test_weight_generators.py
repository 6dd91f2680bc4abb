"""Every weight generator on hand-made inputs, checked against hand-computed results."""

from __future__ import annotations

import numpy as np
import pytest

from dmaml_core.weight_generators import (
    LossMedian,
    LossMovingAverage,
    Plain,
    Weighted,
    make_weight_generator,
)


def w(*values: float) -> list[np.ndarray]:
    """A one-tensor weight list holding ``values``."""
    return [np.array(values, np.float32)]


OLD = w(10.0, 10.0)
WORKERS = [w(1.0, 2.0), w(3.0, 4.0), w(5.0, 6.0), w(7.0, 8.0)]
# mean over the last loss sums: 1.0, 2.0, 3.0, 4.0 -> median 2.5
HISTORY = np.array([[1.0, 1.0], [2.0, 2.0], [4.0, 2.0], [3.0, 5.0]])


def test_plain_is_the_mean() -> None:
    merge = Plain().merge(OLD, WORKERS, HISTORY)
    np.testing.assert_array_equal(merge.weights[0], [4.0, 5.0])
    assert merge.kept == (0, 1, 2, 3) and not merge.diverged


def test_plain_reports_divergence_when_a_worker_has_nan_weights() -> None:
    merge = Plain().merge(OLD, [w(1.0, np.nan), w(1.0, 1.0)], np.ones((2, 1)))
    assert merge.diverged


def test_loss_median_drops_workers_worse_than_the_median() -> None:
    merge = LossMedian().merge(OLD, WORKERS, HISTORY)
    assert merge.kept == (0, 1)  # means 1.0 and 2.0 <= 2.5; 3.0 and 4.0 dropped
    np.testing.assert_array_equal(merge.weights[0], [2.0, 3.0])


def test_loss_median_keeps_ties_with_the_median() -> None:
    history = np.array([[1.0], [2.0], [2.0], [5.0], [0.5]])  # median 2.0
    workers = [w(float(i)) for i in range(5)]
    merge = LossMedian().merge(w(0.0), workers, history)
    assert merge.kept == (0, 1, 2, 4)
    np.testing.assert_allclose(merge.weights[0], [(0 + 1 + 2 + 4) / 4])


def test_loss_median_one_worker_and_all_equal() -> None:
    assert LossMedian().merge(OLD, WORKERS[:1], HISTORY[:1]).kept == (0,)
    merge = LossMedian().merge(OLD, WORKERS, np.ones((4, 3)))
    assert merge.kept == (0, 1, 2, 3)


def test_loss_median_drops_a_nan_loss_worker() -> None:
    history = np.array([[1.0], [np.nan], [2.0]])
    merge = LossMedian().merge(OLD, WORKERS[:3], history)
    assert merge.kept == (0, 2) and not merge.diverged
    np.testing.assert_array_equal(merge.weights[0], [3.0, 4.0])


def test_loss_median_all_diverged_keeps_old_weights() -> None:
    merge = LossMedian().merge(OLD, WORKERS[:2], np.full((2, 1), np.nan))
    assert merge.diverged and merge.kept == ()
    np.testing.assert_array_equal(merge.weights[0], OLD[0])


def test_weighted_interpolates_between_old_and_mean() -> None:
    merge = Weighted(g=0.25).merge(OLD, WORKERS, HISTORY)
    np.testing.assert_allclose(merge.weights[0], [0.25 * 4 + 0.75 * 10, 0.25 * 5 + 0.75 * 10])
    np.testing.assert_array_equal(Weighted(g=1.0).merge(OLD, WORKERS, HISTORY).weights[0], [4, 5])


@pytest.mark.parametrize("g", [0.0, -0.1, 1.5])
def test_weighted_rejects_g_outside_0_1(g: float) -> None:
    with pytest.raises(ValueError, match=r"g must be in \(0, 1\]"):
        Weighted(g=g)


def test_loss_moving_average_keeps_workers_below_the_rolling_average() -> None:
    # all 8 losses average 2.5; latest losses 1, 2, 2, 5 -> keep 0, 1, 2
    merge = LossMovingAverage().merge(OLD, WORKERS, HISTORY)
    assert merge.kept == (0, 1, 2)
    np.testing.assert_array_equal(merge.weights[0], [3.0, 4.0])


def test_loss_moving_average_never_drops_everyone() -> None:
    equal = LossMovingAverage().merge(OLD, WORKERS, np.ones((4, 2)))
    assert equal.kept == (0, 1, 2, 3)
    rising = np.array([[1.0, 9.0], [1.0, 8.0], [1.0, 8.0]])  # rolling 4.67, every latest above
    assert LossMovingAverage().merge(OLD, WORKERS[:3], rising).kept == (1, 2)


def test_loss_moving_average_drops_nan_worker() -> None:
    history = np.array([[1.0, 1.0], [1.0, np.inf], [3.0, 3.0]])  # rolling over usable = 2.0
    merge = LossMovingAverage().merge(OLD, WORKERS[:3], history)
    assert merge.kept == (0,)


def test_registry() -> None:
    assert make_weight_generator("weighted", g=0.3) == Weighted(g=0.3)
    with pytest.raises(ValueError, match="unknown weight generator 'wg2'; known: loss_median"):
        make_weight_generator("wg2")
