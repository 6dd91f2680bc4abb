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

``DMAML_LAYOUT=<layout>[/<tasks per chunk>]`` forces a layout (one of ``LAYOUTS``, e.g.
``grouped/8``; checked by ``parse_layout``, before anything runs); ``DMAML_LAYOUT_CACHE`` moves
the cache file (``off`` disables it). Every choice says why it was made: "measured", "cached",
"forced" or "only candidate". A cached choice is re-checked at every warm-up against its runner-up
and a choice measured on a busy machine is provisional (``choose``), so none made under load
sticks.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dmaml_core.files import atomic_write_bytes

# Total time the search may spend warming candidates up before it stops trying new ones (the first
# candidate always runs): part of the 15 s warm-up target, the rest is the chosen step's own.
SEARCH_BUDGET_S = 5.0
SEARCH_ROUNDS = 3  # timed rounds over the surviving candidates
DROP_SLOWER_THAN = 1.5  # after the first round, a candidate this much slower than the best stops
# ConvNet.layout values. "auto": per-task chains where a pass is differentiated once, task channels
# where twice (the default). "reference" is the im2col path in float32 (slow, but its tracing does
# not grow with T and it runs everywhere, XLA included). Here, not in ``models``, so that
# ``DMAML_LAYOUT`` is checked without importing TensorFlow.
LAYOUTS = ("auto", "per_task", "task_channels", "grouped", "reference")
LAYOUT_ENV = "DMAML_LAYOUT"
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "fma")


def parse_layout(name: str) -> tuple[str, int | None]:
    """``"grouped/8"`` -> ("grouped", 8); ``"grouped"`` -> ("grouped", None: the default chunk)."""
    layout, _, chunk = name.partition("/")
    if layout not in LAYOUTS or (chunk and not (chunk.isdigit() and int(chunk) >= 1)):
        raise ValueError(
            f"layout {name!r}: expected one of {', '.join(LAYOUTS)}, optionally /<tasks per chunk>"
        )
    return layout, int(chunk) if chunk else None


def check_layout_env() -> None:
    """Raise ValueError naming ``DMAML_LAYOUT`` when it is set to something ``parse_layout``
    refuses (the CLI calls this before a results folder exists)."""
    forced = os.environ.get(LAYOUT_ENV, "").strip()
    if forced:
        try:
            parse_layout(forced)
        except ValueError as err:
            raise ValueError(f"{LAYOUT_ENV}: {err}") from None


@dataclass(frozen=True)
class LayoutChoice:
    """What runs and why; stored with benchmarks and records."""

    layout: str
    # "measured" (", provisional ..."), "cached" (", re-checked"), "forced", "only candidate",
    # "search budget: ...", or a search again after a re-check ("...; searched again: ...")
    why: str
    candidates: tuple[str, ...] = ()
    median_ms: dict[str, float] = field(default_factory=dict)  # per candidate, this search
    dropped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not used
    search_s: float = 0.0
    detail: str = ""  # forced by what, cached where
    # share of the machine's CPU time that other processes took while this choice was timed
    # (``others_busy``); None where nothing was timed
    others_busy: float | None = None
    # a cached choice timed again against its runner-up at this warm-up: {layout: median ms}
    recheck_ms: dict[str, float] = field(default_factory=dict)

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


def store_choice(key: str, choice: LayoutChoice, provisional: bool = False) -> None:
    """Read-modify-write with an atomic replace: a concurrent writer may win, never corrupt (a lost
    entry is measured again next time). ``provisional``: measured on a busy machine (``choose``
    searches again once it is quiet)."""
    path = cache_path()
    if path is None:
        return
    data = _load(path)
    data[key] = {**choice.as_record(), "provisional": provisional, "stored_at": time.time()}
    with contextlib.suppress(OSError):  # a read-only home: the choice still holds in this process
        atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=1).encode()))


