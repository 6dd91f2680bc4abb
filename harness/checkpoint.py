"""Exact checkpoints of a case-seed's trained state, and the record selection that makes a resumed
case-seed count every run once.

A checkpoint after N runs holds everything run N depends on: theta, every logical worker's Adam
state and task-stream position (pulled back from the worker processes or actors), the loss history
the weight generator sees, the generator's name and parameters, the task-parallel learner's own
Adam state, the run counter and the seed of the validation task set. Restoring it in a fresh
process continues the same computation bit for bit.

On disk: ``<results folder>/checkpoints/<case_id>/seed<s>/run<NNNNNN>.npz`` plus a
``.sha256`` file holding the checksum of the npz's bytes. The npz is written atomically first, the
checksum second, so a kill at any moment leaves either a complete, checksummed checkpoint or one
that ``latest`` rejects (no or wrong checksum, truncated or unreadable), falling back to the
older one. The last ``KEEP`` checkpoints are kept.

The npz holds only arrays and one JSON document (``allow_pickle=False`` reads it back): every array
of the nested state is stored as its own npz entry, bit-exact, and referenced from the JSON by
name; numpy's generator states hold 128-bit integers, which JSON keeps exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dmaml_core.files import atomic_write_bytes

SCHEMA_VERSION = 1
KEEP = 2
CHECKPOINTS = "checkpoints"
DEFAULT_BUDGET = 0.02  # adaptive schedule: checkpoints may cost at most 2% of the run time
FIRST_COST_S = 0.05  # assumed cost of a checkpoint until one was measured (10-50 ms measured)
_NAME = re.compile(r"^run(\d{6,})\.npz$")
_ARRAY = "__array__"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or used; the message names the file."""


def validation_seed(seed: int) -> list[int]:
    """Seed of the held-out validation tasks: a stream no worker uses (workers use [seed, id])."""
    return [seed, 2**31 - 1]


def checkpoint_dir(results: Path, case_id: str, seed: int) -> Path:
    return results / CHECKPOINTS / case_id / f"seed{seed}"


# -- nested state <-> (JSON, arrays) --------------------------------------------------------------


def pack(state: Any) -> tuple[str, dict[str, np.ndarray]]:
    """(JSON text, arrays): each numpy array or scalar becomes an npz entry, the rest JSON."""
    arrays: dict[str, np.ndarray] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, np.ndarray | np.generic):
            key = f"a{len(arrays)}"
            arrays[key] = np.asarray(value)
            return {_ARRAY: key}
        if isinstance(value, dict):
            if _ARRAY in value:
                raise CheckpointError(f"state key {_ARRAY!r} is reserved")
            return {str(k): walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise CheckpointError(f"cannot store a {type(value).__name__} in a checkpoint")

    return json.dumps(walk(state)), arrays


def unpack(text: str, arrays: dict[str, np.ndarray]) -> Any:
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_ARRAY}:
                return arrays[value[_ARRAY]]
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(json.loads(text))


# -- files ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    runs_done: int
    meta: dict[str, Any]  # identity (case_id, config_hash, seed), validation_seed, written
    state: Any  # the learner's get_state()


@dataclass(frozen=True)
class Written:
    path: Path
    bytes: int
    seconds: float


def encode(runs_done: int, state: Any, meta: dict[str, Any]) -> bytes:
    text, arrays = pack(state)
    header = {**meta, "schema": SCHEMA_VERSION, "runs_done": runs_done, "written": time.time()}
    buffer = io.BytesIO()
    entries = {"__meta__": np.array(json.dumps(header)), "__state__": np.array(text), **arrays}
    np.savez(buffer, **entries)  # type: ignore[arg-type]  # numpy's stub types **kwds oddly
    return buffer.getvalue()


def decode(path: Path, data: bytes) -> Checkpoint:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop("__meta__")))
        state = unpack(str(arrays.pop("__state__")), arrays)
    except (ValueError, OSError, KeyError, EOFError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({err})") from None
    if meta.get("schema") != SCHEMA_VERSION:
        raise CheckpointError(f"{path}: checkpoint schema {meta.get('schema')!r} not supported")
    return Checkpoint(path, int(meta["runs_done"]), meta, state)


@dataclass
class CheckpointStore:
    """The checkpoints of one case-seed, in ``directory``."""

    directory: Path
    keep: int = KEEP
    rejected: list[str] = field(default_factory=list)  # why newer files were passed over

    def runs(self) -> list[int]:
        """Run counts of the checkpoint files present (valid or not), oldest first."""
        if not self.directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, runs_done: int) -> Path:
        return self.directory / f"run{runs_done:06d}.npz"

    def write(self, runs_done: int, state: Any, meta: dict[str, Any]) -> Written:
        """Write atomically (npz, then its checksum), then drop all but the newest ``keep``."""
        start = time.perf_counter()
        data = encode(runs_done, state, meta)
        path = self.path(runs_done)
        digest = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(path, lambda handle: handle.write(data))
        atomic_write_bytes(_sum_path(path), lambda handle: handle.write(digest.encode()))
        for old in self.runs()[: -self.keep]:
            self._remove(old)
        return Written(path, len(data), time.perf_counter() - start)

    def read(self, runs_done: int) -> Checkpoint:
        path = self.path(runs_done)
        try:
            data = path.read_bytes()
            expected = _sum_path(path).read_text().strip()
        except OSError as err:
            raise CheckpointError(f"{path}: incomplete checkpoint ({err.strerror})") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupt)")
        checkpoint = decode(path, data)
        if checkpoint.runs_done != runs_done:
            raise CheckpointError(f"{path}: holds run {checkpoint.runs_done}, not {runs_done}")
        return checkpoint

    def latest(self, identity: dict[str, Any]) -> Checkpoint | None:
        """The newest checkpoint that reads back, checksums and belongs to ``identity`` (case id,
        config hash, seed); newer ones that fail are listed in ``rejected`` with the reason."""
        self.rejected = []
        for runs_done in reversed(self.runs()):
            try:
                checkpoint = self.read(runs_done)
            except CheckpointError as err:
                self.rejected.append(str(err))
                continue
            mismatch = {k: v for k, v in identity.items() if checkpoint.meta.get(k) != v}
            if mismatch:
                self.rejected.append(f"{checkpoint.path}: written for another {sorted(mismatch)}")
                continue
            return checkpoint
        return None

    def discard_after(self, runs_done: int) -> None:
        """Remove checkpoints newer than ``runs_done`` (rejected ones, from the abandoned part of
        an interrupted attempt) and temporary files a kill mid-write left behind."""
        for run in self.runs():
            if run > runs_done:
                self._remove(run)
        if self.directory.is_dir():
            for tmp in self.directory.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def _remove(self, runs_done: int) -> None:
        path = self.path(runs_done)
        _sum_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def _sum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


