"""Results on disk: append-only JSON lines, written so that nothing completed is ever lost.

Layout: ``<root>/<suite>/<scale>-<UTC timestamp>/`` holds
- ``manifest.json``: suite, scale, machine, versions, git commit, start/end (replaced atomically);
- ``records.jsonl``: one JSON object per line - every run, validation and case-seed completion,
  appended (and fsync'ed) the moment it exists.
A kill -9 can at worst leave a partial *last* line; readers skip it and ``--resume`` cuts it off.
Every file carries ``schema``; readers refuse versions they do not know.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import platform
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from dmaml_core.files import atomic_write_bytes

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"
LOCK = ".lock"  # advisory lock (flock): held by the one process writing this folder
LOCK_OWNER = ".lock-owner.json"  # who holds it, for the message a second writer gets


class StoreError(RuntimeError):
    """A results folder that cannot be read or continued; the message says why."""


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: store them as strings so a diverged run stays visible."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _clean(value.tolist())
    return value


def _restore(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    text = json.dumps(_clean(data), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def _check_schema(data: dict[str, Any], where: Path) -> None:
    version = data.get("schema")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{where}: schema version {version!r} is not supported "
            f"(this dmaml-bench reads version {SCHEMA_VERSION})"
        )


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of a ``records.jsonl``; a torn final line is skipped."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            lines = handle.read().split(b"\n")
    except (OSError, EOFError) as err:  # EOFError: a truncated .gz
        why = getattr(err, "strerror", None) or str(err) or type(err).__name__
        raise StoreError(f"{path}: cannot read the records ({why})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError, or bytes that are not UTF-8 (e.g. NUL-filled)
            if number == len(lines):  # torn last line from a kill mid-write
                continue
            raise StoreError(f"{path}:{number}: not a JSON record") from None
        if not isinstance(record, dict):
            raise StoreError(f"{path}:{number}: a record must be a JSON object, got {record!r:.40}")
        _check_schema(record, path)
        if not isinstance(record.get("kind"), str):
            raise StoreError(f"{path}:{number}: record without a 'kind' field")
        yield _restore(record)


@dataclass
class RunFolder:
    """One invocation's results folder."""

    path: Path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def records_path(self) -> Path:
        return self.path / RECORDS

    @classmethod
    def create(cls, root: Path, suite: str, scale: str) -> RunFolder:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        folder = cls(root / suite / f"{scale}-{stamp}")
        inside = folder.path.resolve().is_relative_to(root.resolve())
        if not inside or suite in (".", "..") or "/" in suite or "\\" in suite:
            raise StoreError(f"suite name {suite!r} would put results outside {root}")
        folder.path.mkdir(parents=True, exist_ok=False)
        return folder

    @classmethod
    def latest(cls, root: Path, suite: str, scale: str) -> RunFolder | None:
        """The newest folder of exactly this scale (``quick-<stamp>``, never ``quick-gpu-...``
        of a scale a suite named itself)."""
        name = re.compile(re.escape(scale) + r"-\d{8}T\d{12}Z")
        candidates = sorted(
            m for m in (root / suite).glob(f"{scale}-*/{MANIFEST}") if name.fullmatch(m.parent.name)
        )
        return cls(candidates[-1].parent) if candidates else None

    def manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_bytes())
        except FileNotFoundError:
            raise StoreError(
                f"{self.path}: no {MANIFEST}; not a dmaml-bench results folder"
            ) from None
        except OSError as err:
            raise StoreError(f"{self.manifest_path}: cannot read it ({err.strerror})") from None
        except ValueError:
            raise StoreError(f"{self.manifest_path}: not valid JSON (corrupt manifest)") from None
        if not isinstance(data, dict):
            raise StoreError(f"{self.manifest_path}: must be a JSON object")
        _check_schema(data, self.manifest_path)
        missing = [k for k in ("suite", "scale") if not isinstance(data.get(k), str)]
        if missing:
            raise StoreError(f"{self.manifest_path}: missing {', '.join(missing)}")
        return dict(_restore(data))

    def lock(self) -> FolderLock:
        """Take this folder's exclusive writer lock (one writer per results folder)."""
        return FolderLock.acquire(self.path)

    def write_manifest(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.manifest_path, {**data, "schema": SCHEMA_VERSION})

    @property
    def archived_records_path(self) -> Path:
        """``records.jsonl.gz``: a finished folder compressed for the repository (read-only)."""
        return self.path / f"{RECORDS}.gz"

    def records(self) -> list[dict[str, Any]]:
        if not self.records_path.exists() and self.archived_records_path.exists():
            return list(read_records(self.archived_records_path))
        if not self.records_path.exists():
            return []
        return list(read_records(self.records_path))

    def repair_tail(self) -> None:
        """Cut a torn final line (left by a kill mid-write) before appending more."""
        if not self.records_path.exists():
            return
        data = self.records_path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.records_path.open("r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line, flushed to disk before returning."""
        line = json.dumps(_clean({**record, "schema": SCHEMA_VERSION}), sort_keys=True)
        with self.records_path.open("a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


@dataclass
class FolderLock:
    """An advisory ``flock`` on ``<folder>/.lock``, held while a process writes the folder.

    The OS drops it when the holder dies (kill -9 included), so a stale lock never blocks a
    ``--resume``; a live holder makes a second writer fail at once with who holds it."""

    lock: filelock.BaseFileLock
    owner_path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def acquire(cls, folder: Path) -> FolderLock:
        lock = filelock.FileLock(folder / LOCK)
        owner_path = folder / LOCK_OWNER
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise StoreError(f"{folder} is in use: {_describe_owner(owner_path)}") from None
        info = {
            "pid": os.getpid(),
            "host": platform.node(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        write_json_atomic(owner_path, info)
        return cls(lock, owner_path, info)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_owner(owner_path: Path) -> str:
    try:
        owner = json.loads(owner_path.read_text())
        return (
            f"held by pid {owner['pid']} on {owner['host']} since {owner['since']} "
            f"({owner['command']}); wait for it to finish or stop it, then --resume"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "another dmaml-bench process holds its lock; wait for it to finish"


def finished_case_seeds(records: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """(case id, seed) pairs whose latest attempt reached ``case_end``."""
    latest: dict[tuple[str, int], Any] = {}
    done: set[tuple[str, int]] = set()
    for r in records:
        key = (r.get("case_id", ""), r.get("seed", -1))
        if r["kind"] == "case_start":
            latest[key] = r.get("attempt")
            done.discard(key)
        elif r["kind"] == "case_end" and latest.get(key) == r.get("attempt"):
            done.add(key)
    return done


def find_folders(paths: list[Path]) -> list[RunFolder]:
    """Results folders at or under each path (a folder with a manifest, or any parent of some),
    each once: the same folder named twice, or a parent and its child, would otherwise count
    every record twice (folders are compared by their resolved path)."""
    found: dict[Path, RunFolder] = {}
    for path in paths:
        if not path.exists():
            raise StoreError(f"{path}: no such results file or folder")
        if (path / MANIFEST).exists():
            folders = [path]
        else:
            folders = [m.parent for m in sorted(path.rglob(MANIFEST))]
        for folder in folders:
            found.setdefault(folder.resolve(), RunFolder(folder))
    return list(found.values())
