"""Progress a person can read while a sweep runs: case k/N, run i/R, elapsed, ETA, the last
run's time and the latest validation value.

On a terminal it is one live tqdm line; when stderr is not a terminal (CI, nohup, a pipe) it is a
plain line every ``interval_s`` seconds (and at every case start), so logs stay readable. The
runner only emits ``ProgressEvent``s; how they are shown is decided here.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Literal, TextIO

from tqdm import tqdm

EventKind = Literal["sweep", "case", "run", "validation", "skipped"]


@dataclass(frozen=True)
class ProgressEvent:
    kind: EventKind
    case_id: str
    seed: int
    case_index: int  # 1-based, over every case-seed of the sweep
    case_total: int
    runs: int = 0  # runs of this case-seed, the warm-up included ("sweep": of the whole sweep)
    run: int = 0  # runs of this case-seed done so far
    wall_s: float | None = None  # the last run's wall time
    metric: str = ""  # the domain's primary metric (loss, accuracy, return), for validation events
    value: float | None = None


def _clock(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ProgressLine:
    """Shows ``ProgressEvent``s; ``total_runs`` is every run of the sweep still to do (warm-ups
    included), which the ETA divides by: elapsed / runs done x runs left, labelled '~'."""

    def __init__(
        self,
        total_runs: int,
        stream: TextIO | None = None,
        interval_s: float = 30.0,
        live: bool | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.total_runs = max(1, total_runs)
        self.interval_s = interval_s
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.done = 0
        self.last_print = -float("inf")
        self.latest_validation = ""
        self.last_run = ""
        self.where = ""
        self.bar: tqdm | None = None
        if self.live:
            self.bar = tqdm(
                total=self.total_runs, file=self.stream, unit="run", dynamic_ncols=True,
                bar_format="{l_bar}{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}",
            )  # fmt: skip

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "sweep":  # what is left to run, known once the store was read
            self.total_runs = max(1, event.runs)
            if self.bar is not None:
                self.bar.total = self.total_runs
                self.bar.refresh()
            return
        self.where = f"case {event.case_index}/{event.case_total} {event.case_id} seed {event.seed}"
        if event.kind == "run":
            self.done += 1
            if event.wall_s is not None:
                self.last_run = f"last run {event.wall_s * 1e3:.1f} ms"
            self.where += f" run {event.run}/{event.runs}"
        elif event.kind == "validation" and event.value is not None:
            self.latest_validation = f"val {event.metric} {event.value:.4g}"
        if self.bar is not None:
            if event.kind == "run":
                self.bar.update(1)
            self.bar.set_description_str(self.where, refresh=False)
            self.bar.set_postfix_str(self._details(), refresh=True)
            return
        now = time.monotonic()
        if event.kind in ("case", "skipped") or now - self.last_print >= self.interval_s:
            self.last_print = now
            suffix = " (already complete, skipped)" if event.kind == "skipped" else ""
            print(f"[{_clock(now - self.started)}] {self.where}{suffix}; {self._eta(now)}"
                  f"{'; ' + self._details() if self._details() else ''}",
                  file=self.stream, flush=True)  # fmt: skip

    def _details(self) -> str:
        return ", ".join(x for x in (self.last_run, self.latest_validation) if x)

    def _eta(self, now: float) -> str:
        elapsed = now - self.started
        if self.done == 0:
            return f"elapsed {_clock(elapsed)}, ETA unknown"
        left = max(0, self.total_runs - self.done) * elapsed / self.done
        return f"elapsed {_clock(elapsed)}, ETA ~{_clock(left)}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
