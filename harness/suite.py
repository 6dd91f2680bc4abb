"""Suite files: load a TOML experiment, validate it with clear errors, expand it into cases.

A suite names a domain, a ``base`` case, ``sweep`` axes and per-scale presets (``smoke`` for CI in
seconds, ``quick`` for minutes, ``paper`` for full fidelity). A sweep is a full product of its axes
or, with ``mode = "one_at_a_time"``, the thesis' scaling-ratio rows: the baseline plus every other
value of one axis at a time, the rest at baseline. See ``suites/README.md`` for the format.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
SCALES = ("smoke", "quick", "paper")


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file, the field and what is
    accepted."""


@dataclass(frozen=True)
class Case:
    """One point of a sweep: everything that decides what a DMAML run computes."""

    domain: str = "sinusoid"
    domain_params: tuple[tuple[str, Any], ...] = ()
    mode: str = "dmaml"  # or "task_parallel" (gradient averaging)
    backend: str = "serial"
    processes: int = 0  # processes backend: 0 = one per core
    threads: int = 0  # TF threads per worker process (processes/ray): 0 = cores // processes
    workers: int = 1
    epochs: int = 1
    tasks: int = 10
    inner_steps: int = 1
    order: int = 2
    aggregation: str = "sum"
    alpha: float = 0.01
    beta: float = 0.01
    weight_generator: str = "plain"
    g: float = 0.5  # interpolation factor of the `weighted` generator
    jit_compile: bool = False
    name: str = ""  # a variant's label; by default built from the swept axes

    @property
    def case_id(self) -> str:
        if self.name:
            return self.name
        core = f"w{self.workers}-e{self.epochs}-t{self.tasks}-{self.aggregation}"
        extras = [
            f"k{self.inner_steps}" if self.inner_steps != 1 else "",
            f"o{self.order}",
            self.weight_generator if self.weight_generator != "plain" else "",
            f"g{self.g:g}" if self.weight_generator == "weighted" else "",
            "tp" if self.mode == "task_parallel" else "",
            self.backend if self.backend != "serial" else "",
            f"th{self.threads}" if self.threads else "",
            f"b{self.beta:g}" if self.beta != Case.beta else "",
        ]
        return "-".join([core, *[e for e in extras if e]])

    def params(self) -> dict[str, Any]:
        return dict(self.domain_params)

    def config_hash(self) -> str:
        """Identity of what this case computes: a resumed sweep refuses to mix two of them."""
        blob = json.dumps({**asdict(self), "domain_params": self.params()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


CASE_FIELDS = {f.name: f for f in fields(Case)}
SWEEPABLE = [f for f in CASE_FIELDS if f not in ("domain", "domain_params", "name")]
CHOICES: dict[str, tuple[Any, ...]] = {
    "mode": ("dmaml", "task_parallel"),
    "backend": ("serial", "processes", "ray"),
    "order": (1, 2),
    "aggregation": ("sum", "mean"),
    "weight_generator": ("plain", "loss_median", "weighted", "loss_moving_average"),
}
MINIMUM = {
    "workers": 1,
    "epochs": 1,
    "tasks": 1,
    "inner_steps": 1,
    "processes": 0,
    "threads": 0,
}
POSITIVE = ("alpha", "beta", "g")


@dataclass(frozen=True)
class RunPlan:
    """How much to run at one scale."""

    runs: int  # timed runs per case and seed (a warm-up run comes first and is not timed)
    seeds: tuple[int, ...]
    checkpoints: tuple[int, ...]  # validate after this many completed runs (0 = before training)
    validation_tasks: int
    validation_steps: int


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: Path
    scale: str
    plan: RunPlan
    cases: tuple[Case, ...]
    baseline: str  # case id the comparisons are against
    labels: tuple[str, ...] = field(default=())  # notes printed with results, e.g. random data

    def baseline_case(self) -> Case:
        return next(c for c in self.cases if c.case_id == self.baseline)


def _fail(path: Path, where: str, message: str) -> SuiteError:
    return SuiteError(f"{path.name}: {where}: {message}")


def _check_fields(
    path: Path,
    where: str,
    table: dict[str, Any],
    accepted: Sequence[str],
    also: Sequence[str] = (),
) -> None:
    """Refuse keys that are not ``accepted`` (or ``also``, accepted but not advertised)."""
    unknown = sorted(set(table) - set(accepted) - set(also))
    if unknown:
        raise _fail(
            path, where, f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )


def _exact_type(value: Any, expected: type) -> bool:
    """Type check that does not take a bool for an int."""
    return type(value) is expected


def _check_value(path: Path, where: str, key: str, raw: Any) -> Any:
    expected: type = type(CASE_FIELDS[key].default)
    value: Any = raw
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not _exact_type(value, expected):
        raise _fail(path, where, f"{key} must be {expected.__name__}, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        accepted = ", ".join(map(repr, CHOICES[key]))
        raise _fail(path, where, f"{key} = {value!r} is not one of {accepted}")
    if key in MINIMUM and value < MINIMUM[key]:
        raise _fail(path, where, f"{key} must be >= {MINIMUM[key]}, got {value!r}")
    if key in POSITIVE and not value > 0:
        raise _fail(path, where, f"{key} must be > 0, got {value!r}")
    if key == "g" and value > 1:
        raise _fail(path, where, f"g must be in (0, 1], got {value!r}")
    return value


def _case_values(path: Path, where: str, table: dict[str, Any]) -> dict[str, Any]:
    _check_fields(path, where, table, SWEEPABLE, also=("name",))
    values = {k: _check_value(path, where, k, v) for k, v in table.items() if k != "name"}
    if "name" in table:
        if not isinstance(table["name"], str) or not table["name"]:
            raise _fail(path, where, "name must be a non-empty string")
        values["name"] = table["name"]
    return values


def _expand(path: Path, base: Case, sweep: dict[str, Any]) -> list[Case]:
    sweep = dict(sweep)
    mode = sweep.pop("mode", "product")
    if mode not in ("product", "one_at_a_time"):
        raise _fail(path, "sweep.mode", f"{mode!r} is not one of 'product', 'one_at_a_time'")
    axes: dict[str, list[Any]] = {}
    for key, values in sweep.items():
        if key not in SWEEPABLE:
            accepted = ", ".join(SWEEPABLE)
            raise _fail(path, "sweep", f"unknown axis {key!r}; accepted: {accepted}")
        if not isinstance(values, list) or not values:
            raise _fail(path, f"sweep.{key}", "must be a non-empty list of values")
        axes[key] = [_check_value(path, f"sweep.{key}", key, v) for v in values]
    if not axes:
        return [base]
    if mode == "product":
        keys = list(axes)
        return [
            replace(base, **dict(zip(keys, combo, strict=True)))
            for combo in itertools.product(*axes.values())
        ]
    cases = [base]
    for key, values in axes.items():
        cases.extend(replace(base, **{key: v}) for v in values if v != getattr(base, key))
    return cases


def _table(path: Path, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _fail(path, key, "must be a table")
    return value


def _int_list(
    path: Path, where: str, value: Any, minimum: int, empty: bool = False
) -> tuple[int, ...]:
    if not isinstance(value, list) or (not value and not empty):
        raise _fail(path, where, "must be a non-empty list of integers")
    for v in value:
        if type(v) is not int or v < minimum:
            raise _fail(path, where, f"values must be integers >= {minimum}, got {v!r}")
    return tuple(value)


PLAN_FIELDS = ("runs", "seeds", "checkpoints", "validation_tasks", "validation_steps")
SCALE_FIELDS = (*PLAN_FIELDS, "sweep", "base", "domain_params")
TOP_FIELDS = (
    "name", "description", "baseline", "labels", "domain", "base", "sweep", "variants", "run",
    "scales",
)  # fmt: skip


def _plan(path: Path, run: dict[str, Any], scale: str) -> RunPlan:
    _check_fields(path, f"run ({scale})", run, PLAN_FIELDS)
    missing = [k for k in ("runs", "seeds") if k not in run]
    if missing:
        raise _fail(path, f"scales.{scale}", f"missing {', '.join(missing)}")
    runs = run["runs"]
    if type(runs) is not int or runs < 1:
        raise _fail(path, f"scales.{scale}.runs", f"must be an integer >= 1, got {runs!r}")
    checkpoints = _int_list(
        path, f"scales.{scale}.checkpoints", run.get("checkpoints", [0]), 0, empty=True
    )
    total = runs + 1
    late = [c for c in checkpoints if c > total]
    if late:
        raise _fail(
            path,
            f"scales.{scale}.checkpoints",
            f"{late} beyond the {total} runs of this scale (warm-up + {runs} timed)",
        )
    v_tasks = run.get("validation_tasks", 100)
    v_steps = run.get("validation_steps", 1)
    for key, value in (("validation_tasks", v_tasks), ("validation_steps", v_steps)):
        if type(value) is not int or value < 1:
            raise _fail(path, f"scales.{scale}.{key}", f"must be an integer >= 1, got {value!r}")
    return RunPlan(
        runs,
        _int_list(path, f"scales.{scale}.seeds", run["seeds"], 0),
        tuple(sorted(set(checkpoints))),
        v_tasks,
        v_steps,
    )


def load_suite(source: str | Path, scale: str = "smoke") -> Suite:
    """Read and validate a suite (a file path or a name under ``suites/``) at one scale."""
    path = resolve(source)
    if scale not in SCALES:
        raise SuiteError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path.name}: not valid TOML: {err}") from None
    _check_fields(path, "top level", data, TOP_FIELDS)
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _fail(path, key, "required, a non-empty string")

    domain = _table(path, data, "domain")
    if not isinstance(domain.get("name"), str):
        raise _fail(path, "domain.name", "required: the task domain, e.g. 'sinusoid'")
    scales = _table(path, data, "scales")
    if scale not in scales:
        raise _fail(path, "scales", f"no {scale!r} preset; this suite has: {', '.join(scales)}")
    preset = scales[scale]
    if not isinstance(preset, dict):
        raise _fail(path, f"scales.{scale}", "must be a table")
    _check_fields(path, f"scales.{scale}", preset, SCALE_FIELDS)

    params = {k: v for k, v in domain.items() if k != "name"}
    params.update(_table(path, preset, "domain_params"))
    base_values = _case_values(path, "base", _table(path, data, "base"))
    base_values.update(_case_values(path, f"scales.{scale}.base", _table(path, preset, "base")))
    base = Case(domain=domain["name"], domain_params=tuple(sorted(params.items())), **base_values)

    if "variants" in data and "sweep" in data:
        raise _fail(path, "top level", "give either [sweep] or [[variants]], not both")
    if "variants" in data:
        variants = data["variants"]
        if not isinstance(variants, list) or not variants:
            raise _fail(path, "variants", "must be a non-empty array of tables")
        cases = [
            replace(base, **_case_values(path, f"variants[{i}]", v)) for i, v in enumerate(variants)
        ]
    else:
        sweep = {**_table(path, data, "sweep"), **_table(path, preset, "sweep")}
        cases = _expand(path, base, sweep)
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise _fail(path, "sweep", f"cases with the same id: {', '.join(duplicates)}")

    run = {**_table(path, data, "run"), **{k: v for k, v in preset.items() if k in PLAN_FIELDS}}
    baseline = data.get("baseline", ids[0])
    if baseline not in ids:
        raise _fail(path, "baseline", f"{baseline!r} is not a case id; cases: {', '.join(ids)}")
    labels = data.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise _fail(path, "labels", "must be a list of strings")
    return Suite(
        name=data["name"],
        description=data["description"],
        path=path,
        scale=scale,
        plan=_plan(path, run, scale),
        cases=tuple(cases),
        baseline=baseline,
        labels=tuple(labels),
    )


def resolve(source: str | Path) -> Path:
    path = Path(source)
    if path.suffix == ".toml" and path.exists():
        return path
    named = SUITES_DIR / f"{source}.toml"
    if named.exists():
        return named
    known = ", ".join(available())
    raise SuiteError(f"no suite {str(source)!r}: not a .toml file, nor one of: {known}")


def available() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
