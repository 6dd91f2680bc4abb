"""Issue 23, round two: ``report`` reads each record once and never pools silently; suite names
cannot escape ``--results-dir``; bounds and environment variables are checked before any folder
exists. Each test failed on the code before the fix; all run the real CLI in-process on the tiny
sinusoid suite (a second or two each)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import report
from harness.store import RunFolder, StoreError, find_folders
from tests.harness.cli_helpers import one_clear_line, run_cli


@pytest.fixture
def finished(tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A complete results folder of the tiny suite."""
    root = tmp_path / "results"
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root), "--quiet"
    )
    assert code == 0, err
    (folder,) = (root / "tiny").iterdir()
    return folder


def loaded(*paths: Path) -> report.Results:
    (results,) = report.load(find_folders(list(paths)))
    return results


def test_the_same_folder_twice_or_with_its_parent_counts_once(
    finished: Path,
) -> None:
    folder = finished
    once = loaded(folder)
    for paths in ((folder, folder), (folder.parent, folder), (folder, folder.parent.parent)):
        again = loaded(*paths)
        assert again.folders == once.folders
        for case_id, case in once.cases.items():
            assert len(again.cases[case_id].runs) == len(case.runs)
            assert len(again.cases[case_id].validations) == len(case.validations)


def test_a_duplicated_record_line_is_dropped_and_named(
    finished: Path,
) -> None:
    folder = finished
    before = loaded(folder)
    lines = (folder / "records.jsonl").read_text().splitlines()
    run = next(line for line in lines if json.loads(line)["kind"] == "run")
    validation = next(line for line in lines if json.loads(line)["kind"] == "validation")
    (folder / "records.jsonl").write_text("\n".join([*lines, run, validation]) + "\n")
    after = loaded(folder)
    for case_id, case in before.cases.items():
        assert len(after.cases[case_id].runs) == len(case.runs)
        assert len(after.cases[case_id].warmups) == len(case.warmups)
        assert len(after.cases[case_id].validations) == len(case.validations)
    assert len(after.warnings) == 2
    assert all("duplicated" in w and str(folder) in w for w in after.warnings)
    text = report.render(after, 1000)
    assert text.count("WARNING: dropped a duplicated") == 2


