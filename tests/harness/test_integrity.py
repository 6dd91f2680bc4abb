"""Results a user can trust: one writer per folder, no repeated seeds, no silent change of plan,
manifests that keep their history, the data source on record, and one-line errors.

Each test names the failure of the hostile-user review it guards against; they run the real CLI
in-process (``cli.main``) on tiny sinusoid suites (about a second each)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.store import FolderLock
from tests.harness.cli_helpers import one_clear_line, run_cli


@pytest.fixture
def finished(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Path]:
    """(suite file, a complete results folder of it)."""
    root = tmp_path / "results"
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root), "--quiet"
    )
    assert code == 0, err
    (folder,) = (root / "tiny").iterdir()
    return tiny_suite, folder


def test_1_a_second_writer_of_a_folder_is_refused_naming_the_holder(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    suite, folder = finished
    records_before = (folder / "records.jsonl").read_bytes()
    with FolderLock.acquire(folder) as held:
        code, _, err = run_cli(
            capsys, "run", str(suite), "--scale", "smoke", "--resume", str(folder)
        )
    line = one_clear_line(err)
    assert code == 2
    assert f"{folder} is in use: held by pid {held.info['pid']}" in line
    assert (folder / "records.jsonl").read_bytes() == records_before


def test_the_lock_of_a_dead_holder_does_not_block(finished: tuple[Path, Path]) -> None:
    """flock is released by the OS when its process dies (kill -9 included): a child takes the
    lock and exits without releasing it; the folder is free again."""
    _, folder = finished
    pid = os.fork() if hasattr(os, "fork") else 0
    if pid == 0:
        FolderLock.acquire(folder)
        os._exit(0)
    os.waitpid(pid, 0)
    FolderLock.acquire(folder).release()


def test_2_repeated_seeds_are_refused(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_suite.write_text(tiny_suite.read_text().replace("seeds = [0, 1]", "seeds = [0, 0]"))
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(tmp_path / "r")
    )
    assert code == 2
    assert "scales.smoke.seeds: seed(s) 0 listed twice" in one_clear_line(err)
    assert not (tmp_path / "r").exists()  # refused before a results folder was made


@pytest.mark.parametrize(
    "old,new,named",
    [
        ("runs = 3", "runs = 5", "runs 3 -> 5"),
        ("checkpoints = [0, 4]", "checkpoints = [0, 2]", "checkpoints [0, 4] -> [0, 2]"),
        ("validation_tasks = 8", "validation_tasks = 9", "validation_tasks 8 -> 9"),
        ("workers = [1, 2]", "workers = [1, 2, 3]", "case(s) added: w3-e1-t4-sum-o2"),
        ("tasks = 4", "tasks = 5", "case(s) added"),
    ],
)
def test_3_resume_refuses_any_change_of_plan_and_names_it(
    finished: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    named: str,
) -> None:
    suite, folder = finished
    suite.write_text(suite.read_text().replace(old, new))
    manifest_before = (folder / "manifest.json").read_bytes()
    code, _, err = run_cli(capsys, "run", str(suite), "--scale", "smoke", "--resume", str(folder))
    line = one_clear_line(err)
    assert code == 2
    assert "the suite's plan changed" in line and named in line
    # 5: a refused resume leaves the manifest as it was (not 'failed', not re-dated)
    assert (folder / "manifest.json").read_bytes() == manifest_before


def test_4_data_dir_without_the_data_is_an_error_saying_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    suite = tmp_path / "omni.toml"
    suite.write_text(
        'name = "omni"\ndescription = "d"\n[domain]\nname = "omniglot"\n'
        "[scales.smoke]\nruns = 1\nseeds = [0]\n"
    )
    code, _, err = run_cli(
        capsys, "run", str(suite), "--scale", "smoke", "--data-dir", str(empty),
        "--results-dir", str(tmp_path / "r"),
    )  # fmt: skip
    line = one_clear_line(err)
    assert code == 2
    assert "Omniglot not found" in line and str(empty) in line
    assert "images_background.zip" in line
    assert not (tmp_path / "r").exists()


def test_4_the_data_source_is_recorded(finished: tuple[Path, Path]) -> None:
    _, folder = finished
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["data"] == [
        {"domain": "sinusoid", "source": "generated in memory (sinusoid tasks; no data files)"}
    ]


@pytest.mark.integration
def test_4_omniglot_source_path_and_hashes_are_recorded(tmp_path: Path) -> None:
    from dmaml_core.tasks.omniglot import shared_data_candidates
    from harness.data_source import describe_data
    from harness.suite import load_suite

    if not any((c / "images_background.zip").exists() for c in shared_data_candidates("omniglot")):
        pytest.skip("no Omniglot archives beside the checkout")
    suite = tmp_path / "omni.toml"
    suite.write_text(
        'name = "omni"\ndescription = "d"\n[domain]\nname = "omniglot"\n'
        "[scales.smoke]\nruns = 1\nseeds = [0]\n"
    )
    (entry,) = describe_data(load_suite(suite, "smoke"), None)
    assert entry["domain"] == "omniglot" and Path(entry["path"]).is_dir()
    assert set(entry["sha256"]) == {"images_background.zip", "images_evaluation.zip"}
    for name, digest in entry["sha256"].items():  # what `sha256sum` prints, and the data README
        assert digest == hashlib.sha256((Path(entry["path"]) / name).read_bytes()).hexdigest()
        readme = Path(entry["path"]) / "README.md"
        if readme.exists():
            assert digest in readme.read_text()


def test_5_resume_records_events_and_keeps_the_first_finish(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "results"
    args = ("run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root), "--quiet")
    assert run_cli(capsys, *args)[0] == 0
    (folder,) = (root / "tiny").iterdir()
    first = json.loads((folder / "manifest.json").read_text())
    # an interrupted sweep: forget the last case-seed's end so a resume has work to do
    lines = (folder / "records.jsonl").read_text().splitlines()
    last_end = max(i for i, line in enumerate(lines) if '"case_end"' in line)
    (folder / "records.jsonl").write_text("\n".join(lines[:last_end]) + "\n")
    assert run_cli(capsys, *args, "--resume", str(folder))[0] == 0
    after = json.loads((folder / "manifest.json").read_text())
    assert after["finished"] == first["finished"] and after["elapsed_s"] == first["elapsed_s"]
    assert [e["event"] for e in after["events"]] == ["started", "ended", "resumed", "ended"]
    assert after["status"] == "complete"
    # a no-op resume says so and does not touch the manifest
    before = (folder / "manifest.json").read_bytes()
    code, out, _ = run_cli(capsys, *args, "--resume", str(folder))
    assert code == 0 and "nothing to resume" in out
    assert (folder / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    "param,message",
    [
        ("k_support = 2.5", "k_support must be an integer, got 2.5"),
        ('hidden = [40, "a"]', "hidden must be a list of integers"),
        ("bogus = 1", "unexpected keyword argument 'bogus'"),
    ],
)
def test_domain_errors_come_before_a_results_folder(
    tiny_suite: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    param: str,
    message: str,
) -> None:
    tiny_suite.write_text(
        tiny_suite.read_text().replace('name = "sinusoid"', f'name = "sinusoid"\n{param}')
    )
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(tmp_path / "r")
    )
    line = one_clear_line(err)
    assert code == 2 and "tiny.toml" in line and message in line
    assert not (tmp_path / "r").exists()


def test_unknown_domain_and_task_parallel_shape_are_suite_errors(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tiny_suite.read_text()
    tiny_suite.write_text(text.replace('name = "sinusoid"', 'name = "sinusiod"'))
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke")
    assert code == 2 and "unknown domain 'sinusiod'; known:" in one_clear_line(err)
    tiny_suite.write_text(
        text.replace("[base]\n", '[base]\nmode = "task_parallel"\n').replace(
            "workers = [1, 2]", "workers = [1, 8]"
        )
    )
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke")
    assert code == 2 and "needs tasks >= workers" in one_clear_line(err)


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("workers = [1, 2]", "workers = [1, 1000000]", "above the sane limit 4,096"),
        ("tasks = 4", "tasks = 4\nthreads = 100000", "threads = 100000 is above the sane limit"),
    ],
)
def test_absurd_sizes_are_refused_with_how_to_lift_the_limit(
    tiny_suite: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, message: str
) -> None:
    tiny_suite.write_text(tiny_suite.read_text().replace(old, new))
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke")
    line = one_clear_line(err)
    assert code == 2 and message in line and "DMAML_BENCH_NO_LIMITS=1" in line


def test_a_non_utf8_suite_names_the_file(
    tiny_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_suite.write_bytes(tiny_suite.read_bytes().replace(b"two small", b"two \xff small"))
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke")
    assert code == 2 and f"{tiny_suite}: not UTF-8 text" in one_clear_line(err)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda f: (f / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda f: (f / "manifest.json").write_text("[1, 2]"), "must be a JSON object"),
        (lambda f: (f / "manifest.json").write_text('{"schema": 1}'), "missing suite, scale"),
        (lambda f: _replace_records(f, b"\x00" * 40 + b"\n"), "records.jsonl:1: not a JSON"),
        (lambda f: _replace_records(f, b"[1, 2]\n"), "a record must be a JSON object"),
        (lambda f: _replace_records(f, b'{"schema": 1}\n'), "record without a 'kind' field"),
        (lambda f: _records_folder(f), "cannot read the records"),
    ],
)
def test_corrupt_results_are_one_line_naming_the_file(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str], damage: object, message: str
) -> None:
    _, folder = finished
    damage(folder)  # type: ignore[operator]
    code, _, err = run_cli(capsys, "report", str(folder), "--out", str(folder.parent / "out"))
    line = one_clear_line(err)
    assert code == 2 and message in line and str(folder) in line


def _replace_records(folder: Path, first_line: bytes) -> None:
    path = folder / "records.jsonl"
    path.write_bytes(first_line + path.read_bytes())


def _records_folder(folder: Path) -> None:
    (folder / "records.jsonl").unlink()
    (folder / "records.jsonl").mkdir()


def test_report_out_being_a_file_is_one_line(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, folder = finished
    out = folder.parent / "a-file"
    out.write_text("x")
    code, _, err = run_cli(capsys, "report", str(folder), "--out", str(out))
    line = one_clear_line(err)
    assert code == 2 and str(out) in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes everything")
def test_unwritable_results_dir_is_one_line(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ro"
    root.mkdir(mode=0o500)
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root)
    )
    assert code == 2 and "Permission denied" in one_clear_line(err)


def test_debug_shows_the_traceback_and_only_internal_errors_are_logged(
    tiny_suite: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An expected error (a missing folder) is its one line and no log file; an internal one
    (a bug: here a KeyError from the report command) names the log that holds its traceback;
    the log folder keeps the newest ``KEPT_ERROR_LOGS``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    logs = tmp_path / "cache" / "dmaml-bench" / "logs"
    missing = str(tmp_path / "nope")
    code, _, err = run_cli(capsys, "report", missing)
    line = one_clear_line(err)
    assert code == 2 and "traceback in" not in line and "no such results" in line
    assert not logs.exists() or not list(logs.iterdir())
    code, _, err = run_cli(capsys, "report", missing, "--debug")
    assert code == 2 and "Traceback" in err

    def broken(args: Any) -> int:
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_report", broken)
    monkeypatch.setattr(cli.sys, "argv", ["harness", "report"])
    logs.mkdir(parents=True, exist_ok=True)
    for i in range(cli.KEPT_ERROR_LOGS + 5):  # older logs of earlier errors
        (logs / f"error-20200101T0000{i:02d}-1.log").write_text("old")
    code, _, err = run_cli(capsys, "report", missing)
    line = one_clear_line(err)
    assert code == 1 and "internal error (KeyError" in line and "traceback in" in line
    log = Path(line.rsplit("traceback in ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "a bug" in log.read_text()
    kept = sorted(logs.glob("error-*.log"))
    assert len(kept) == cli.KEPT_ERROR_LOGS and log in kept


def test_suite_errors_come_fast_and_without_tensorflow(tiny_suite: Path) -> None:
    """The whole suite, domain parameters included, is checked before TensorFlow is imported."""
    import subprocess
    import sys

    tiny_suite.write_text(tiny_suite.read_text().replace("tasks = 4", "tasks = 4.5"))
    probe = (
        "import sys, time; from harness import cli; t = time.perf_counter(); "
        f"code = cli.main(['run', {str(tiny_suite)!r}, '--scale', 'smoke']); "
        "print(code, 'tensorflow' in sys.modules, time.perf_counter() - t)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    code, imported, _seconds = result.stdout.split()
    assert (code, imported) == ("2", "False"), result.stderr
    assert "tasks must be float" not in result.stderr and "tasks" in result.stderr


@pytest.mark.integration
def test_disk_full_is_one_line_and_keeps_what_was_written(tiny_suite: Path, tmp_path: Path) -> None:
    """A real full disk: a 40 KiB tmpfs (needs root's mount; skipped where it is refused)."""
    import subprocess
    import sys

    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "harness", "run", str(tiny_suite), "--scale", "smoke",
             "--results-dir", str(mount), "--quiet"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1].startswith("error: no space left on the device")
        (records,) = mount.glob("tiny/*/records.jsonl")
        assert records.read_bytes().count(b"\n") >= 1  # what was complete is still there
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.integration
def test_a_read_only_results_dir_is_one_line(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unwritable results folder, for real even as root: a read-only tmpfs (skipped where mount
    is refused)."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode:  # fmt: skip
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        code, _, err = run_cli(
            capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(mount)
        )
        line = one_clear_line(err)
        assert code == 2 and "Read-only file system" in line and str(mount) in line
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_an_unreadable_suite_path_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "looks_like.toml"
    folder.mkdir()  # a folder where a suite file should be: unreadable as a file, even for root
    code, _, err = run_cli(capsys, "run", str(folder), "--scale", "smoke")
    assert code == 2 and "cannot read the suite file" in one_clear_line(err)


def test_list_survives_a_broken_suite_beside_good_ones(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suites = tmp_path / "more_suites"
    suites.mkdir()
    (suites / "broken.toml").write_bytes(b'name = "broken"\ndescription = "\xff"\n')
    (suites / "tiny.toml").write_text(tiny_suite.read_text())
    code, out, err = run_cli(capsys, "list", "--suites", str(suites))
    assert code == 0 and "Traceback" not in err
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "broken" in rows and "tiny" in rows and "main" in rows


def test_an_archived_folder_is_reported_but_not_resumed(
    finished: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import gzip

    suite, folder = finished
    records = folder / "records.jsonl"
    (folder / "records.jsonl.gz").write_bytes(gzip.compress(records.read_bytes()))
    records.unlink()
    code, out, _ = run_cli(capsys, "report", str(folder), "--out", str(folder.parent / "out"))
    assert code == 0 and "w2-e1-t4-sum-o2" in out
    code, _, err = run_cli(capsys, "run", str(suite), "--scale", "smoke", "--resume", str(folder))
    assert code == 2 and "is archived (records.jsonl.gz)" in one_clear_line(err)
