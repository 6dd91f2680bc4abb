"""Property: whatever a suite file holds, ``run --dry-run`` either accepts it (exit 0) or says
why in one line (exit 2), never a traceback. Hypothesis mutates the shipped suites the way users
break them: values of the wrong type or range, missing and extra fields, broken syntax, other
encodings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import cli

SUITES = sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.toml"))
ASSIGNMENT = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*=\s*)(.+)$")
LITERALS = [
    "0", "-1", "1", "2.5", "-0.0", "1e309", "nan", "inf", "100000000", "true", "false", '""',
    '"x"', '"sum"', "[]", "[0, 0]", "[1, 2.5]", '["a"]', "[[1]]", "{}", "{a = 1}",
    "1979-05-27", '"\\u00e9"', "0x10",
]  # fmt: skip


@st.composite
def mutated_suite(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from(SUITES)).read_text()
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(
            st.sampled_from(["value", "delete", "duplicate", "unknown", "rename", "truncate"])
        )
        match = ASSIGNMENT.match(lines[i])
        if action == "value" and match:
            literal = draw(st.sampled_from(LITERALS))
            lines[i] = f"{match.group(1)}{match.group(2)}{match.group(3)}{literal}"
        elif action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "unknown":
            lines.insert(i, f"{draw(st.sampled_from(['wrkers', 'runz', 'extra']))} = 1")
        elif action == "rename" and match:
            lines[i] = f"{match.group(1)}{match.group(2)}x{match.group(3)}{match.group(4)}"
        elif action == "truncate":
            lines = lines[: i + 1]
            lines[-1] = lines[-1][: draw(st.integers(0, len(lines[-1])))]
        if not lines:
            lines = [""]
    data = "\n".join(lines).encode()
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1-bytes", "utf-16"]))
    if encoding == "latin-1-bytes":
        data = data.replace(b"a", b"\xe9", 1)
    elif encoding == "utf-16":
        data = data.decode().encode("utf-16")
    return data


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=mutated_suite(), scale=st.sampled_from(["smoke", "quick", "paper"]))
def test_any_suite_file_is_accepted_or_refused_in_one_line(
    content: bytes, scale: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mutant.toml"
    path.write_bytes(content)
    code = cli.main(["run", str(path), "--scale", scale, "--dry-run"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    if code == 0:
        assert "is valid" in out and not err
    else:
        assert code == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "internal error" not in lines[0], err
