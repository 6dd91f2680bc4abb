"""pytest-benchmark glue: ``pytest suites/ --benchmark-only [--scale smoke|quick|paper]
[--suite NAME] [--benchmark-histogram] [--benchmark-autosave]``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tomllib

from harness.data_source import STAND_IN_FILE
from harness.machine import device_info, git_info, library_versions
from harness.suite import SCALES, available, load_suite, resolve


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--scale",
        default="smoke",
        help="suite scale for the benchmark cases: smoke (default), quick, paper, or one a suite "
        "defines (suites without it are skipped)",
    )
    parser.addoption(
        "--suite",
        action="append",
        default=[],
        help="only these suites' cases (repeatable; default: every suite under suites/ and the "
        "micro-benchmarks beside them, which --suite leaves out)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--suite NAME`` asks for that suite's cases: the micro-benchmarks (meta step, backend
    overhead, machine peak, ...), which belong to no suite, are deselected, as pytest's ``-k``
    would, and counted as such."""
    if not config.getoption("--suite"):
        return
    keep = [item for item in items if "suite_case" in getattr(item, "fixturenames", ())]
    dropped = [item for item in items if item not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_terminal_summary(terminalreporter: Any) -> Any:
    """pytest-benchmark raises ``PerformanceRegression`` out of its terminal summary when
    ``--benchmark-compare-fail`` trips, which pytest prints as an INTERNALERROR traceback. Here it
    ends as what it is: the regressed benchmarks (already listed above by pytest-benchmark), one
    line, exit status 1."""
    from pytest_benchmark.session import PerformanceRegression

    outcome = yield
    error = outcome.excinfo[1] if outcome.excinfo else None
    if isinstance(error, PerformanceRegression):
        outcome.force_result(None)
        bench = terminalreporter.config._benchmarksession
        names = ", ".join(name for name, _ in bench.performance_regressions)
        terminalreporter.write_line(
            f"FAILED: performance regressed beyond --benchmark-compare-fail: {names}", red=True
        )
        _SESSION["session"].exitstatus = pytest.ExitCode.TESTS_FAILED


_SESSION: dict[str, pytest.Session] = {}


def pytest_sessionstart(session: pytest.Session) -> None:
    _SESSION["session"] = session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "suite_case" not in metafunc.fixturenames:
        return
    scale = metafunc.config.getoption("--scale")
    names = metafunc.config.getoption("--suite") or available()
    params, ids = [], []
    for name in names:
        path = resolve(name)
        if scale not in SCALES and scale not in tomllib.loads(path.read_text()).get("scales", {}):
            continue  # a scale some suites define for themselves: the others have no such preset
        suite = load_suite(path, scale)
        for case in suite.cases:
            for seed in suite.plan.seeds:
                params.append((suite, case, seed))
                ids.append(f"{name}/{case.case_id}/seed{seed}")
    metafunc.parametrize("suite_case", params, ids=ids)


@pytest.fixture(scope="session")
def provenance() -> dict[str, Any]:
    """Library versions, git commit and device, once per session, for every case's extra_info
    (pytest-benchmark's own machine_info has no TensorFlow version or oneDNN state)."""
    return {"versions": library_versions(), "git": git_info(), "device": device_info()}


@pytest.fixture(scope="session", autouse=True)
def miniimagenet_fixture(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The miniImageNet suites' smoke runs need data that cannot be redistributed. Where the real
    data set is not found, a small synthetic one in its pickle format (flat-colour classes, 84x84
    RGB) stands in for it, through ``$DMAML_DATA``; its cases say so in ``extra_info``. It checks
    that the suites run end to end, never what miniImageNet accuracy is."""
    from dmaml_core.tasks.miniimagenet import DatasetNotFoundError, find_miniimagenet

    try:
        find_miniimagenet(None, ("train", "val", "test"))
        return None
    except DatasetNotFoundError:
        pass
    root = tmp_path_factory.mktemp("data")
    write_synthetic_miniimagenet(root / "miniimagenet")
    previous = os.environ.get("DMAML_DATA")
    os.environ["DMAML_DATA"] = str(root)
    yield "synthetic test fixture (the real miniImageNet is absent here)"
    if previous is None:
        os.environ.pop("DMAML_DATA", None)
    else:
        os.environ["DMAML_DATA"] = previous


def write_synthetic_miniimagenet(folder: Path, classes: int = 6, per_class: int = 20) -> None:
    """``mini-imagenet-cache-<split>.pkl`` files with ``classes`` flat-colour classes per split."""
    import pickle

    import numpy as np

    folder.mkdir(parents=True)
    for s, split in enumerate(("train", "val", "test")):
        colours = np.arange(classes * per_class) // per_class * 37 + 11 * s
        images = (colours % 256).astype(np.uint8)[:, None, None, None] * np.ones(
            (1, 84, 84, 3), np.uint8
        )
        class_dict = {
            f"n{split}{c:04d}": list(range(c * per_class, (c + 1) * per_class))
            for c in range(classes)
        }
        with (folder / f"mini-imagenet-cache-{split}.pkl").open("wb") as handle:
            pickle.dump({"image_data": images, "class_dict": class_dict}, handle)
    (folder / STAND_IN_FILE).write_text(
        f"synthetic flat-colour images ({classes} classes x {per_class} per split, written by "
        "suites/conftest.py): the real miniImageNet is absent here; the numbers say only that "
        "the suite runs end to end\n"
    )
