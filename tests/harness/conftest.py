from pathlib import Path

import pytest

TINY = """
name = "tiny"
description = "two small sinusoid cases"
[domain]
name = "sinusoid"
[base]
tasks = 4
alpha = {alpha}
[sweep]
workers = [1, 2]
[scales.smoke]
runs = 3
seeds = [0, 1]
checkpoints = [0, 4]
validation_tasks = 8
"""


@pytest.fixture
def tiny_suite(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(alpha=0.01))
    return path
