"""Files that are never half-written: the one atomic-write helper shared by the dataset caches and
the results store."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary file in the same folder, then ``os.replace``: a crash or a
    concurrent reader never sees a half-written file. ``write`` is called with the open file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
