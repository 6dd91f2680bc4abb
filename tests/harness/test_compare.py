"""``python -m harness compare A B`` (issue 23): two folders of one suite side by side, what
differs first, paired quality tests where the folders share seeds and tasks; incomparable pairs
are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.cli_helpers import run_cli as run


def folder_of(tiny_suite: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code, _, err = run(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root), "--quiet"
    )
    assert code == 0, err
    (folder,) = (root / "tiny").iterdir()
    return folder


def test_compare_two_runs_of_one_suite(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = folder_of(tiny_suite, tmp_path / "a", capsys)
    b = folder_of(tiny_suite, tmp_path / "b", capsys)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["machine"]["cpu_model"] = "Some Other CPU 9000"  # as if B ran elsewhere
    (b / "manifest.json").write_text(json.dumps(manifest))
    out_file = tmp_path / "cmp.md"
    code, out, err = run(capsys, "compare", str(a), str(b), "--out", str(out_file))
    assert code == 0, err
    differs = out.split("## What differs between A and B")[1].split("##")[0]
    assert "CPU:" in differs and "Some Other CPU 9000" in differs
    rows = [line for line in out.splitlines() if line.startswith(("w1-", "w2-"))]
    assert len(rows) == 2
    assert all("paired over seeds" in row for row in rows)  # both ran seeds 0 and 1
    assert out_file.read_text().startswith("# compare tiny (smoke)")


def test_incomparable_folders_are_one_line(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = folder_of(tiny_suite, tmp_path / "a", capsys)
    tiny_suite.write_text(tiny_suite.read_text().replace("alpha = 0.01", "alpha = 0.02"))
    b = folder_of(tiny_suite, tmp_path / "b", capsys)
    code, _, err = run(capsys, "compare", str(a), str(b))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "not comparable" in lines[0], err
    code, _, err = run(capsys, "compare", str(a), str(tmp_path))
    assert code == 2 and "not a results folder" in err
