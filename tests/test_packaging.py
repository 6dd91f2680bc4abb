"""dmaml-bench installs like a real package: a wheel, installed non-editable into a fresh virtual
environment, runs the main suite from an unrelated directory and writes its results there.

How the fresh environment gets its dependencies: TensorFlow and the rest are large and this check
must not download them (CI may be offline, and it would take minutes), so the wheel is installed
with ``--no-deps`` and a ``.pth`` file in the fresh environment's site-packages appends the
running environment's site-packages to ``sys.path``. A ``.pth`` line that is a path only adds that
folder: the ``.pth`` files inside it, among them the hook of this checkout's editable install, are
not run, so ``harness`` still comes from the wheel (the test checks ``harness.__file__``), and the
fresh site-packages come first on ``sys.path``. The wheel is built from a copy of the sources so
the build leaves nothing (build/, *.egg-info) in the checkout.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300
PIP = (sys.executable, "-m", "pip")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False
    )
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr[-3000:]}"
    return result


def _copy_sources(target: Path) -> Path:
    """What the sdist holds: project files, the two packages and the suite files."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    for package in ("dmaml_core", "harness"):
        shutil.copytree(ROOT / package, target / package, ignore=ignore)
    (target / "suites").mkdir()
    for path in [*(ROOT / "suites").glob("*.toml"), ROOT / "suites" / "README.md"]:
        shutil.copy2(path, target / "suites" / path.name)
    return target


@pytest.mark.slow
@pytest.mark.integration
def test_wheel_installs_and_runs_from_any_directory(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    source = _copy_sources(tmp_path / "src")
    dist = tmp_path / "dist"
    # the sdist first, as tox does: the wheel is built from what the sdist holds
    sdist = _run(
        [sys.executable, "-c", "import setuptools.build_meta as b; print(b.build_sdist('sdist'))"],
        cwd=source,
    ).stdout.split()[-1]
    with tarfile.open(source / "sdist" / sdist) as archive:
        names = archive.getnames()
        assert any(n.endswith("suites/main.toml") for n in names), names
        archive.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    _run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(unpacked)],
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("dmaml_bench-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run(
        [*PIP, "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        cwd=tmp_path,
    )
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).stdout.strip()
    )
    (site / "_dmaml_bench_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = _run([str(python), "-c", "import harness; print(harness.__file__)"], cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # the wheel, not ROOT

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = str(venv / "bin" / "dmaml-bench")
    assert _run([script, "--help"], cwd=elsewhere).stdout.startswith("usage: dmaml-bench ")
    listed = _run([script, "list"], cwd=elsewhere)
    assert "main" in listed.stdout and "time_measurement" in listed.stdout
    run = _run([script, "run", "main", "--scale", "smoke", "--quiet"], cwd=elsewhere)
    assert "oneDNN" not in run.stderr and "absl" not in run.stderr  # quiet start-up

    (folder,) = (elsewhere / "results" / "local" / "main").glob("smoke-*")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert Path(manifest["suite_file"]).is_relative_to(site)  # the suite shipped in the wheel
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    runs = [r for r in records if r.get("kind") == "run"]
    assert runs and all(r["device"]["kind"] in ("cpu", "gpu") for r in runs)


def _make_test_commands() -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("test:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(BIN)/", ""))
    return recipe


def _tox_commands() -> list[str]:
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    commands = tox["testenv"]["commands"].strip().splitlines()
    return [" ".join(c.replace("{posargs}", "").split()) for c in commands]


def test_tox_and_make_run_the_same_checks() -> None:
    """CI runs `make test`, a user may run `tox`: both must check the same things."""
    make = _make_test_commands()
    assert make == _tox_commands()
    assert "ruff format --check ." in make and any("--benchmark-only" in c for c in make)
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    extras = set(tox["testenv"]["extras"].split())
    assert extras == {"test", "rl"}  # rl: the navigation suite and its tests need gymnasium
    assert '-e ".[test,rl]"' in (ROOT / "Makefile").read_text()  # make installs the same
