"""pytest-benchmark glue: ``pytest suites/ --benchmark-only [--scale smoke|quick|paper]``."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from harness.suite import SCALES, available, load_suite


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
        suite = load_suite(name, scale)
        for case in suite.cases:
            for seed in suite.plan.seeds:
                params.append((suite, case, seed))
                ids.append(f"{name}/{case.case_id}/seed{seed}")
    metafunc.parametrize("suite_case", params, ids=ids)