# How far two correct float32 layouts may differ (``disagreement``) where the meta-gradient is
# smooth (``kink_free`` weights: no ReLU near its kink). Measured against the float64 reference
# (tests/dmaml_core/test_layout_agreement.py: both nets, 1- and 5-shot, T = 1 and 4, both orders,
# 1 and 2 inner steps, alpha 0.4, oneDNN on and off): one inner step at most 6e-5, two inner steps
# at most 3.2e-4 (each step at alpha 0.4 amplifies rounding; the float32 ``reference`` layout
# itself reaches 1.9e-4 there). A broken layout (tasks mixed up, a dropped second-order term) is
# off by 1e-2 to O(1). On random weights correct layouts differ by up to 0.4: a ReLU that float32
# rounding flips moves a first-block gradient by about 1 / sqrt(N * H * W) (issue 18), so
# agreement is checked where it means something.
AGREE_TOLERANCE = 5e-4
# A gradient that sums many cancelling terms (a first-block batch-norm offset: 1e-5 of the largest
# gradient entry) carries the rounding of its terms, not of its value; its error is taken relative
# to this share of the largest gradient entry when that is larger than its own largest entry. An
# exactly-zero gradient (``finn_net``'s conv bias) must stay within it, too.
NOISE_FLOOR = 1e-3


