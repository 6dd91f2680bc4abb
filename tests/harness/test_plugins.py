"""Plug-ins named in a suite (dmaml_core/plugins.py): module:Class and entry points load, and a bad
plug-in is one clear line at --dry-run, naming the suite field."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from dmaml_core.plugins import PluginError, resolve
from dmaml_core.tasks import DOMAINS, make_domain
from dmaml_core.weight_generators import make_weight_generator
from tests.harness.cli_helpers import one_clear_line, run_cli

GOOD = """
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dmaml_core.metrics import MSE
from dmaml_core.models import MLP
from dmaml_core.types import Tasks
from dmaml_core.weight_generators import Merge, mean_of


@dataclass(frozen=True)
class Line:
    k: int = 5
    name: ClassVar[str] = "line"
    loss: ClassVar[str] = "mse"
    metrics: ClassVar[tuple] = (MSE,)

    def model(self):
        return MLP((1, 8, 1))

    def sample(self, rng, n_tasks, split="train"):
        slope = rng.uniform(-2, 2, (n_tasks, 1, 1))
        x = rng.uniform(-1, 1, (n_tasks, 2 * self.k, 1)).astype(np.float32)
        y = (slope * x).astype(np.float32)
        return Tasks(x[:, : self.k], y[:, : self.k], x[:, self.k :], y[:, self.k :])


@dataclass(frozen=True)
class NoMetrics:
    name: ClassVar[str] = "nometrics"
    loss: ClassVar[str] = "mse"

    def model(self):
        return MLP((1, 8, 1))

    def sample(self, rng, n_tasks, split="train"):
        raise NotImplementedError


@dataclass(frozen=True)
class First:
    name = "first"

    def merge(self, old, workers, history):
        return Merge(mean_of(workers, [0]), (0,), False)


class NoMerge:
    name = "nomerge"
"""

SUITE = """
name = "plug"
description = "plug-in test"

[domain]
name = "{domain}"
{params}

[base]
tasks = 2
weight_generator = "{generator}"

[sweep]
workers = [2]

[run]
checkpoints = [0, 3]
validation_tasks = 4

