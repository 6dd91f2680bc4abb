"""Which implementation of the task-batched conv net runs: chosen by timing, like cuDNN's benchmark
mode or FFTW's wisdom, and remembered on disk.

Why measure: the fastest layout depends on the machine. On an AVX2-only CPU (oneDNN off) per-task
conv chains came within 1.2x of a shared-weight control, on an AVX-512 CPU with oneDNN on they were
2.8x, and grouped convs (tasks as channel groups) exist with a CPU gradient only where oneDNN is on.
So ``search`` runs every candidate on the actual shapes for a few steps (interleaved, so a busy
neighbour slows them alike), drops any whose outputs disagree with the first (the default layout,
tested against the float64 reference to second order), and keeps the fastest. The choice is cached
in ``$XDG_CACHE_HOME/dmaml-bench/layouts.json`` under a key naming everything that decides kernel
speed (CPU model and flags, TensorFlow version, oneDNN state, thread settings, model, config,
shapes), so later processes skip the search.

``DMAML_LAYOUT=<layout>[/<tasks per chunk>]`` forces a layout (one of ``models.LAYOUTS``, e.g.
``grouped/8``; checked by ``maml.parse_layout``); ``DMAML_LAYOUT_CACHE`` moves
the cache file (``off`` disables it). Every choice says why it was made: "measured", "cached",
"forced" or "only candidate".
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dmaml_core.files import atomic_write_bytes

# Total time the search may spend warming candidates up before it stops trying new ones (the first
# candidate always runs): part of the 15 s warm-up target, the rest is the chosen step's own.
SEARCH_BUDGET_S = 5.0
SEARCH_ROUNDS = 3  # timed rounds over the surviving candidates
DROP_SLOWER_THAN = 1.5  # after the first round, a candidate this much slower than the best stops
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "fma")


@dataclass(frozen=True)
class LayoutChoice:
    """What runs and why; stored with benchmarks and records."""

    layout: str
    why: str  # "measured", "cached", "forced", "only candidate", "search budget: ..."
    candidates: tuple[str, ...] = ()
    median_ms: dict[str, float] = field(default_factory=dict)  # per candidate, this search
    dropped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not used
    search_s: float = 0.0
    detail: str = ""  # forced by what, cached where

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["candidates"] = list(self.candidates)
        return record


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN custom ops are on in this process (TensorFlow's own answer)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def _cpu() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in REPORTED_CPU_FLAGS if f in have]
                break
    except OSError:
        pass
    return model, flags


def fingerprint() -> dict[str, Any]:
    """What decides which kernels run and how fast: a cached choice is reused only if all match."""
    import tensorflow as tf

    model, flags = _cpu()
    threading = tf.config.threading
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cores": cores,
        "tensorflow": tf.__version__,
        "onednn": onednn_enabled(),
        "gpus": len(tf.config.list_logical_devices("GPU")),
        "intra_op_threads": threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": threading.get_inter_op_parallelism_threads(),
    }


def cache_path() -> Path | None:
    """``DMAML_LAYOUT_CACHE`` (``off``: no cache), else the user cache dir."""
    env = os.environ.get("DMAML_LAYOUT_CACHE", "").strip()
    if env.lower() == "off":
        return None
    if env:
        return Path(env)
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(root) / "dmaml-bench" / "layouts.json"


def cache_key(problem: dict[str, Any]) -> str:
    return json.dumps({"machine": fingerprint(), **problem}, sort_keys=True, default=str)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or unreadable: measure again (and overwrite)
    return data if isinstance(data, dict) else {}


def cached_choice(key: str) -> dict[str, Any] | None:
    path = cache_path()
    if path is None:
        return None
    entry = _load(path).get(key)
    return entry if isinstance(entry, dict) and isinstance(entry.get("layout"), str) else None


def store_choice(key: str, choice: LayoutChoice) -> None:
    """Read-modify-write with an atomic replace: a concurrent writer may win, never corrupt (a lost
    entry is measured again next time)."""
    path = cache_path()
    if path is None:
        return
    data = _load(path)
    data[key] = {**choice.as_record(), "stored_at": time.time()}
    with contextlib.suppress(OSError):  # a read-only home: the choice still holds in this process
        atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


# How far two correct float32 layouts may differ, relative to a tensor's largest entry. Measured on
# the Omniglot step (T = 128, random images, first order): every fused-batch-norm layout is up to
# 4.5e-2 off the float64 result (the hand-written float32 batch norm 4.4e-3), and two of them
# differed by 1.3e-2; a broken layout (tasks mixed up, a wrong filter) is off by O(1).
AGREE_TOLERANCE = 0.1
# A tensor whose entries are all below this share of the largest entry of any output is rounding
# noise that layouts need not agree on: the gradient of a conv bias that batch norm removes again
# (``finn_net``) is about 1e-9 of the kernels' and differs in sign from one layout to the next.
NOISE_FLOOR = 1e-4


def _agree(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> bool:
    """Whether ``out`` matches ``ref`` to ``AGREE_TOLERANCE`` of each tensor's largest entry (or
    of ``NOISE_FLOOR`` times the largest entry of the others after the first, whichever is
    larger: ``search`` passes the loss first, then the gradients)."""
    if len(ref) != len(out):
        return False
    # the largest gradient entry (``ref[0]`` is the loss, a sum over tasks, on another scale)
    overall = max((float(np.abs(r).max()) for r in ref[1:] if r.size), default=0.0)
    for r, o in zip(ref, out, strict=True):
        scale = max(float(np.abs(r).max()) if r.size else 0.0, NOISE_FLOOR * overall)
        tol = AGREE_TOLERANCE
        if r.shape != o.shape or not np.allclose(o, r, rtol=tol, atol=tol * scale + 1e-6):
            return False
    return True


def search(
    candidates: Sequence[str],
    prepare: Callable[[str], Callable[[], Sequence[np.ndarray]]],
    budget_s: float | None = None,
    rounds: int = SEARCH_ROUNDS,
) -> LayoutChoice:
    """Time ``candidates`` and return the fastest that agrees with the first.

    ``prepare(name)`` returns a function running one step with that layout and returning its
    outputs as numpy arrays (reading them back ends the step). Each candidate's first call (tracing
    included) is untimed; a candidate is not started once the warm-ups have used ``budget_s``
    (default ``SEARCH_BUDGET_S``).
    Then ``rounds`` interleaved timed rounds (fewer once the search has taken twice the budget);
    after the first, candidates slower than ``DROP_SLOWER_THAN`` times the best stop."""
    if not candidates:
        raise ValueError("no candidate layout")
    budget_s = SEARCH_BUDGET_S if budget_s is None else budget_s
    start = time.perf_counter()
    runs: dict[str, Callable[[], Sequence[np.ndarray]]] = {}
    dropped: dict[str, str] = {}
    reference: Sequence[np.ndarray] | None = None
    for name in candidates:
        if runs and time.perf_counter() - start > budget_s:
            dropped[name] = f"not tried: warm-ups used the {budget_s:g} s search budget"
            continue
        run = prepare(name)
        outputs = run()
        if reference is None:
            reference = outputs
        elif not _agree(reference, outputs):
            dropped[name] = f"outputs disagree with {candidates[0]}"
            continue
        runs[name] = run
    times: dict[str, list[float]] = {name: [] for name in runs}
    active = list(runs) if len(runs) > 1 else []  # one candidate: nothing to compare
    for r in range(rounds):
        if r > 0 and time.perf_counter() - start > 2 * budget_s:
            break  # a slow machine or large steps: one round (medians of fewer) decides
        for name in active:
            begin = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - begin)
        if r == 0 and active:
            best = min(times[n][0] for n in active)
            for name in [n for n in active if times[n][0] > DROP_SLOWER_THAN * best]:
                dropped[name] = f"first timed step > {DROP_SLOWER_THAN:g}x the best"
                active.remove(name)
    median_ms = {name: float(np.median(t)) * 1e3 for name, t in times.items() if t}
    contenders = {n: median_ms[n] for n in runs if n in median_ms and n not in dropped}
    best_name = min(contenders, key=contenders.__getitem__) if contenders else next(iter(runs))
    return LayoutChoice(
        layout=best_name,
        why=(
            "only candidate"
            if len(candidates) == 1
            else "measured"
            if len(median_ms) > 1
            else "search budget: one candidate ran"  # not cached: a later process tries again
        ),
        candidates=tuple(candidates),
        median_ms=median_ms,
        dropped=dropped,
        search_s=time.perf_counter() - start,
    )
