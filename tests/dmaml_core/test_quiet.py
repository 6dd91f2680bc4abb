"""Quiet start-up of ``python -m harness`` / ``dmaml-bench``: no TensorFlow greeting on stderr,
unless the user asks for TensorFlow's logs with TF_CPP_MIN_LOG_LEVEL=0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GREETING = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")


def python(args: list[str], cwd: Path, level: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def test_stderr_captured_hides_what_c_code_writes_to_fd_2(tmp_path: Path) -> None:
    code = (
        "import os; from dmaml_core.quiet import stderr_captured\n"
        "with stderr_captured() as sink:\n"
        "    os.write(2, b'hidden')\n"
        "    sink.seek(0); print(sink.read().decode())\n"
        "os.write(2, b'shown')\n"
    )
    out = python(["-c", code], tmp_path, None)
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "hidden", "shown")


@pytest.mark.parametrize("level,hooked", [(None, True), ("2", True), ("3", True), ("0", False)])
def test_quiet_unless_the_user_asks_for_everything(
    tmp_path: Path, level: str | None, hooked: bool
) -> None:
    code = (
        "import os, sys; from dmaml_core.quiet import quiet_startup; quiet_startup()\n"
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'],"
        " any(type(f).__name__ == '_QuietTensorFlowFinder' for f in sys.meta_path))\n"
    )
    out = python(["-c", code], tmp_path, level)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [level or "2", str(hooked)]


SUITE = """
name = "quiet"
description = "two processes, to hear whether the workers greet"
[domain]
name = "sinusoid"
[base]
tasks = 4
workers = 2
backend = "{backend}"
[scales.smoke]
runs = 2
seeds = [0]
checkpoints = [0]
validation_tasks = 4
"""


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("backend", ["serial", "processes"])
def test_run_starts_quietly_in_the_driver_and_the_workers(tmp_path: Path, backend: str) -> None:
    suite = tmp_path / "quiet.toml"
    suite.write_text(SUITE.format(backend=backend))
    args = ["run", str(suite), "--scale", "smoke", "--quiet", "--results-dir", str(tmp_path)]
    out = python(["-m", "harness", *args], tmp_path, None)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not [g for g in GREETING if g in out.stderr], out.stderr[:2000]
    assert out.stdout.startswith("quiet (smoke)")


def test_intended_retracing_is_not_reported_but_other_tensorflow_warnings_are(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CompiledMaml traces per layout and chunk shape on purpose: TensorFlow's retracing advice
    is dropped; any other warning of its logger still shows."""
    import logging

    import tensorflow as tf

    from dmaml_core.quiet import quiet_startup

    quiet_startup()
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for n in range(1, 8):  # a new shape each call: retracing every time
            f = tf.function(lambda x: x * 2)
            f(tf.zeros([n]))
            f(tf.zeros([n, 1]))
        logging.getLogger("tensorflow").warning("something else")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("retracing" in m for m in messages)
    assert "something else" in messages
