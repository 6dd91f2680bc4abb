"""Timings at one reference speed: each run divided by its block's calibration drift.

Why: cases of a sweep are measured minutes apart; a neighbour that loads the machine while one
case runs makes that case look slow and every ratio to it wrong (issue 19: W = 2 at 202 % of
W = 1 quiet, 122 % with the W = 1 case loaded). The runner brackets every block of timed runs with
a fixed calibration job (``harness.calibration``). Here a block's *drift* is the mean of its two
bracketing samples over the *reference*: the median of every sample of that job in the report.
A run's time is divided by its block's drift, so every case is timed as if the machine ran at
the reference speed throughout; the raw time stays in ``wall_raw_s`` / ``projected_raw_s``.

Assumes that the load slows the calibration job and the case alike (measured: README "How we
measure"); a block whose drift is beyond the plan's ``drift_threshold`` is flagged, because there
that assumption carries the most weight. Records without calibration samples (older folders,
``calibration = "off"``) keep their raw times and the report says so.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

NORMALISED = ("wall_s", "projected_s")


@dataclass
class SeedDrift:
    """One case-seed's blocks: (first run, drift, load average) per block, in run order."""

    blocks: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def worst(self) -> float:
        """The largest slow-down or speed-up factor of any block (>= 1; 1: no drift)."""
        return max((max(d, 1.0 / d) for _, d, _ in self.blocks), default=math.nan)


@dataclass
class Reference:
    """The reference speed of one calibration job: the median sample of the report."""

    calibration: str
    seconds: float
    samples: int


def references(calibrations: list[dict[str, Any]]) -> dict[str, Reference]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for c in calibrations:
        if isinstance(c.get("seconds"), int | float) and c["seconds"] > 0:
            by_kind[str(c.get("calibration", "?"))].append(float(c["seconds"]))
    return {k: Reference(k, statistics.median(v), len(v)) for k, v in by_kind.items()}


def normalise(
    runs: list[dict[str, Any]], calibrations: list[dict[str, Any]], refs: dict[str, Reference]
) -> SeedDrift:
    """Divide the timings of one case-seed's ``runs`` (in place) by their block's drift; the
    block of run r lies between the last sample taken before it and the first taken after it
    (the warm-up, run 0, takes the first block's). Returns the blocks' drifts."""
    samples = sorted(
        (int(c["before_run"]), float(c["seconds"]), str(c.get("calibration", "?")), c)
        for c in calibrations
        if isinstance(c.get("seconds"), int | float) and c["seconds"] > 0
    )
    drift = SeedDrift()
    if not samples:
        return drift
    for i, (first, seconds, kind, record) in enumerate(samples):
        after = samples[i + 1][1] if i + 1 < len(samples) else seconds
        if i + 1 < len(samples) or len(samples) == 1:
            drift.blocks.append(
                (first, (seconds + after) / 2 / refs[kind].seconds, float(record.get("load1", 0)))
            )
    starts = [b[0] for b in drift.blocks]
    for r in runs:
        if "drift" in r:  # already normalised
            continue
        index = max(bisect.bisect_right(starts, int(r["run_index"])) - 1, 0)
        factor = drift.blocks[index][1]
        for key in NORMALISED:
            if isinstance(r.get(key), int | float):
                r[key.replace("_s", "_raw_s")] = r[key]
                r[key] = r[key] / factor
        r["drift"] = factor
    return drift
