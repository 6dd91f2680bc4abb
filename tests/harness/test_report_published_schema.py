"""The suite fields the report compares against: ``[[published]]`` rows and ``[target]``. Each
mistake is refused with one line naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.suite import Published, Suite, SuiteError, Target, load_suite

SUITE = """
name = "tiny"
description = "a tiny suite"
[domain]
name = "sinusoid"
[base]
tasks = 4
[sweep]
workers = [1, 2]
[scales.smoke]
runs = 2
seeds = [0]
checkpoints = [0, 3]
[scales.paper]
runs = 100
seeds = [0, 1]
checkpoints = [0, 101]
sweep = {{ workers = [1, 2, 4] }}
{extra}
"""

GOOD_ROW = """
[[published]]
source = "paper table 1"
case = "w4-e1-t4-sum-o2"
metric = "loss"
after_runs = 101
value = 0.5
ci95 = 0.02
rule = "best of 3 seeds"
read_off_plot = true
"""


def load(tmp_path: Path, extra: str, scale: str = "smoke") -> Suite:
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE.format(extra=extra))
    return load_suite(path, scale)


def test_published_rows_and_target_are_read(tmp_path: Path) -> None:
    extra = GOOD_ROW + '\n[target]\nmetric = "loss"\nvalue = 0.7\n'
    extra += '[[published]]\nsource = "thesis 6.3"\ncase = "w1-e1-t4-sum-o2"\n'
    extra += 'metric = "seconds_per_run"\nvalue = 7\n'
    suite = load(tmp_path, extra)
    # w4 runs only at the paper scale: accepted at smoke (the report says "not run")
    assert suite.published == (
        Published(
            "paper table 1", "w4-e1-t4-sum-o2", "loss", 0.5, 101, 0.02, "best of 3 seeds", True
        ),
        Published("thesis 6.3", "w1-e1-t4-sum-o2", "seconds_per_run", 7.0),
    )
    assert suite.target == Target("loss", 0.7)


def test_a_scale_overrides_the_target(tmp_path: Path) -> None:
    text = SUITE.format(extra='[target]\nmetric = "loss"\nvalue = 0.7\n')
    text = text.replace(
        "checkpoints = [0, 3]\n",
        'checkpoints = [0, 3]\ntarget = { metric = "loss", value = 0.9 }\n',
    )
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    assert load_suite(path, "smoke").target == Target("loss", 0.9)
    assert load_suite(path, "paper").target == Target("loss", 0.7)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('case = "w4-e1-t4-sum-o2"', 'case = "w8-e1-t4-sum-o2"'),
         "published[0].case: 'w8-e1-t4-sum-o2' is a case id of none of this suite's scales"),
        (('metric = "loss"', 'metric = "mse"'),
         "published[0].metric: 'mse' is not a metric of the sinusoid domain; accepted: loss, "
         "seconds_per_run, relative_pct"),
        (("after_runs = 101", "after_runs = 102"),
         "published[0].after_runs: 102 is beyond the 101 runs of the paper scale"),
        (("after_runs = 101\n", ""), "published[0]: missing after_runs"),
        (('source = "paper table 1"\n', ""), "published[0]: missing source"),
        (("value = 0.5", 'value = "0.5"'), "published[0].value: must be a number, got '0.5'"),
        (("ci95 = 0.02", "ci95 = -1"), "published[0].ci95: must be a number >= 0"),
        (("read_off_plot = true", "read_off_plot = 1"),
         "published[0].read_off_plot: must be true or false, got 1"),
        (("rule =", "rules ="), "published[0]: unknown field(s) rules; accepted: source, case"),
    ],
)  # fmt: skip
def test_bad_published_rows_name_file_and_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(SuiteError) as err:
        load(tmp_path, GOOD_ROW.replace(*change))
    text = str(err.value)
    assert text.startswith("tiny.toml: ") and message in text and "\n" not in text


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            'metric = "mse"\nvalue = 1',
            "target.metric: 'mse' is not a metric of the sinusoid domain; accepted: loss",
        ),
        ('metric = "loss"', "target: missing value"),
        ('metric = "loss"\nvalue = true', "target.value: must be a number, got True"),
        ('metric = "loss"\nvalue = 1\nby = 2', "target: unknown field(s) by"),
    ],
)
def test_bad_target_names_file_and_field(tmp_path: Path, target: str, message: str) -> None:
    with pytest.raises(SuiteError) as err:
        load(tmp_path, f"[target]\n{target}\n")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_published_must_be_an_array_of_tables(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"tiny.toml: published: must be an array of tables"):
        path = tmp_path / "tiny.toml"
        path.write_text(SUITE.format(extra="").replace("[domain]", 'published = "t1"\n[domain]'))
        load_suite(path, "smoke")
