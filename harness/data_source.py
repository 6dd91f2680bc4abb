"""Which data a suite will read, found before anything runs, and recorded in the manifest.

Checked before TensorFlow is imported and before a results folder exists: a missing data set is
a one-line error naming where it was looked for, and ``--data-dir`` never silently falls back to
another copy. Each record says which files the numbers came from (path and content hashes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from harness.suite import Suite

GENERATED = {
    "sinusoid": "generated in memory (sinusoid tasks; no data files)",
    "random_images": "generated in memory (random pixels, timing only; no data files)",
    "navigation": "simulated (2-D navigation environment; no data files)",
}


# A file of this name beside a data set's files says it is a stand-in (a test fixture, not the real
# data set) and why; its first line is carried into the manifest and every report.
STAND_IN_FILE = "STAND_IN.txt"


def file_sha256(path: Path) -> str:
    """The file's plain SHA-256, what ``sha256sum`` prints (manifests before this hashed the
    name with the bytes; reports read both, since they only print them)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def stand_in_note(folder: Path) -> str | None:
    try:
        text = (folder / STAND_IN_FILE).read_text(errors="replace").strip()
    except OSError:
        return None
    return text.splitlines()[0] if text else "marked as a stand-in"


def describe_data(suite: Suite, data_dir: str | None) -> list[dict[str, Any]]:
    """One entry per distinct data set the suite's cases use; raises ``DatasetNotFoundError``
    (a ``FileNotFoundError``) when one is missing. ``data_dir`` (the ``--data-dir`` flag), when
    given, is the only place searched."""
    from dmaml_core.tasks.miniimagenet import find_miniimagenet
    from dmaml_core.tasks.omniglot import (
        ARCHIVES,
        _archive_path,
        find_omniglot,
    )

    seen: dict[str, dict[str, Any]] = {}
    for case in suite.cases:
        params = case.params()
        key = json.dumps([case.domain, params], sort_keys=True, default=str)
        if key in seen:
            continue
        if case.domain in GENERATED:
            seen[key] = {"domain": case.domain, "source": GENERATED[case.domain]}
        elif case.domain == "omniglot":
            where = data_dir or params.get("data_dir")
            folder = find_omniglot(
                where,
                params.get("cache_dir"),
                allow_download=where is None and bool(params.get("download", True)),
            )
            archives = {}
            for name in ARCHIVES:
                archive = _archive_path(folder, name)
                assert archive is not None  # find_omniglot checked both
                archives[archive.name] = file_sha256(archive)
            seen[key] = {
                "domain": "omniglot",
                "path": str(folder.resolve()),
                "sha256": archives,
            }
        elif case.domain == "miniimagenet":
            where = data_dir or params.get("data_dir")
            folder = Path(find_miniimagenet(where, ("train", "test")))
            seen[key] = {"domain": "miniimagenet", "path": str(folder.resolve())}
            stand_in = stand_in_note(folder)
            if stand_in:
                seen[key]["stand_in"] = stand_in
        else:  # a plug-in (dmaml_core/plugins.py): it describes its data, or says it does not
            from dmaml_core.tasks import make_domain

            describe = getattr(make_domain(case.domain, **params), "data_description", None)
            described = describe() if callable(describe) else None
            seen[key] = {
                "domain": case.domain,
                **(described or {"source": "plug-in domain (it gives no data_description())"}),
            }
    return list(seen.values())
