"""Only what pyproject.toml cannot say: the suite files ship inside the package.

``suites/*.toml`` stay the single source of truth in the repository; the wheel (and the sdist,
which tox installs from) carries them as package data of ``harness.suites``, so an installed
``dmaml-bench`` finds every suite by name from any directory. The pytest files that live beside
them in ``suites/`` are benchmarks of the checkout, not part of the package, so they are left out.
"""

from __future__ import annotations

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """build_py that ships only the data of the mapped ``harness.suites`` package."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        if package == "harness.suites":
            return []  # conftest.py and test_*.py stay in the repository
        modules: list[tuple[str, str, str]] = super().find_package_modules(package, package_dir)
        return modules


setup(
    packages=[
        *find_packages(include=["dmaml_core", "dmaml_core.*", "harness", "harness.*"]),
        "harness.suites",
    ],
    package_dir={"harness.suites": "suites"},
    package_data={"harness.suites": ["*.toml", "README.md"]},
    cmdclass={"build_py": BuildPy},
)
