"""Names that load code: a built-in name, ``module:Class``, or an installed entry point.

Where a suite names a domain or a weight generator it may name a plug-in: ``"mypkg.tasks:Cosine"``
imports ``mypkg.tasks`` (from ``sys.path``: PYTHONPATH, the working directory, installed packages)
and takes its ``Cosine``; a bare name that is not built in is looked up in the entry-point group
of its kind (``dmaml_bench.domains``, ``dmaml_bench.weight_generators``), so an installed package
can register ``cosine = "mypkg.tasks:Cosine"``. The built-ins go through the same lookup.

Every failure is a ``PluginError`` (a ``ValueError``) whose one line names the plug-in and what is
wrong; the suite loader adds the file and field, before anything runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

GROUPS = {
    "domain": "dmaml_bench.domains",
    "weight generator": "dmaml_bench.weight_generators",
}


# Files and package folders of the plug-ins loaded in this process: a failure whose innermost
# frame lies in one is the plug-in's, however it was installed (harness/cli.py says so)
_ORIGINS: set[Path] = set()


def _remember(found: Any) -> None:
    module = sys.modules.get(getattr(found, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if file:
        path = Path(file).resolve()
        _ORIGINS.add(path.parent if path.name == "__init__.py" else path)


def is_plugin_file(filename: str) -> bool:
    """Whether ``filename`` belongs to a plug-in loaded in this process."""
    path = Path(filename).resolve()
    return any(path == origin or path.is_relative_to(origin) for origin in _ORIGINS)


class PluginError(ValueError):
    """A plug-in that cannot be found, imported or used; the message is one line."""


def is_import_path(name: str) -> bool:
    return ":" in name


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _import(kind: str, name: str) -> Any:
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise PluginError(f"{kind} {name!r}: write module:Class, e.g. 'mypkg.tasks:Cosine'")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or whatever the module raises while importing
        raise PluginError(
            f"{kind} {name!r}: cannot import module {module_name!r} ({_one_line(err)}); "
            "is its folder on PYTHONPATH or the package installed?"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise PluginError(f"{kind} {name!r}: module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    return target


def entry_point_names(kind: str) -> list[str]:
    group = GROUPS.get(kind)
    return sorted(ep.name for ep in importlib.metadata.entry_points(group=group)) if group else []


def _entry_point(kind: str, name: str) -> Any | None:
    group = GROUPS.get(kind)
    if group is None:
        return None
    for ep in importlib.metadata.entry_points(group=group, name=name):
        try:
            return ep.load()
        except Exception as err:
            raise PluginError(
                f"{kind} {name!r}: entry point {ep.value!r} of group {group!r} does not load "
                f"({_one_line(err)})"
            ) from None
    return None


def resolve(kind: str, name: str, builtins: Mapping[str, Callable[..., T]]) -> Callable[..., T]:
    """The constructor ``name`` stands for: a built-in, ``module:Class``, or an entry point."""
    if name in builtins:
        return builtins[name]
    found = _import(kind, name) if is_import_path(name) else _entry_point(kind, name)
    if found is None:
        known = sorted({*builtins, *entry_point_names(kind)})
        raise PluginError(
            f"unknown {kind} {name!r}; known: {', '.join(known)}; or a plug-in as module:Class"
        )
    if not callable(found):
        raise PluginError(
            f"{kind} {name!r} is not a class or function (got {type(found).__name__})"
        )
    _remember(found)
    return found  # type: ignore[no-any-return]


def check_domain(name: str, domain: Any) -> None:
    """What the harness uses of a domain (dmaml_core/tasks/base.py ``Domain``), checked before
    TensorFlow is imported: a name, a loss kind, declared metrics, a model and a sampler, and
    hashable (workers and the compile cache key on it)."""
    from dmaml_core.metrics import Metric

    problems = [
        f"no {attr}" for attr in ("name", "loss", "metrics", "model", "sample")
        if not hasattr(domain, attr)
    ]  # fmt: skip
    if not problems:
        if getattr(domain, "loss", None) not in ("mse", "xent"):
            problems.append(f"loss must be 'mse' or 'xent', got {domain.loss!r}")
        metrics = domain.metrics
        if not (
            isinstance(metrics, tuple) and metrics and all(isinstance(m, Metric) for m in metrics)
        ):
            problems.append("metrics must be a non-empty tuple of dmaml_core.metrics.Metric")
        elif not any(m.name == "loss" and m.source == "loss" for m in metrics):
            problems.append("metrics must declare the query loss (name 'loss', source 'loss')")
        if not (callable(domain.model) and callable(domain.sample)):
            problems.append("model and sample must be methods")
        else:
            try:  # training calls sample(rng, n_tasks); validation adds split="test"
                inspect.signature(domain.sample).bind(None, 1)
                inspect.signature(domain.sample).bind(None, 1, "test")
            except TypeError:
                problems.append("sample must take (rng, n_tasks, split='train')")
        try:
            hash(domain)
        except TypeError:
            problems.append("must be hashable (a frozen dataclass)")
    if problems:
        raise PluginError(
            f"domain {name!r} does not satisfy the domain protocol: {'; '.join(problems)}"
        )


def check_weight_generator(name: str, generator: Any) -> None:
    """What the central learner uses of a merge rule: ``name``, ``merge(old, workers, history)``."""
    merge = getattr(generator, "merge", None)
    problems = []
    if not isinstance(getattr(generator, "name", None), str):
        problems.append("no name (a str)")
    if not callable(merge):
        problems.append("no merge(old, workers, history) method")
    elif len(inspect.signature(merge).parameters) != 3:
        problems.append("merge must take (old, workers, history)")
    if problems:
        raise PluginError(
            f"weight generator {name!r} does not satisfy the weight generator protocol: "
            + "; ".join(problems)
        )


def provenance(kind: str, name: str, builtins: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a manifest records of a plug-in: its module, class, file, the distribution's version
    where it is installed, else the SHA-256 of its source file. None for a built-in."""
    if name in builtins:
        return None
    found = resolve(kind, name, builtins)
    module_name = getattr(found, "__module__", "") or ""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    record: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "module": module_name,
        "class": getattr(found, "__qualname__", repr(found)),
        "file": file,
    }
    top = module_name.partition(".")[0]
    distributions = importlib.metadata.packages_distributions().get(top, [])
    if distributions:
        record["distribution"] = distributions[0]
        record["version"] = importlib.metadata.version(distributions[0])
    if file and Path(file).is_file():
        record["sha256"] = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    return record