# -- when to write one ----------------------------------------------------------------------------


@dataclass
class CheckpointSchedule:
    """Every ``every`` runs, or (``every = 0``) adaptively, by cumulative accounting: a checkpoint
    is due when the runs since the last one earned it (their time x ``budget`` covers one) and it
    keeps all checkpoint time so far (forced ones included) within ``budget`` of the timed run time
    so far. A checkpoint is estimated at the mean cost measured until now, or at ``first_cost_s``
    before any was measured (one cost 2-86 ms in the cases measured here). The runner also writes
    one at every validation checkpoint and at the end; only those forced ones can push a short
    case-seed over the budget."""

    every: int = 0
    budget: float = DEFAULT_BUDGET
    first_cost_s: float = FIRST_COST_S
    run_s: float = 0.0  # timed run time so far
    spent_s: float = 0.0  # checkpoint time so far
    written: int = 0
    run_at_last_s: float = 0.0

    def ran(self, wall_s: float) -> None:
        self.run_s += wall_s

    def due(self, runs_done: int) -> bool:
        if self.every > 0:
            return runs_done % self.every == 0
        estimate = self.spent_s / self.written if self.written else self.first_cost_s
        spaced = (self.run_s - self.run_at_last_s) * self.budget >= estimate  # no bursts
        return spaced and self.spent_s + estimate <= self.budget * self.run_s

    def wrote(self, cost_s: float) -> None:
        self.spent_s += cost_s
        self.written += 1
        self.run_at_last_s = self.run_s


# -- which records count --------------------------------------------------------------------------


def _before(record: dict[str, Any], from_run: int) -> bool:
    """A record of the part of a case-seed that a resume from ``from_run`` keeps."""
    if record.get("kind") == "run":
        return int(record["run_index"]) < from_run
    if record.get("kind") == "validation":
        return int(record["after_runs"]) < from_run
    if record.get("kind") == "calibration":  # the resumed attempt takes its own at from_run
        return int(record["before_run"]) < from_run
    return False


def _restored_within(own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One attempt's records without the runs and validations that a restore inside it (a
    ``case_resume`` with ``after_failure``: a lost worker, see the runner) re-did."""
    kept: list[dict[str, Any]] = []
    for r in own:
        if r.get("kind") == "case_resume" and r.get("after_failure"):
            from_run = int(r["from_run"])
            kept = [
                k
                for k in kept
                if k.get("kind") not in ("run", "validation", "calibration") or _before(k, from_run)
            ]
        kept.append(r)
    return kept


def select_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that count, per (case, seed): the latest attempt's, and when that attempt
    resumed from a checkpoint (a ``case_resume`` record with ``from_run``), also the runs and
    validations before ``from_run`` that the attempts it continues recorded - so runs re-done after
    the checkpoint are counted once (the latest write wins). Carried records get the latest
    attempt's number (the one their ``case_start`` carries) and keep theirs as
    ``recorded_attempt``. A restore inside an attempt after a lost worker (``case_resume`` with
    ``after_failure``) likewise drops that attempt's own records from its ``from_run`` on.
    Records without a case id are passed through first."""
    loose: list[dict[str, Any]] = []
    grouped: dict[tuple[str, int], dict[Any, list[dict[str, Any]]]] = {}
    for r in records:
        if "case_id" not in r:
            loose.append(r)
            continue
        attempts = grouped.setdefault((r["case_id"], r.get("seed", -1)), {})
        attempts.setdefault(r.get("attempt"), []).append(r)
    selected = list(loose)
    for attempts in grouped.values():
        kept: list[dict[str, Any]] = []
        for attempt, recorded in attempts.items():
            own = _restored_within(recorded)
            resume = next(
                (r for r in own if r.get("kind") == "case_resume" and not r.get("after_failure")),
                None,
            )
            if resume is None:
                kept = list(own)
                continue
            carried = [
                {
                    **r,
                    "attempt": attempt,
                    "recorded_attempt": r.get("recorded_attempt", r.get("attempt")),
                }
                for r in kept
                if _before(r, int(resume["from_run"]))
            ]
            starts = [r for r in own if r.get("kind") == "case_start"]
            kept = starts + carried + [r for r in own if r.get("kind") != "case_start"]
        selected.extend(kept)
    return selected