def test_folders_with_one_case_id_but_two_configurations_are_not_pooled(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = []
    for alpha in ("0.01", "0.02"):
        tiny_suite.write_text(tiny_suite.read_text().replace("alpha = 0.01", f"alpha = {alpha}"))
        root = tmp_path / f"r{alpha}"
        code, _, err = run_cli(
            capsys,
            "run",
            str(tiny_suite),
            "--scale",
            "smoke",
            "--results-dir",
            str(root),
            "--quiet",
        )
        assert code == 0, err
        roots.append(root)
    code, _, err = run_cli(capsys, "report", str(roots[0]), str(roots[1]), "--out", str(tmp_path))
    line = one_clear_line(err)
    assert code == 2
    assert "not pooled" in line and "different configurations" in line


def test_two_folders_holding_the_same_seed_are_not_pooled(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        code, _, err = run_cli(
            capsys,
            "run",
            str(tiny_suite),
            "--scale",
            "smoke",
            "--results-dir",
            str(tmp_path / name),
            "--quiet",
        )
        assert code == 0, err
    with pytest.raises(StoreError, match="count that seed twice"):
        loaded(tmp_path / "a", tmp_path / "b")


def test_a_parent_folder_stands_for_its_latest_run_of_each_suite(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs of one suite below one parent: ``report PARENT`` reports the latest and says one
    was left out, instead of pooling them (or refusing them for sharing their seeds)."""
    later = finished.parent / (finished.name + "-later")
    shutil.copytree(finished, later)
    code, out, err = run_cli(capsys, "report", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert "NOTE: 1 older folder(s) of the same suite and scale" in err
    assert out.count("# tiny (smoke)") == 1


@pytest.mark.parametrize("name", ["/an/absolute/path", "..", ".", "../../escaped", "a b"])
def test_a_suite_name_that_is_not_a_name_is_refused_before_any_folder(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    tiny_suite.write_text(tiny_suite.read_text().replace('name = "tiny"', f"name = {name!r}"))
    root = tmp_path / "results"
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root), "--quiet"
    )
    line = one_clear_line(err)
    assert code == 2 and "name" in line and "not a suite name" in line
    assert not root.exists()
    with pytest.raises(StoreError, match="outside"):
        RunFolder.create(root, "..", "smoke")


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("alpha = 0.01", "alpha = inf", "alpha"),
        ("alpha = 0.01", "alpha = 0.01\nbeta = inf", "beta"),
        ("validation_tasks = 8", "validation_tasks = 8\nworker_timeout_s = inf", "worker_timeout"),
    ],
)
def test_infinite_values_are_refused_at_dry_run(
    tiny_suite: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    field: str,
) -> None:
    tiny_suite.write_text(tiny_suite.read_text().replace(old, new))
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke", "--dry-run")
    line = one_clear_line(err)
    assert code == 2 and field in line and ("finite" in line or "inf" in line), line


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DMAML_LAYOUT", "nonsense", "DMAML_LAYOUT"),
        ("DMAML_DATA", "/no/such/folder", "DMAML_DATA"),
    ],
)
def test_environment_variables_are_checked_like_flags(
    tiny_suite: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.setenv(variable, value)
    root = tmp_path / "results"
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--results-dir", str(root), "--quiet"
    )
    line = one_clear_line(err)
    assert code == 2 and expected in line
    assert not root.exists()


def _started_with(folder: Path, **changes: object) -> None:
    """Pretend the folder was started with other code or data: edit its manifest, and drop its
    last case_end so that there is something left to resume."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    lines = (folder / "records.jsonl").read_text().splitlines()
    last_end = max(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "case_end")
    del lines[last_end]
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("field", "flag", "said"),
    [("code", "--allow-code-change", "code changed"), ("data", "--allow-data-change", "data")],
)
def test_resume_refuses_changed_code_or_data_unless_allowed_and_reports_it(
    finished: Path,
    tiny_suite: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    flag: str,
    said: str,
) -> None:
    manifest = json.loads((finished / "manifest.json").read_text())
    assert set(manifest["code"]) == {"commit", "package_sha256"}
    other = (
        {"commit": "0" * 40, "package_sha256": "f" * 64}
        if field == "code"
        else [{"domain": "sinusoid", "source": "another generator"}]
    )
    _started_with(finished, **{field: other})
    records = (finished / "records.jsonl").read_bytes()
    resume = ["run", str(tiny_suite), "--scale", "smoke", "--resume", str(finished), "--quiet"]
    code, _, err = run_cli(capsys, *resume)
    line = one_clear_line(err)
    assert code == 2 and said in line and flag in line
    assert (finished / "records.jsonl").read_bytes() == records  # refused: nothing written
    code, _, err = run_cli(capsys, *resume, flag)
    assert code == 0, err
    text = report.render(loaded(finished), 1000)
    assert "resumed at" in text and said in text


def test_a_huge_validation_k_support_is_refused_at_dry_run(
    tiny_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_suite.write_text(
        tiny_suite.read_text().replace(
            'name = "sinusoid"', 'name = "sinusoid"\nvalidation_k_support = 1000000000'
        )
    )
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke", "--dry-run")
    line = one_clear_line(err)
    assert code == 2 and "validation_k_support" in line and "100,000" in line


@pytest.mark.parametrize(
    ("table", "field"),
    [
        (
            '[[published]]\nsource = "x"\ncase = "w1-e1-t4-sum-o2"\nmetric = "accuracy"\n'
            "after_runs = 4\nvalue = 0.9\n",
            "published[0].metric",
        ),
        ('[target]\nmetric = "accuracy"\nvalue = 0.9\n', "target.metric"),
    ],
)
def test_accuracy_on_a_regression_domain_is_refused_at_dry_run(
    tiny_suite: Path, capsys: pytest.CaptureFixture[str], table: str, field: str
) -> None:
    text = tiny_suite.read_text()
    tiny_suite.write_text(text.replace("[domain]", table + "[domain]", 1))
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke", "--dry-run")
    line = one_clear_line(err)
    assert code == 2 and field in line and "not a metric of the sinusoid domain" in line


def test_a_record_before_its_case_start_is_counted_and_named(finished: Path) -> None:
    before = loaded(finished)
    lines = (finished / "records.jsonl").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == "validation")
    moved = [lines[i], *lines[:i], *lines[i + 1 :]]  # a validation above everything
    (finished / "records.jsonl").write_text("\n".join(moved) + "\n")
    after = loaded(finished)
    for case_id, case in before.cases.items():
        assert len(after.cases[case_id].validations) == len(case.validations)
    assert any("before their case_start" in w for w in after.warnings)


def test_resume_of_a_manifest_without_signature_is_not_an_internal_error(
    finished: Path, tiny_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Folders written before signatures existed are compared on plan and case ids."""
    manifest = json.loads((finished / "manifest.json").read_text())
    del manifest["signature"]
    (finished / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(
        capsys, "run", str(tiny_suite), "--scale", "smoke", "--resume", str(finished), "--quiet"
    )
    assert "internal error" not in err and "Traceback" not in err
    assert code == 0 or (code == 2 and len(err.strip().splitlines()) == 1), err
