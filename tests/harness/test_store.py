import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.store import RunFolder, StoreError, read_records


def test_append_and_read_back_keep_nan_and_inf(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "s", "smoke")
    folder.write_manifest({"suite": "s", "scale": "smoke"})
    folder.append({"kind": "run", "loss": float("nan"), "values": [1.0, float("inf")]})
    (record,) = folder.records()
    assert math.isnan(record["loss"]) and record["values"] == [1.0, math.inf]
    assert record["schema"] == 1
    assert folder.manifest()["suite"] == "s"


def test_torn_last_line_is_skipped_and_repaired(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "s", "smoke")
    folder.append({"kind": "run", "n": 1})
    with folder.records_path.open("a") as handle:
        handle.write('{"n": 2, "sch')  # a write cut off by kill -9
    assert [r["n"] for r in folder.records()] == [1]
    folder.repair_tail()
    folder.append({"kind": "run", "n": 3})
    assert [r["n"] for r in folder.records()] == [1, 3]


def test_unknown_schema_is_refused(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "s", "smoke")
    folder.records_path.write_text('{"schema": 99, "n": 1}\n')
    with pytest.raises(StoreError, match="schema version 99 is not supported"):
        folder.records()
    folder.manifest_path.write_text('{"schema": 0}')
    with pytest.raises(StoreError, match="schema version 0"):
        folder.manifest()


WRITER = """
import sys, itertools
from pathlib import Path
from harness.store import RunFolder
folder = RunFolder(Path(sys.argv[1]))
for i in itertools.count():
    folder.append({"kind": "run", "n": i, "payload": "x" * 5000})
"""


@pytest.mark.integration
def test_kill_minus_nine_leaves_every_earlier_record_readable(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "s", "smoke")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder.path)])
    deadline = time.time() + 30
    while time.time() < deadline and (
        not folder.records_path.exists() or folder.records_path.stat().st_size < 200_000
    ):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    numbers = [r["n"] for r in read_records(folder.records_path)]
    assert len(numbers) >= 30
    assert numbers == list(range(len(numbers)))  # nothing lost or reordered before the kill


def test_an_archived_folder_reads_its_gzipped_records(tmp_path: Path) -> None:
    """Finished folders are committed as records.jsonl.gz: readable, never appended to."""
    import gzip

    folder = RunFolder.create(tmp_path, "s", "smoke")
    folder.write_manifest({"suite": "s", "scale": "smoke"})
    folder.append({"kind": "run", "n": 1})
    folder.append({"kind": "run", "n": 2})
    plain = folder.records_path.read_bytes()
    folder.archived_records_path.write_bytes(gzip.compress(plain))
    folder.records_path.unlink()
    assert [r["n"] for r in folder.records()] == [1, 2]
    folder.archived_records_path.write_bytes(gzip.compress(plain)[:20])  # truncated
    with pytest.raises(StoreError, match=r"records\.jsonl\.gz: cannot read the records"):
        folder.records()
