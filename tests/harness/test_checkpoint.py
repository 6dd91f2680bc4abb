"""Checkpoint files: exact round trip, last two kept, a corrupt / truncated / half-written newest
one falls back to the older; the schedule; and the record selection after a resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.checkpoint import (
    CheckpointError,
    CheckpointSchedule,
    CheckpointStore,
    checkpoint_dir,
    decode,
    encode,
    pack,
    select_records,
    unpack,
)

ID = {"case_id": "w2", "config_hash": "abc", "seed": 1}


def state(value: float) -> dict[str, Any]:
    rng = np.random.default_rng([1, 2])
    rng.random(7)
    return {
        "theta": [np.full((2, 3), value, np.float32), np.arange(3, dtype=np.float32)],
        "history": np.array([[1.5, np.nan]]),
        "runs_done": 4,
        "workers": [{"worker_id": 0, "rng": rng.bit_generator.state, "opt": None}],
        "count": np.float32(3.0),
    }


def test_pack_unpack_is_exact_including_128_bit_generator_states() -> None:
    original = state(0.1)
    text, arrays = pack(original)
    back = unpack(text, arrays)
    assert np.array_equal(back["theta"][0], original["theta"][0])
    assert back["theta"][0].dtype == np.float32
    assert np.array_equal(back["history"], original["history"], equal_nan=True)
    assert back["workers"] == [{**original["workers"][0]}]
    rng = np.random.default_rng()
    rng.bit_generator.state = back["workers"][0]["rng"]
    again = np.random.default_rng([1, 2])
    again.random(7)
    assert rng.random() == again.random()  # the stream continues where it was
    with pytest.raises(CheckpointError, match="cannot store a set"):
        pack({"x": {1, 2}})


def test_write_read_keeps_the_last_two(tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_dir(tmp_path, "w2", 1))
    for run in (2, 5, 9):
        written = store.write(run, state(run), ID)
        assert written.bytes == written.path.stat().st_size and written.seconds > 0
    assert store.runs() == [5, 9]
    assert sorted(p.name for p in store.directory.iterdir()) == [
        "run000005.npz",
        "run000005.npz.sha256",
        "run000009.npz",
        "run000009.npz.sha256",
    ]
    latest = store.latest(ID)
    assert latest is not None and latest.runs_done == 9 and latest.meta["seed"] == 1
    assert np.array_equal(latest.state["theta"][0], state(9)["theta"][0])
    assert store.rejected == []


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif how == "flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "no checksum":  # killed between the npz and its checksum
        Path(str(path) + ".sha256").unlink()


@pytest.mark.parametrize("how", ["truncated", "flipped", "no checksum"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older(tmp_path: Path, how: str) -> None:
    store = CheckpointStore(tmp_path / "ck")
    store.write(3, state(3), ID)
    newest = store.write(6, state(6), ID).path
    _damage(newest, how)
    (store.directory / ".run000009.npz.x1.tmp").write_bytes(b"half")  # a kill mid-write
    latest = store.latest(ID)
    assert latest is not None and latest.runs_done == 3
    assert len(store.rejected) == 1 and "run000006.npz" in store.rejected[0]
    store.discard_after(latest.runs_done)
    assert sorted(p.name for p in store.directory.iterdir()) == [
        "run000003.npz",
        "run000003.npz.sha256",
    ]


def test_nothing_usable_and_foreign_checkpoints(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ck")
    assert store.latest(ID) is None  # no folder yet
    store.write(4, state(4), ID)
    assert store.latest({**ID, "config_hash": "other"}) is None
    assert "written for another ['config_hash']" in store.rejected[0]
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        decode(tmp_path / "x.npz", b"not a zip")
    assert decode(tmp_path / "x.npz", encode(7, {"a": 1}, ID)).runs_done == 7


def test_fixed_schedule_every_k_runs() -> None:
    schedule = CheckpointSchedule(every=3)
    assert [n for n in range(1, 10) if schedule.due(n)] == [3, 6, 9]


def test_adaptive_schedule_keeps_checkpoints_under_the_budget() -> None:
    schedule = CheckpointSchedule(every=0, budget=0.02, first_cost_s=0.05)
    due_at = []
    for n in range(1, 1001):
        schedule.ran(0.01)  # 10 ms runs, 10 ms checkpoints: one per 50 runs at most
        if schedule.due(n):
            due_at.append(n)
            schedule.wrote(0.010)
        assert schedule.spent_s <= 0.02 * schedule.run_s
    # the first waits until a 50 ms checkpoint would fit (~250 runs), then one every ~50 runs
    assert 250 <= due_at[0] <= 251 and len(due_at) == 15
    assert all(50 <= g <= 51 for g in np.diff(due_at))


def _run(attempt: int, index: int) -> dict[str, Any]:
    return {"kind": "run", "case_id": "c", "seed": 0, "attempt": attempt, "run_index": index}


def test_selection_counts_runs_redone_after_a_checkpoint_once() -> None:
    def start(attempt: int) -> dict[str, Any]:
        return {"kind": "case_start", "case_id": "c", "seed": 0, "attempt": attempt}

    def validation(attempt: int, after: int) -> dict[str, Any]:
        return {"kind": "validation", "case_id": "c", "seed": 0, "attempt": attempt,
                "after_runs": after}  # fmt: skip

    def resume(attempt: int, from_run: int) -> dict[str, Any]:
        return {"kind": "case_resume", "case_id": "c", "seed": 0, "attempt": attempt,
                "from_run": from_run}  # fmt: skip

    other = [{**start(0), "seed": 1}, {**_run(0, 0), "seed": 1}]
    records = [
        start(0), validation(0, 0), *[_run(0, i) for i in range(5)], validation(0, 4),
        *other,
        start(1), resume(1, 3), *[_run(1, i) for i in range(3, 7)],  # killed again at 7
        start(2), resume(2, 6), *[_run(2, i) for i in range(6, 8)], validation(2, 8),
    ]  # fmt: skip
    picked = [r for r in select_records(records) if r["seed"] == 0]
    runs = [(r["run_index"], r["attempt"], r.get("recorded_attempt")) for r in picked
            if r["kind"] == "run"]  # fmt: skip
    assert runs == [(0, 2, 0), (1, 2, 0), (2, 2, 0), (3, 2, 1), (4, 2, 1), (5, 2, 1),
                    (6, 2, None), (7, 2, None)]  # fmt: skip
    assert [r["after_runs"] for r in picked if r["kind"] == "validation"] == [0, 8]
    assert picked[0]["kind"] == "case_start" and picked[0]["attempt"] == 2
    assert [r["kind"] for r in picked].count("case_start") == 1
    assert [r for r in select_records(records) if r["seed"] == 1] == other
    # an attempt that restarted from scratch (no usable checkpoint) replaces everything before it
    fresh = [*records, start(3), _run(3, 0)]
    assert [r["attempt"] for r in select_records(fresh) if r["seed"] == 0] == [3, 3]