[scales.smoke]
runs = 2
seeds = [0]
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "plugs"
    folder.mkdir()
    (folder / "myplug.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("myplug", None)


def write_suite(
    tmp_path: Path, domain: str = "myplug:Line", generator: str = "myplug:First", params: str = ""
) -> Path:
    path = tmp_path / "plug.toml"
    path.write_text(SUITE.format(domain=domain, generator=generator, params=params))
    return path


def test_module_class_plugins_load_and_run(
    plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    domain = make_domain("myplug:Line", k=3)
    assert domain.name == "line" and domain.metrics[0].name == "loss"
    assert make_weight_generator("myplug:First").name == "first"
    suite = write_suite(tmp_path)
    code, _, err = run_cli(capsys, "run", str(suite), "--scale", "smoke", "--quiet",
                           "--results-dir", str(tmp_path / "results"))  # fmt: skip
    assert code == 0, err
    (manifest,) = (tmp_path / "results" / "plug").glob("*/manifest.json")
    text = manifest.read_text()
    assert '"module": "myplug"' in text and '"class": "Line"' in text and '"sha256"' in text


@pytest.mark.parametrize(
    ("domain", "generator", "params", "field", "message"),
    [
        ("nosuch:Line", "plain", "", "domain (scale smoke)", "cannot import module 'nosuch'"),
        ("myplug:Circle", "plain", "", "domain (scale smoke)", "module 'myplug' has no 'Circle'"),
        ("myplug:NoMetrics", "plain", "", "domain (scale smoke)", "no metrics"),
        ("myplug:Line", "plain", "k = 'five'", "domain (scale smoke)", "k must be an integer"),
        ("myplug:Line", "plain", "width = 3", "domain (scale smoke)", "width"),
        ("myplug", "plain", "", "domain (scale smoke)", "unknown domain 'myplug'"),
        ("myplug:Line", "myplug:NoMerge", "", "weight_generator", "no merge(old, workers"),
        ("myplug:Line", "nosuch:Merge", "", "weight_generator", "cannot import module 'nosuch'"),
        ("myplug:Line", "trimmed", "", "weight_generator", "or a plug-in as module:Class"),
    ],
)
def test_a_bad_plugin_is_one_line_at_dry_run(
    plugin_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    domain: str,
    generator: str,
    params: str,
    field: str,
    message: str,
) -> None:
    suite = write_suite(tmp_path, domain, generator, params)
    code, _, err = run_cli(capsys, "run", str(suite), "--scale", "smoke", "--dry-run",
                           "--results-dir", str(tmp_path / "results"))  # fmt: skip
    line = one_clear_line(err)
    assert code == 2 and "plug.toml" in line and field in line and message in line, line
    assert not (tmp_path / "results").exists()


def test_entry_points_name_installed_plugins(plugin_dir: Path) -> None:
    """An installed package registers a short name in the group of its kind."""
    dist = plugin_dir / "myplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[dmaml_bench.domains]\nline = myplug:Line\n\n"
        "[dmaml_bench.weight_generators]\nfirst = myplug:First\n"
    )
    assert make_domain("line", k=2).name == "line"
    assert make_weight_generator("first").name == "first"
    with pytest.raises(PluginError, match=r"known: .*line.*omniglot"):
        resolve("domain", "circle", DOMAINS)


def test_builtins_satisfy_the_protocols() -> None:
    for name in DOMAINS:
        if name not in ("omniglot", "miniimagenet"):  # these need their data to be built
            make_domain(name)
    for name in ("plain", "loss_median", "weighted", "loss_moving_average"):
        make_weight_generator(name)


def test_an_error_inside_the_plugin_module_is_one_line(
    plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (plugin_dir / "broken.py").write_text(textwrap.dedent("raise RuntimeError('boom\\nmore')\n"))
    suite = write_suite(tmp_path, domain="broken:Line", generator="plain")
    code, _, err = run_cli(capsys, "run", str(suite), "--scale", "smoke", "--dry-run")
    line = one_clear_line(err)
    assert code == 2 and "RuntimeError: boom" in line


def test_a_sample_without_a_default_split_is_refused(plugin_dir: Path) -> None:
    """Training calls sample(rng, n_tasks): a split without a default would fail mid-run."""
    (plugin_dir / "nosplit.py").write_text(GOOD.replace('split="train"):', "split):"))
    with pytest.raises(PluginError, match="sample must take"):
        make_domain("nosplit:Line")
    sys.modules.pop("nosplit", None)


@pytest.mark.parametrize(
    ("bug", "error"),
    [
        ("slope = rng.uniformly", "AttributeError"),  # was an internal error
        ("slope = np.zeros((2, 2)) @ np.zeros((3, 3)); slope = rng.uniform", "ValueError"),
    ],
)
def test_a_bug_in_plugin_code_is_named_as_such(
    plugin_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], bug: str, error: str
) -> None:
    """A plug-in that fails mid-run (here its sampler) is reported at its own file and line, not
    as an internal error of the harness, nor as bad input (a ValueError would read as one)."""
    broken = GOOD.replace("slope = rng.uniform", bug)
    (plugin_dir / "buggy.py").write_text(broken)
    suite = write_suite(tmp_path, domain="buggy:Line", generator="plain")
    code, _, err = run_cli(capsys, "run", str(suite), "--scale", "smoke", "--quiet",
                           "--results-dir", str(tmp_path / "results"))  # fmt: skip
    line = err.strip().splitlines()[-1]  # after "results so far kept in ..."
    assert code == 1 and "error: plug-in code failed at" in line and "buggy.py:" in line, err
    assert error in line and "internal error" not in line
    sys.modules.pop("buggy", None)
