"""`run --cases/--seeds/--backend` and scales a suite names itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.cli_helpers import one_clear_line, run_cli


def records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]


def test_cases_and_seeds_narrow_the_run_and_are_recorded(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke", "--quiet",
                           "--results-dir", str(results),
                           "--cases", "w1-*", "--seeds", "1")  # fmt: skip
    assert code == 0, err
    (folder,) = (results / "tiny").iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["overrides"] == {"cases": ["w1-*"], "seeds": [1]}
    assert manifest["plan"]["seeds"] == [1] and manifest["cases"] == ["w1-e1-t4-sum-o2"]
    assert {(r["case_id"], r["seed"]) for r in records(folder)} == {("w1-e1-t4-sum-o2", 1)}
    # a resume with other overrides is another plan: refused, naming what changed
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "smoke", "--quiet",
                           "--results-dir", str(results), "--resume", str(folder),
                           "--cases", "w1-*", "--seeds", "0,1")  # fmt: skip
    line = one_clear_line(err)
    assert code == 2 and "plan changed" in line and "seeds [1] -> [0, 1]" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cases", "w9*"], "--cases w9*: matches no case of tiny"),
        (["--cases", "w2*"], "leaves out the baseline case w1-e1-t4-sum-o2"),
        (["--seeds", "0,x"], "--seeds '0,x'"),
        (["--seeds", "1,1"], "distinct integers >= 0"),
        (["--backend", "gpu"], "invalid choice: 'gpu'"),
        (["--scale", "huge"], "scales: no 'huge' preset; this suite has: smoke"),
    ],
)
def test_bad_overrides_are_one_line_before_any_folder(
    tiny_suite: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    results = tmp_path / "results"
    base = ["run", str(tiny_suite), "--results-dir", str(results)]
    if "--scale" not in args:
        base += ["--scale", "smoke"]
    try:
        code, _, err = run_cli(capsys, *base, *args)
    except SystemExit as exit_:  # argparse's own refusal (exit status 2, usage + one line)
        code, err = int(exit_.code or 0), capsys.readouterr().err.splitlines()[-1]
    assert code == 2 and message in (err if "\n" not in err.strip() else one_clear_line(err))
    assert not results.exists()


def test_a_scale_the_suite_names_itself(
    tiny_suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tiny_suite.read_text() + "[scales.tiny2]\nruns = 1\nseeds = [0]\ncheckpoints = [0]\n"
    tiny_suite.write_text(text)
    results = tmp_path / "results"
    code, _, err = run_cli(capsys, "run", str(tiny_suite), "--scale", "tiny2", "--quiet",
                           "--results-dir", str(results), "--backend", "serial")  # fmt: skip
    assert code == 0, err
    (folder,) = (results / "tiny").iterdir()
    assert folder.name.startswith("tiny2-")
    assert json.loads((folder / "manifest.json").read_text())["scale"] == "tiny2"


def test_latest_folder_is_of_exactly_this_scale(tmp_path: Path) -> None:
    """A scale a suite names itself, 'quick-gpu', is not a 'quick' folder."""
    from harness.store import RunFolder

    quick = RunFolder.create(tmp_path, "s", "quick")
    quick.write_manifest({"suite": "s", "scale": "quick"})
    other = RunFolder.create(tmp_path, "s", "quick-gpu")  # created later: newer stamp
    other.write_manifest({"suite": "s", "scale": "quick-gpu"})
    found = RunFolder.latest(tmp_path, "s", "quick")
    assert found is not None and found.path == quick.path
    again = RunFolder.latest(tmp_path, "s", "quick-gpu")
    assert again is not None and again.path == other.path