def disagreement(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> float:
    """Largest ``|out - ref|`` of any tensor relative to that tensor's largest ``|ref|`` entry, or
    to ``NOISE_FLOOR`` times the largest entry of the gradients after the first, whichever is
    larger (``search`` passes the loss first, then the gradients); ``inf`` if shapes differ."""
    if len(ref) != len(out):
        return float("inf")
    # the largest gradient entry (``ref[0]`` is the loss, a sum over tasks, on another scale)
    overall = max((float(np.abs(r).max()) for r in ref[1:] if r.size), default=0.0)
    worst = 0.0
    for r, o in zip(ref, out, strict=True):
        if r.shape != o.shape:
            return float("inf")
        if not r.size:
            continue
        diff = float(np.abs(np.asarray(o, np.float64) - r).max())
        scale = max(float(np.abs(r).max()), NOISE_FLOOR * overall)
        if diff > 0.0:
            worst = max(worst, diff / scale if scale > 0.0 else float("inf"))
    return worst


def _agree(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> bool:
    """Whether ``out`` matches ``ref`` within ``AGREE_TOLERANCE`` (``disagreement``)."""
    return disagreement(ref, out) <= AGREE_TOLERANCE


# A search during which other processes took more than this share of the machine's CPU time is
# used but not cached (its ranking may be the neighbour's, not the kernels'): a later, quieter
# warm-up searches again. Issue 19: a choice made beside two CPU-bound processes stuck at 1.6-2x.
OTHERS_BUSY_LIMIT = 0.25
# A cached choice is timed again at every warm-up against the runner-up of its search; when the
# runner-up is faster by more than this factor the whole search runs again.
RECHECK_MARGIN = 1.1
RECHECK_ROUNDS = 3


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy CPU seconds and this process's own, at one moment."""

    machine_busy_s: float
    own_s: float
    wall_s: float

    @classmethod
    def now(cls) -> CpuSnapshot:
        import psutil

        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        own = os.times()
        return cls(busy, own.user + own.system, time.perf_counter())


def others_busy(start: CpuSnapshot, end: CpuSnapshot) -> float:
    """Share of the machine's CPU capacity used by other processes between two snapshots (0:
    quiet; 1: every core busy with someone else's work)."""
    cores = os.cpu_count() or 1
    wall = max(end.wall_s - start.wall_s, 1e-9)
    others = (end.machine_busy_s - start.machine_busy_s) - (end.own_s - start.own_s)
    return min(max(others / (wall * cores), 0.0), 1.0)


def runner_up(entry: dict[str, Any], candidates: Sequence[str]) -> str | None:
    """The fastest candidate but the chosen one in a cached search's timings (None if it timed
    no other)."""
    times = {
        name: ms
        for name, ms in dict(entry.get("median_ms", {})).items()
        if name != entry.get("layout") and name in candidates
    }
    return min(times, key=times.__getitem__) if times else None


def recheck_keeps(choice: LayoutChoice, cached: str) -> bool:
    """Whether a re-check (``search`` over the cached layout and its runner-up) keeps the cached
    one: it does unless the runner-up agreed and was faster by more than ``RECHECK_MARGIN``."""
    times = choice.median_ms
    others = [n for n in times if n != cached and n not in choice.dropped]
    if cached not in times or not others:
        return cached in times or not others
    return min(times[n] for n in others) * RECHECK_MARGIN >= times[cached]


def search(
    candidates: Sequence[str],
    prepare: Callable[[str], Callable[[], Sequence[np.ndarray]]],
    budget_s: float | None = None,
    rounds: int = SEARCH_ROUNDS,
    check: Callable[[str], Sequence[np.ndarray]] | None = None,
) -> LayoutChoice:
    """Time ``candidates`` and return the fastest that agrees with the first.

    ``prepare(name)`` returns a function running one step with that layout and returning its
    outputs as numpy arrays (reading them back ends the step). Each candidate's first call (tracing
    included) is untimed; a candidate is not started once the warm-ups have used ``budget_s``
    (default ``SEARCH_BUDGET_S``). ``check(name)``, where given, returns the outputs that the
    agreement test compares (``CompiledMaml`` runs the step on ``kink_free`` weights of the same
    shapes, so nothing is traced again); else the warm-up's outputs are compared.
    Then ``rounds`` interleaved timed rounds (fewer once the search has taken twice the budget);
    after the first, candidates slower than ``DROP_SLOWER_THAN`` times the best stop."""
    if not candidates:
        raise ValueError("no candidate layout")
    budget_s = SEARCH_BUDGET_S if budget_s is None else budget_s
    start = time.perf_counter()
    cpu_start = CpuSnapshot.now()
    runs: dict[str, Callable[[], Sequence[np.ndarray]]] = {}
    dropped: dict[str, str] = {}
    reference: Sequence[np.ndarray] | None = None
    for name in candidates:
        if runs and time.perf_counter() - start > budget_s:
            dropped[name] = f"not tried: warm-ups used the {budget_s:g} s search budget"
            continue
        run = prepare(name)
        outputs = run()
        if check is not None:
            outputs = check(name)
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
        others_busy=others_busy(cpu_start, CpuSnapshot.now()),
    )


def _search_and_store(
    candidates: Sequence[str],
    prepare: Callable[[str], Callable[[], Sequence[np.ndarray]]],
    check: Callable[[str], Sequence[np.ndarray]] | None,
    key: str,
) -> LayoutChoice:
    choice = search(candidates, prepare, check=check)
    if choice.why != "measured":
        return choice  # nothing compared: a later process tries again
    busy = choice.others_busy or 0.0
    provisional = busy > OTHERS_BUSY_LIMIT
    store_choice(key, choice, provisional=provisional)
    if provisional:
        return replace(
            choice,
            why=f"measured, provisional (other processes took {busy:.0%} of the CPU)",
        )
    return choice


def choose(
    candidates: Sequence[str],
    prepare: Callable[[str], Callable[[], Sequence[np.ndarray]]],
    check: Callable[[str], Sequence[np.ndarray]] | None,
    key: str,
) -> LayoutChoice:
    """The layout for one problem (``key``: ``cache_key``), one of ``candidates``.

    Nothing cached: ``search``, and cache the result unless other processes took more than
    ``OTHERS_BUSY_LIMIT`` of the CPU meanwhile (then it is cached as *provisional*). Cached: time
    it again, interleaved, against the runner-up of its search (a second traced candidate: a few
    seconds of warm-up); search again when the runner-up is faster by more than
    ``RECHECK_MARGIN``, or when the cached choice was provisional and this machine is quiet now.
    So a choice made under load, or on too small a budget, never sticks."""
    entry = cached_choice(key)
    if entry is None or entry.get("layout") not in candidates:
        return _search_and_store(candidates, prepare, check, key)
    cached = str(entry["layout"])
    base = LayoutChoice(
        cached,
        "cached",
        tuple(candidates),
        dict(entry.get("median_ms", {})),
        dict(entry.get("dropped", {})),
        detail=str(cache_path()),
    )
    # an entry whose search timed nothing else (edited by hand, or written by an older version)
    # is re-checked against the most promising other candidate its search did not drop (for
    # disagreeing, for being far slower, or for the budget)
    dropped = dict(entry.get("dropped", {}))
    rival = runner_up(entry, candidates) or next(
        (c for c in candidates if c != cached and c not in dropped), None
    )
    if rival is None:
        return base  # the only candidate
    again = search([cached, rival], prepare, rounds=RECHECK_ROUNDS, check=check)
    quiet = (again.others_busy or 0.0) <= OTHERS_BUSY_LIMIT
    keeps = recheck_keeps(again, cached)
    if keeps and not (entry.get("provisional") and quiet):
        return replace(
            base,
            why="cached, re-checked",
            recheck_ms=again.median_ms,
            others_busy=again.others_busy,
        )
    reason = f"{cached} lost its re-check to {rival}" if not keeps else f"{cached} was provisional"
    fresh = _search_and_store(candidates, prepare, check, key)
    return replace(fresh, why=f"{fresh.why}; searched again: {reason}", recheck_ms=again.median_ms)
