from pathlib import Path

import pytest

from harness.suite import SuiteError, available, load_suite

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
name = "tiny"
description = "a tiny suite"
[domain]
name = "sinusoid"
[base]
tasks = 4
[sweep]
workers = [1, 2]
order = [1, 2]
[scales.smoke]
runs = 2
seeds = [0]
checkpoints = [0, 3]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def test_product_sweep(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, GOOD), "smoke")
    assert [c.case_id for c in suite.cases] == [
        "w1-e1-t4-sum-o1",
        "w1-e1-t4-sum-o2",
        "w2-e1-t4-sum-o1",
        "w2-e1-t4-sum-o2",
    ]
    assert suite.plan.runs == 2 and suite.plan.checkpoints == (0, 3)
    assert suite.baseline == "w1-e1-t4-sum-o1"


def test_one_at_a_time_sweep_gives_scaling_ratio_rows(tmp_path: Path) -> None:
    text = GOOD.replace(
        "workers = [1, 2]\norder = [1, 2]",
        'mode = "one_at_a_time"\nworkers = [1, 2, 4]\nepochs = [1, 8]',
    )
    ids = [c.case_id for c in load_suite(write(tmp_path, text), "smoke").cases]
    assert ids == ["w1-e1-t4-sum-o2", "w2-e1-t4-sum-o2", "w4-e1-t4-sum-o2", "w1-e8-t4-sum-o2"]


@pytest.mark.parametrize(
    "old,new,message",
    [
        ("tasks = 4", "taks = 4", "tiny.toml: base: unknown field(s) taks; accepted: mode"),
        ("tasks = 4", 'tasks = "4"', "tiny.toml: base: tasks must be int, got '4'"),
        ("workers = [1, 2]", "workers = []", "sweep.workers: must be a non-empty list"),
        ("workers = [1, 2]", "workers = [0, 2]", "sweep.workers: workers must be >= 1, got 0"),
        ("order = [1, 2]", "order = [3]", "order = 3 is not one of 1, 2"),
        ("workers = [1, 2]", "wrkers = [1]", "sweep: unknown axis 'wrkers'"),
        ('name = "sinusoid"', "name = 3", "domain.name: required"),
        ("runs = 2", "runs = 0", "scales.smoke.runs: must be an integer >= 1, got 0"),
        ("checkpoints = [0, 3]", "checkpoints = [0, 9]", "[9] beyond the 3 runs"),
        ('name = "tiny"', 'colour = 1\nname = "tiny"', "top level: unknown field(s) colour"),
        ("tasks = 4", "tasks = 4\ng = 1.5", "g must be in (0, 1], got 1.5"),
        ("tasks = 4", "tasks = 4\nalpha = -0.1", "alpha must be > 0, got -0.1"),
    ],
)
def test_bad_fields_name_file_field_and_accepted(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    with pytest.raises(SuiteError) as err:
        load_suite(write(tmp_path, GOOD.replace(old, new, 1)), "smoke")
    assert message in str(err.value)


def test_unknown_scale_and_suite(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no 'paper' preset; this suite has: smoke"):
        load_suite(write(tmp_path, GOOD), "paper")
    with pytest.raises(SuiteError, match="no 'huge' preset; this suite has: smoke"):
        load_suite(write(tmp_path, GOOD), "huge")
    with pytest.raises(SuiteError, match=r"scale '\.\./x': letters, digits"):
        load_suite(write(tmp_path, GOOD), "../x")
    with pytest.raises(
        SuiteError, match=r"no suite 'nope': not a \.toml file, nor one of: aggregation"
    ):
        load_suite("nope")


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("scale", ["smoke", "quick", "paper"])
def test_shipped_suites_are_valid_at_every_scale(name: str, scale: str) -> None:
    suite = load_suite(name, scale)
    assert suite.cases and suite.plan.seeds


def test_targets_and_published_rows_use_the_metrics_the_domain_declares(tmp_path: Path) -> None:
    """Navigation declares a return (higher is better) and a loss, no accuracy: a target on its
    return loads, one on accuracy is refused naming the field and what the domain accepts."""
    text = (ROOT / "suites" / "navigation.toml").read_text()
    path = tmp_path / "nav.toml"
    path.write_text(text + '\n[target]\nmetric = "return"\nvalue = -20.0\n')
    assert load_suite(path, "smoke").target is not None
    path.write_text(text + '\n[target]\nmetric = "accuracy"\nvalue = 0.9\n')
    with pytest.raises(SuiteError) as err:
        load_suite(path, "smoke")
    assert str(err.value).endswith(
        "target.metric: 'accuracy' is not a metric of the navigation domain; accepted: return, loss"
    )
