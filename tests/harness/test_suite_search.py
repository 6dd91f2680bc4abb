"""Where suite names are found: ``--suites`` folders first, then ./suites of the working
directory, then the suites shipped with the package; and ``list`` in 100 columns."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import LIST_WIDTH, main
from harness.suite import SUITES_DIR, SuiteError, available, resolve, search_dirs

SUITE = """
name = "{name}"
description = "{description}"
[domain]
name = "sinusoid"
[scales.smoke]
runs = 1
seeds = [0]
"""


def write_suite(folder: Path, name: str, description: str = "a suite") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(SUITE.format(name=name, description=description))
    return path


def test_shipped_suites_are_found_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./suites here
    assert search_dirs() == [SUITES_DIR]
    assert {"main", "time_measurement"} <= set(available())
    assert resolve("main") == SUITES_DIR / "main.toml"


def test_suites_dir_first_then_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mine = write_suite(tmp_path / "mine", "main")  # shadows the shipped main
    local = write_suite(tmp_path / "suites", "local_only")
    assert resolve("main", [tmp_path / "mine"]) == mine
    assert resolve("main") == SUITES_DIR / "main.toml"
    assert resolve("local_only").resolve() == local.resolve()
    assert search_dirs([tmp_path / "mine"])[:2] == [tmp_path / "mine", Path.cwd() / "suites"]
    assert {"main", "local_only"} <= set(available([tmp_path / "mine"]))


def test_missing_suites_dir_and_unknown_name_say_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"--suites .*nowhere: no such folder"):
        resolve("main", [tmp_path / "nowhere"])
    with pytest.raises(SuiteError, match=r"no suite 'nope'.*main.*\(searched "):
        resolve("nope")


def test_list_fits_100_columns_with_an_ellipsis_only_where_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long = "word " * 40 + "END"
    write_suite(tmp_path, "short_one", "fits easily")
    write_suite(tmp_path, "long_one", long)
    assert main(["list", "--suites", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= LIST_WIDTH
    rows = {line.split()[0]: line for line in lines[3:]}
    assert rows["short_one"].endswith("fits easily")
    assert rows["long_one"].endswith("…") and "END" not in rows["long_one"]
    assert len(rows["long_one"]) >= LIST_WIDTH - 1  # cut at the width (a trailing space dropped)
