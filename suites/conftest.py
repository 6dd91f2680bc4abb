"""pytest-benchmark glue: ``pytest suites/ --benchmark-only [--scale smoke|quick|paper]
[--suite NAME] [--benchmark-histogram] [--benchmark-autosave]``."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness.machine import device_info, git_info, library_versions
from harness.suite import SCALES, available, load_suite, resolve


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--scale",
        choices=SCALES,
        default="smoke",
        help="suite scale for the benchmark cases (default: smoke)",
    )
    parser.addoption(
        "--suite",
        action="append",
        default=[],
        help="only these suites (repeatable; default: all under suites/)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "suite_case" not in metafunc.fixturenames:
        return
    scale = metafunc.config.getoption("--scale")
    names = metafunc.config.getoption("--suite") or available()
    params, ids = [], []
    for name in names:
        suite = load_suite(resolve(name), scale)
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
