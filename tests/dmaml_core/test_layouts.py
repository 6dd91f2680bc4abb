"""The measured layout choice (``dmaml_core.layouts``) and the chunked meta step of
``CompiledMaml``: the search keeps the fastest candidate that agrees, the choice is cached on disk
and reused, ``DMAML_LAYOUT`` forces one, and chunks of tasks add up to the meta-gradient of the
whole meta-batch (checked against the float64 reference path in one piece)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from dmaml_core import layouts, maml
from dmaml_core.maml import CompiledMaml, MamlConfig, Tasks, chunk_sizes, meta_gradients
from dmaml_core.models import ConvNet, grouped_conv_gradient_available

NEEDS_GROUPED_GRADIENT = pytest.mark.skipif(
    not grouped_conv_gradient_available(), reason="no grouped-conv gradient here (oneDNN off)"
)
NET = ConvNet(n_way=2, image_size=6, channels=1, filters=3, stride=2, blocks=2)


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "layouts.json"
    monkeypatch.setenv("DMAML_LAYOUT_CACHE", str(path))
    monkeypatch.delenv("DMAML_LAYOUT", raising=False)
    return path


def _tasks(n_tasks: int, dtype: tf.DType = tf.float32, seed: int = 0) -> Tasks:
    rng = np.random.default_rng(seed)
    shape = (n_tasks, 4, NET.image_size, NET.image_size, NET.channels)
    labels = np.tile(np.arange(4) % NET.n_way, (n_tasks, 1)).astype(np.int32)
    return Tasks(
        tf.constant(rng.standard_normal(shape), dtype),
        tf.constant(labels),
        tf.constant(rng.standard_normal(shape), dtype),
        tf.constant(labels),
    )


def test_chunk_sizes_are_few_and_nearly_equal() -> None:
    assert chunk_sizes(32) == [32]
    assert chunk_sizes(33) == [17, 16]
    assert chunk_sizes(512) == [32] * 16
    assert chunk_sizes(100) == [25] * 4
    assert chunk_sizes(32, 8) == [8] * 4
    for n in range(1, 200):
        for most in (None, 3, 8):
            sizes = chunk_sizes(n, most)
            assert sum(sizes) == n and max(sizes) <= (most or maml.CHUNK_TASKS)
            assert len(set(sizes)) <= 2


def _sleeper(
    seconds: dict[str, float], outputs: dict[str, float]
) -> Callable[[str], Callable[[], list[np.ndarray]]]:
    def prepare(name: str) -> Callable[[], list[np.ndarray]]:
        def run() -> list[np.ndarray]:
            time.sleep(seconds[name])
            return [np.array([outputs.get(name, 1.0)])]

        return run

    return prepare


def test_search_keeps_the_fastest_that_agrees() -> None:
    seconds = {"slow": 0.03, "fast": 0.005, "wrong": 0.0}
    choice = layouts.search(["slow", "fast", "wrong"], _sleeper(seconds, {"wrong": 2.0}))
    assert choice.layout == "fast" and choice.why == "measured"
    assert "disagree" in choice.dropped["wrong"]
    assert set(choice.median_ms) == {"slow", "fast"}  # every tried candidate's time is reported
    assert choice.median_ms["slow"] > choice.median_ms["fast"]


def test_agreement_ignores_rounding_noise_but_not_wrong_values() -> None:
    """Float32 rounding (a few 1e-5 of a tensor's largest entry, or of a cancelling tensor's share
    of the largest gradient) may differ between correct layouts; a real tensor off by 1e-3 of its
    scale may not, and neither may a small tensor that is really wrong."""
    loss, kernel = np.array(50.0), np.array([1.0, -2.0, 3.0])  # outputs: loss, then gradients
    noise = np.array([1e-9, -2e-9])
    assert layouts._agree([loss, kernel, noise], [loss, kernel * (1 + 1e-5), -noise])
    assert not layouts._agree([loss, kernel, noise], [loss, kernel * (1 + 1e-3), noise])
    assert not layouts._agree([loss, kernel, noise], [loss * (1 + 1e-3), kernel, noise])
    bias = np.array([0.5, 0.1])
    assert not layouts._agree([loss, kernel, bias], [loss, kernel, np.array([-0.5, 0.1])])
    # the floor follows the gradients, not the loss: 1e-3 is not noise next to kernel entries 1-3
    small = np.array([1e-3, 2e-3])
    assert not layouts._agree([loss * 1e3, kernel, small], [loss * 1e3, kernel, -small])
    assert layouts.disagreement([kernel], [kernel[:2]]) == float("inf")


def test_search_stops_trying_candidates_past_its_budget() -> None:
    seconds = {"a": 0.02, "b": 0.0}
    choice = layouts.search(["a", "b"], _sleeper(seconds, {}), budget_s=0.01)
    assert choice.layout == "a"
    assert "budget" in choice.dropped["b"]
    assert choice.why.startswith("search budget")  # not "measured": nothing was compared
    only = layouts.search(["a"], _sleeper(seconds, {}))
    assert only.why == "only candidate" and only.layout == "a"


def test_a_bad_cached_choice_is_rechecked_and_replaced(_own_cache: Path) -> None:
    """A choice cached under load or on a too-small budget ("slow" here) does not stick: the next
    warm-up times it against its search's runner-up, sees it lose, and searches again."""
    seconds = {"slow": 0.03, "fast": 0.002, "other": 0.01}
    key = "problem"
    bad = layouts.LayoutChoice(
        "slow", "measured", ("slow", "fast", "other"), {"slow": 1.0, "fast": 2.0}
    )
    layouts.store_choice(key, bad)
    choice = layouts.choose(list(seconds), _sleeper(seconds, {}), None, key)
    assert choice.layout == "fast"
    assert "searched again: slow lost its re-check to fast" in choice.why
    assert set(choice.recheck_ms) == {"slow", "fast"}
    entry = layouts.cached_choice(key)
    assert entry is not None and entry["layout"] == "fast"
    again = layouts.choose(list(seconds), _sleeper(seconds, {}), None, key)  # now it holds
    assert again.layout == "fast" and again.why == "cached, re-checked"
    assert again.recheck_ms["fast"] < again.recheck_ms["other"]


