"""Running the CLI in-process from tests, and what its errors must look like."""

from __future__ import annotations

import pytest

from harness import cli


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``python -m harness ARGS``, run in this process."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_clear_line(err: str) -> str:
    """The one non-empty line of an expected error (no traceback), returned for more checks."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