def test_a_cached_choice_with_no_runner_up_is_rechecked_too(_own_cache: Path) -> None:
    """An entry that names no other timing (edited by hand, or left by an older version) is
    re-checked against the first other candidate, the most promising by construction."""
    seconds = {"fast": 0.002, "slow": 0.03}
    layouts.store_choice("k", layouts.LayoutChoice("slow", "measured", ("fast", "slow"), {}))
    choice = layouts.choose(["fast", "slow"], _sleeper(seconds, {}), None, "k")
    assert choice.layout == "fast" and "slow lost its re-check to fast" in choice.why


def test_a_choice_measured_on_a_busy_machine_is_provisional(
    _own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other processes taking the CPU during a search make its choice provisional; a quiet
    re-check later searches again and caches it for good."""
    seconds = {"a": 0.01, "b": 0.002}
    busy = iter([0.9, 0.0, 0.0])  # the first search, the re-check, the second search
    monkeypatch.setattr(layouts, "others_busy", lambda start, end: next(busy))
    first = layouts.choose(list(seconds), _sleeper(seconds, {}), None, "k")
    assert first.layout == "b" and first.why.startswith("measured, provisional")
    assert (layouts.cached_choice("k") or {}).get("provisional") is True
    second = layouts.choose(list(seconds), _sleeper(seconds, {}), None, "k")
    assert "searched again: b was provisional" in second.why
    assert (layouts.cached_choice("k") or {}).get("provisional") is False


def test_others_busy_sees_another_process_but_not_this_one() -> None:
    """The share of the machine another process takes: a CPU-bound child counts, our own busy
    loop does not. Up to three tries: on a machine that other jobs load unevenly, one window of
    a second can see their load drop just as the child starts (a CI box is shared)."""
    import subprocess
    import sys

    seen = []
    for _ in range(3):
        start = layouts.CpuSnapshot.now()
        end_at = time.perf_counter() + 0.5
        while time.perf_counter() < end_at:  # our own work
            pass
        own_only = layouts.others_busy(start, layouts.CpuSnapshot.now())
        child = subprocess.Popen(
            [sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<1.5: pass"]
        )
        try:
            time.sleep(0.3)
            start = layouts.CpuSnapshot.now()
            time.sleep(1.0)
            with_child = layouts.others_busy(start, layouts.CpuSnapshot.now())
        finally:
            child.wait(timeout=30)
        seen.append((own_only, with_child))
        # a child busy on one core adds a share; a machine already saturated by others stays ~1
        if with_child >= min(own_only + 0.4 / (os.cpu_count() or 1), 0.9):
            return
    raise AssertionError(f"the child's share was never seen: (own, with child) = {seen}")


@pytest.mark.slow
def test_choice_is_measured_then_cached_then_forced(
    _own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a few candidates (a quicker test), with room for a busy machine
    monkeypatch.setattr(layouts, "SEARCH_BUDGET_S", 10.0)
    # a busy machine would make the choice provisional (tested on its own above)
    monkeypatch.setattr(layouts, "OTHERS_BUSY_LIMIT", 1.01)
    cfg = MamlConfig(alpha=0.1, order=1, loss="xent")
    params = [tf.constant(w) for w in NET.init(0)]
    tasks = _tasks(3)
    first = CompiledMaml(NET, cfg)
    grads, _ = first.gradients(params, tasks)
    assert first.layout is not None and first.layout.why == "measured"
    assert _own_cache.exists()
    assert first.layout.layout in first.layout.candidates

    second = CompiledMaml(NET, cfg)  # a later process: same machine, shapes and config
    again, _ = second.gradients(params, tasks)
    assert second.layout is not None and second.layout.why.startswith("cached")
    assert second.layout.layout == first.layout.layout
    for a, b in zip(grads, again, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    monkeypatch.setenv("DMAML_LAYOUT", "reference")
    forced = CompiledMaml(NET, cfg)
    forced.gradients(params, tasks)
    assert forced.layout is not None and forced.layout.why == "forced"
    assert forced.layout.layout == "reference"

    monkeypatch.setenv("DMAML_LAYOUT", "no_such_layout")
    with pytest.raises(ValueError, match="DMAML_LAYOUT"):
        CompiledMaml(NET, cfg).gradients(params, tasks)


@pytest.mark.slow
@pytest.mark.parametrize(
    "layout",
    ["auto/3", "per_task/2", pytest.param("grouped/3", marks=NEEDS_GROUPED_GRADIENT)],
)
@pytest.mark.parametrize("aggregation", ["sum", "mean"])
@pytest.mark.parametrize("order", [1, 2])
def test_chunked_meta_gradients_match_the_whole_batch_in_float64(
    monkeypatch: pytest.MonkeyPatch, order: int, aggregation: str, layout: str
) -> None:
    """5 tasks in chunks (3 + 2, or 2 + 2 + 1; float32, fast layouts) == all 5 at once (float64
    reference), to second order; the Adam step on top is the same function either way."""
    monkeypatch.setenv("DMAML_LAYOUT", layout)
    cfg = MamlConfig(alpha=0.1, order=order, loss="xent", aggregation=aggregation)  # type: ignore[arg-type]
    compiled = CompiledMaml(NET, cfg)
    params = [tf.constant(w) for w in NET.init(1)]
    grads, metrics = compiled.gradients(params, _tasks(5, seed=2))
    assert compiled.layout is not None and compiled.layout.layout == layout
    params64 = [tf.constant(w.astype(np.float64)) for w in NET.init(1)]
    whole = tf.function(lambda p, t: meta_gradients(NET, cfg, p, t))
    ref_grads, ref_metrics = whole(params64, _tasks(5, tf.float64, seed=2))
    np.testing.assert_allclose(metrics.loss_sum, ref_metrics.loss_sum, rtol=1e-4)
    np.testing.assert_allclose(metrics.accuracy, ref_metrics.accuracy, atol=1e-6)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, r, rtol=2e-3, atol=2e-3 * np.abs(r.numpy()).max())
    traced = compiled.tracing_count()
    compiled.gradients(params, _tasks(5, seed=3))
    assert compiled.tracing_count() == traced  # same shapes: the traced graphs are reused


def test_layout_names_parse() -> None:
    assert maml.parse_layout("grouped/8") == ("grouped", 8)
    assert maml.parse_layout("auto") == ("auto", None)
    for bad in ("grouped/0", "grouped/x", "nope/8", "nope"):
        with pytest.raises(ValueError, match="expected one of"):
            maml.parse_layout(bad)
    assert all("/" in name for name in maml.layout_candidates(1, grouped_ok=False))


def test_chunked_validation_matches_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = MamlConfig(alpha=0.1, order=1, loss="xent")
    params = [tf.constant(w) for w in NET.init(2)]
    tasks = _tasks(5, seed=4)
    whole = CompiledMaml(NET, cfg).validate(params, tasks, 2)
    monkeypatch.setenv("DMAML_LAYOUT", "per_task/2")
    chunked = CompiledMaml(NET, cfg).validate(params, tasks, 2)
    for a, b in zip(whole, chunked, strict=True):
        assert a.shape == (3, 5)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
