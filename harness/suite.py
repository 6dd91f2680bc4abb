"""Suite files: load a TOML experiment, validate it with clear errors, expand it into cases.

A suite names a domain, a ``base`` case, ``sweep`` axes and per-scale presets (``smoke`` for CI in
seconds, ``quick`` for minutes, ``paper`` for full fidelity). A sweep is a full product of its axes
or, with ``mode = "one_at_a_time"``, the thesis' scaling-ratio rows: the baseline plus every other
value of one axis at a time, the rest at baseline. See ``suites/README.md`` for the format.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# The suites shipped with dmaml-bench: inside the package when installed from a wheel or sdist
# (setup.py maps them there), else the checkout's suites/ folder they are built from.
_PACKAGED_SUITES = Path(__file__).resolve().parent / "suites"
SUITES_DIR = (
    _PACKAGED_SUITES
    if _PACKAGED_SUITES.is_dir()
    else Path(__file__).resolve().parent.parent / "suites"
)
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
            # a plug-in's class name (module:Class): no colon in folder names
            self.weight_generator.rpartition(":")[2] if self.weight_generator != "plain" else "",
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
# fields that may name a plug-in (dmaml_core/plugins.py), checked when the suite is loaded
PLUGGABLE = {"weight_generator": "weight generator"}


def _plugin(key: str, value: Any) -> bool:
    from dmaml_core.plugins import entry_point_names, is_import_path

    if key not in PLUGGABLE or not isinstance(value, str):
        return False
    return is_import_path(value) or value in entry_point_names(PLUGGABLE[key])


MINIMUM = {
    "workers": 1,
    "epochs": 1,
    "tasks": 1,
    "inner_steps": 1,
    "processes": 0,
    "threads": 0,
}
POSITIVE = ("alpha", "beta", "g")
# A suite's name is a folder name under --results-dir: no separators, nothing that climbs out.
SUITE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Sane upper bounds: a typo such as ``workers = 1000000`` should fail in a second, not build a
# million workers. Values above them are refused unless DMAML_BENCH_NO_LIMITS=1 is set.
MAXIMUM = {
    "workers": 4096,
    "processes": 1024,
    "threads": 1024,
    "epochs": 100_000,
    "tasks": 100_000,
    "inner_steps": 1_000,
    "runs": 10_000_000,
    "validation_tasks": 1_000_000,
    "validation_steps": 1_000,
}
NO_LIMITS_ENV = "DMAML_BENCH_NO_LIMITS"


def _check_maximum(path: Path, where: str, key: str, value: Any) -> None:
    limit = MAXIMUM.get(key)
    if limit is not None and value > limit and os.environ.get(NO_LIMITS_ENV) != "1":
        raise _fail(
            path,
            where,
            f"{key} = {value!r} is above the sane limit {limit:,}; if you really mean it, "
            f"set {NO_LIMITS_ENV}=1",
        )


@dataclass(frozen=True)
class RunPlan:
    """How much to run at one scale."""

    runs: int  # timed runs per case and seed (a warm-up run comes first and is not timed)
    seeds: tuple[int, ...]
    checkpoints: tuple[int, ...]  # validate after this many completed runs (0 = before training)
    validation_tasks: int
    validation_steps: int
    # exact checkpoint of the trained state every K runs; 0 = adaptive, so that checkpoints cost
    # at most 2% of the run time (harness/checkpoint.py); always at validations and at the end
    checkpoint_every: int = 0
    # per-run limit on the workers (processes/ray); None = scaled from the measured runs
    worker_timeout_s: float | None = None
    # lost worker processes or nodes (Ray) a case-seed survives by restarting them and going on
    # from its newest checkpoint; one more ends the sweep
    max_failures: int = 3
    # drift control (harness.calibration, harness.drift): a fixed calibration job of
    # ``calibration_s`` seconds brackets every block of ``block_runs`` timed runs (0: a tenth
    # of the runs, at least 1); "baseline": a MAML step of the baseline case on fixed tasks;
    # "matched": a code-independent job like the domain's network; "off": none
    calibration: str = "baseline"
    calibration_s: float = 0.1
    block_runs: int = 0
    # a case-seed whose block ran this many times slower or faster than the sweep's reference
    # speed is flagged in the report
    drift_threshold: float = 1.25

    @property
    def blocks(self) -> int:
        """Timed runs per block (``block_runs``, or about a tenth of the runs)."""
        return self.block_runs or max(1, -(-self.runs // 10))


# published rows on time; any other metric is a validation metric the suite's domain declares
# (dmaml_core/metrics.py: loss, accuracy, return, ...), with its direction
TIMING_METRICS = ("seconds_per_run", "relative_pct")
PUBLISHED_FIELDS = (
    "source", "case", "metric", "after_runs", "value", "ci95", "rule", "read_off_plot",
)  # fmt: skip


@dataclass(frozen=True)
class Published:
    """One number a paper reports for a case of this suite, so the report can say whether ours
    agrees with it instead of leaving the reader to look it up."""

    source: str  # where it is from, e.g. "paper table 2"
    case: str  # a case id of this suite (at any of its scales)
    metric: str  # one of TIMING_METRICS, or a metric the domain declares
    value: float
    after_runs: int | None = None  # validation checkpoint (runs done); required for accuracy/loss
    ci95: float | None = None  # their half-width, when they give one
    rule: str = ""  # how they computed it, e.g. "best of 3 seeds, ci95 over 600 tasks"
    read_off_plot: bool = False  # read off a figure: only as exact as a ruler

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """A validation quality whose first reach the report times ("does parallelising pay off":
    wall seconds to a good model, not seconds per run)."""

    metric: str  # a metric the domain declares: reached at or past value, in its direction
    value: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    # numbers from the paper/thesis the report puts beside ours; not part of the signature:
    # they change what a report compares against, never what a run records
    published: tuple[Published, ...] = field(default=())
    target: Target | None = None  # quality whose wall time to reach the report measures

    def baseline_case(self) -> Case:
        return next(c for c in self.cases if c.case_id == self.baseline)

    def signature(self) -> dict[str, Any]:
        """Everything that shapes the records of this suite at this scale: the run plan and
        every case's configuration. ``--resume`` refuses a suite whose signature changed."""
        plan = {k: v for k, v in asdict(self.plan).items() if k not in NOT_IN_SIGNATURE}
        return {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in plan.items()},
            "baseline": self.baseline,
            "cases": {c.case_id: c.config_hash() for c in self.cases},
        }


# Plan fields that change how a run is watched, not what it records: a resume may change them.
# Drift control is in the same group: it adds calibration records between runs and changes no run.
NOT_IN_SIGNATURE = frozenset(
    {
        "worker_timeout_s",
        "checkpoint_every",
        "max_failures",
        "calibration",
        "calibration_s",
        "block_runs",
        "drift_threshold",
    }
)
CALIBRATION_CHOICES = ("baseline", "matched", "off")
CALIBRATION_SECONDS = (0.01, 10.0)
DRIFT_THRESHOLD = (1.01, 10.0)


def with_overrides(
    suite: Suite,
    cases: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    backend: str | None = None,
) -> Suite:
    """The suite narrowed to the cases matching any of the ``cases`` glob patterns (on case ids),
    run with ``seeds`` and on ``backend`` instead of its own: what `run --cases/--seeds/--backend`
    runs. The result's signature says so, so a resume with other overrides is refused."""
    chosen = list(suite.cases)
    if cases:
        chosen = [c for c in chosen if any(fnmatch.fnmatchcase(c.case_id, p) for p in cases)]
        if not chosen:
            known = ", ".join(c.case_id for c in suite.cases)
            raise SuiteError(
                f"--cases {' '.join(cases)}: matches no case of {suite.name} ({known})"
            )
        if suite.baseline not in {c.case_id for c in chosen}:
            raise SuiteError(
                f"--cases {' '.join(cases)}: leaves out the baseline case {suite.baseline} that "
                "every comparison is against; add it"
            )
    baseline_index = [c.case_id for c in chosen].index(suite.baseline)
    if backend is not None:
        if backend not in CHOICES["backend"]:
            accepted = ", ".join(CHOICES["backend"])
            raise SuiteError(f"--backend {backend!r} is not one of {accepted}")
        chosen = [replace(c, backend=backend) for c in chosen]
    ids = [c.case_id for c in chosen]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"--backend {backend}: two cases would share a case id")
    plan = suite.plan
    if seeds is not None:
        if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
            raise SuiteError(f"--seeds {seeds}: give distinct integers >= 0, e.g. --seeds 0,1")
        plan = replace(plan, seeds=tuple(seeds))
    return replace(suite, cases=tuple(chosen), baseline=ids[baseline_index], plan=plan)


def signature_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two ``Suite.signature()`` dicts (empty: same plan)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "cases":
            continue
        if old.get(key) != new.get(key):
            changes.append(f"{key} {old.get(key, 'unset')!r} -> {new.get(key, 'unset')!r}")
    old_cases, new_cases = old.get("cases", {}), new.get("cases", {})
    added = sorted(set(new_cases) - set(old_cases))
    removed = sorted(set(old_cases) - set(new_cases))
    changed = sorted(
        c
        for c in set(old_cases) & set(new_cases)
        if old_cases[c] is not None and old_cases[c] != new_cases[c]  # None: not recorded
    )
    for what, ids in (("added", added), ("removed", removed), ("changed", changed)):
        if ids:
            changes.append(f"case(s) {what}: {', '.join(ids)}")
    return changes


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
    if expected is float and not math.isfinite(value):
        raise _fail(path, where, f"{key} must be a finite number, got {value!r}")
    if key in CHOICES and value not in CHOICES[key] and not _plugin(key, value):
        accepted = ", ".join(map(repr, CHOICES[key]))
        also = " or a plug-in as module:Class" if key in PLUGGABLE else ""
        raise _fail(path, where, f"{key} = {value!r} is not one of {accepted}{also}")
    if key in MINIMUM and value < MINIMUM[key]:
        raise _fail(path, where, f"{key} must be >= {MINIMUM[key]}, got {value!r}")
    _check_maximum(path, where, key, value)
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


PLAN_FIELDS = (
    "runs", "seeds", "checkpoints", "validation_tasks", "validation_steps", "checkpoint_every",
    "worker_timeout_s", "max_failures", "calibration", "calibration_s", "block_runs",
    "drift_threshold",
)  # fmt: skip
SCALE_FIELDS = (*PLAN_FIELDS, "sweep", "base", "domain_params", "target")
TOP_FIELDS = (
    "name", "description", "baseline", "labels", "domain", "base", "sweep", "variants", "run",
    "scales", "published", "target",
)  # fmt: skip


def _plan(path: Path, run: dict[str, Any], scale: str) -> RunPlan:
    _check_fields(path, f"run ({scale})", run, PLAN_FIELDS)
    missing = [k for k in ("runs", "seeds") if k not in run]
    if missing:
        raise _fail(path, f"scales.{scale}", f"missing {', '.join(missing)}")
    runs = run["runs"]
    if type(runs) is not int or runs < 1:
        raise _fail(path, f"scales.{scale}.runs", f"must be an integer >= 1, got {runs!r}")
    _check_maximum(path, f"scales.{scale}.runs", "runs", runs)
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
        _check_maximum(path, f"scales.{scale}.{key}", key, value)
    seeds = _int_list(path, f"scales.{scale}.seeds", run["seeds"], 0)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise _fail(
            path,
            f"scales.{scale}.seeds",
            f"seed(s) {', '.join(map(str, repeated))} listed twice; each seed must be distinct "
            "(a repeated seed would count the same runs twice)",
        )
    every = run.get("checkpoint_every", 0)
    if type(every) is not int or every < 0:
        raise _fail(
            path,
            f"scales.{scale}.checkpoint_every",
            f"must be an integer >= 0 (0 = adaptive), got {every!r}",
        )
    timeout = run.get("worker_timeout_s")
    if timeout is not None and (
        type(timeout) not in (int, float) or not timeout > 0 or not math.isfinite(timeout)
    ):
        raise _fail(
            path,
            f"scales.{scale}.worker_timeout_s",
            f"must be a number of seconds > 0, got {timeout!r}",
        )
    max_failures = run.get("max_failures", 3)
    if type(max_failures) is not int or max_failures < 0:
        raise _fail(
            path,
            f"scales.{scale}.max_failures",
            f"must be an integer >= 0 (0 = the first lost worker ends the sweep), "
            f"got {max_failures!r}",
        )
    return RunPlan(
        runs,
        seeds,
        tuple(sorted(set(checkpoints))),
        v_tasks,
        v_steps,
        every,
        None if timeout is None else float(timeout),
        max_failures,
        **_drift_control(path, run, scale, runs),
    )


def _drift_control(path: Path, run: dict[str, Any], scale: str, runs: int) -> dict[str, Any]:
    """The plan's calibration fields, each checked against what it accepts."""
    where = f"scales.{scale}"
    kind = run.get("calibration", "baseline")
    if kind not in CALIBRATION_CHOICES:
        choices = ", ".join(CALIBRATION_CHOICES)
        raise _fail(path, f"{where}.calibration", f"must be {choices}, got {kind!r}")
    low, high = CALIBRATION_SECONDS
    seconds = run.get("calibration_s", 0.1)
    if type(seconds) not in (int, float) or not low <= seconds <= high:
        raise _fail(
            path, f"{where}.calibration_s", f"must be seconds in [{low}, {high}], got {seconds!r}"
        )
    block = run.get("block_runs", 0)
    if type(block) is not int or not 0 <= block <= runs:
        raise _fail(
            path,
            f"{where}.block_runs",
            f"must be an integer in [0, runs = {runs}] (0: a tenth of the runs), got {block!r}",
        )
    low, high = DRIFT_THRESHOLD
    threshold = run.get("drift_threshold", 1.25)
    if type(threshold) not in (int, float) or not low <= threshold <= high:
        raise _fail(
            path,
            f"{where}.drift_threshold",
            f"must be a speed ratio in [{low}, {high}] (1.25: flag a block 25 % off), "
            f"got {threshold!r}",
        )
    return {
        "calibration": kind,
        "calibration_s": float(seconds),
        "block_runs": block,
        "drift_threshold": float(threshold),
    }


def load_suite(source: str | Path, scale: str = "smoke", *, published: bool = True) -> Suite:
    """Read and validate a suite (a file path or a name under ``suites/``) at one scale.
    ``published=False`` leaves out the ``published`` rows and the ``target`` (used to learn the
    case ids of the other scales, which the published rows may name)."""
    path = resolve(source)
    if not SUITE_NAME.fullmatch(scale) or scale in (".", ".."):
        raise SuiteError(
            f"scale {scale!r}: letters, digits, '_', '.' and '-' only (it names the results "
            "folder); smoke, quick, paper or one the suite defines under [scales]"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SuiteError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise SuiteError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); TOML suites must be UTF-8"
        ) from None
    except OSError as err:
        raise SuiteError(f"{path}: cannot read the suite file ({err.strerror})") from None
    _check_fields(path, "top level", data, TOP_FIELDS)
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise _fail(path, key, "required, a non-empty string")
    if not SUITE_NAME.fullmatch(data["name"]) or data["name"] in (".", ".."):
        raise _fail(
            path,
            "name",
            f"{data['name']!r} is not a suite name: letters, digits, '_', '.' and '-' only "
            "(it names the results folder), not '.' or '..'",
        )

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
    _check_domains(path, scale, cases)
    suite = Suite(
        name=data["name"],
        description=data["description"],
        path=path,
        scale=scale,
        plan=_plan(path, run, scale),
        cases=tuple(cases),
        baseline=baseline,
        labels=tuple(labels),
        published=_published(path, data, scale, set(ids)) if published else (),
        target=_target(path, data, preset, scale) if published else None,
    )
    _check_metrics(suite)
    return suite


def _check_metrics(suite: Suite) -> None:
    """A published row or a target on a validation metric needs a metric every case's domain
    declares (dmaml_core/metrics.py): a regression has a loss and no accuracy, and comparing
    with a metric it lacks would print "ours 0"."""
    from dmaml_core.tasks import make_domain

    declared: list[str] | None = None
    for case in suite.cases:
        names = [m.name for m in make_domain(case.domain, **case.params()).metrics]
        declared = names if declared is None else [n for n in declared if n in names]
    known = declared or []
    domain = suite.cases[0].domain if suite.cases else "?"
    with_timing = ", ".join([*known, *TIMING_METRICS])
    wheres = [
        (f"published[{i}].metric", row.metric, with_timing) for i, row in enumerate(suite.published)
    ]
    if suite.target is not None:
        wheres.append(("target.metric", suite.target.metric, ", ".join(known)))
    for where, metric, accepted in wheres:
        if metric not in TIMING_METRICS and metric not in known:
            raise _fail(
                suite.path,
                where,
                f"{metric!r} is not a metric of the {domain} domain; accepted: {accepted}",
            )


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _published(
    path: Path, data: dict[str, Any], scale: str, ids: set[str]
) -> tuple[Published, ...]:
    """The ``[[published]]`` rows, each checked; a case of another scale is accepted (the report
    says "not run at this scale"), a case of no scale is refused."""
    rows = data.get("published", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _fail(path, "published", "must be an array of tables ([[published]])")
    if not rows:
        return ()
    scales = data.get("scales", {})
    known = set(ids)
    for other in scales:
        if other != scale and isinstance(other, str) and SUITE_NAME.fullmatch(other):
            with contextlib.suppress(SuiteError):  # its own error shows when it is loaded
                known |= {c.case_id for c in load_suite(path, other, published=False).cases}
    paper = scales.get("paper", {}) if isinstance(scales.get("paper"), dict) else {}
    paper_runs = paper.get("runs", _table(path, data, "run").get("runs"))
    out = []
    for i, row in enumerate(rows):
        where = f"published[{i}]"
        _check_fields(path, where, row, PUBLISHED_FIELDS)
        missing = [k for k in ("source", "case", "metric", "value") if k not in row]
        if row.get("metric") not in TIMING_METRICS and "after_runs" not in row:
            missing.append("after_runs")
        if missing:
            raise _fail(path, where, f"missing {', '.join(missing)}")
        for key in ("source", "case", "rule"):
            if key in row and (not isinstance(row[key], str) or not row[key]):
                raise _fail(path, f"{where}.{key}", f"must be a non-empty string, got {row[key]!r}")
        metric = row["metric"]
        if not isinstance(metric, str) or not metric:
            accepted = ", ".join(TIMING_METRICS)
            raise _fail(
                path,
                f"{where}.metric",
                f"must be {accepted} or a metric the domain declares, got {metric!r}",
            )
        if row["case"] not in known:
            raise _fail(
                path,
                f"{where}.case",
                f"{row['case']!r} is a case id of none of this suite's scales; "
                f"cases at {scale}: {', '.join(sorted(ids))}",
            )
        if not _number(row["value"]):
            raise _fail(path, f"{where}.value", f"must be a number, got {row['value']!r}")
        ci95 = row.get("ci95")
        if ci95 is not None and not (_number(ci95) and ci95 >= 0):
            raise _fail(
                path, f"{where}.ci95", f"must be a number >= 0 (a half-width), got {ci95!r}"
            )
        after = row.get("after_runs")
        if after is not None:
            if type(after) is not int or after < 0:
                raise _fail(path, f"{where}.after_runs", f"must be an integer >= 0, got {after!r}")
            if type(paper_runs) is int and after > paper_runs + 1:
                raise _fail(
                    path,
                    f"{where}.after_runs",
                    f"{after} is beyond the {paper_runs + 1} runs of the paper scale "
                    f"(warm-up + {paper_runs} timed)",
                )
        plot = row.get("read_off_plot", False)
        if type(plot) is not bool:
            raise _fail(path, f"{where}.read_off_plot", f"must be true or false, got {plot!r}")
        out.append(
            Published(
                source=row["source"],
                case=row["case"],
                metric=metric,
                value=float(row["value"]),
                after_runs=after,
                ci95=None if ci95 is None else float(ci95),
                rule=row.get("rule", ""),
                read_off_plot=plot,
            )
        )
    return tuple(out)


def _target(path: Path, data: dict[str, Any], preset: dict[str, Any], scale: str) -> Target | None:
    """``[target]``, or the scale's ``[scales.<scale>.target]`` in its place."""
    where = f"scales.{scale}.target" if "target" in preset else "target"
    raw = preset.get("target", data.get("target"))
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail(path, where, "must be a table with metric and value")
    _check_fields(path, where, raw, ("metric", "value"))
    missing = [k for k in ("metric", "value") if k not in raw]
    if missing:
        raise _fail(path, where, f"missing {', '.join(missing)}")
    if not isinstance(raw["metric"], str) or raw["metric"] in TIMING_METRICS:
        raise _fail(
            path,
            f"{where}.metric",
            f"must be a validation metric the domain declares, got {raw['metric']!r}",
        )
    if not _number(raw["value"]):
        raise _fail(path, f"{where}.value", f"must be a number, got {raw['value']!r}")
    return Target(raw["metric"], float(raw["value"]))


def _check_domains(path: Path, scale: str, cases: list[Case]) -> None:
    """Build every case's domain (frozen dataclasses, no TensorFlow) so that a bad domain
    parameter fails now, naming the suite file, not after a results folder was made."""
    from dmaml_core.tasks import make_domain  # no TensorFlow import: domains load models lazily

    seen: set[str] = set()
    for case in cases:
        key = json.dumps([case.domain, case.params()], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            try:
                make_domain(case.domain, **case.params())
            except ValueError as err:
                raise _fail(path, f"domain (scale {scale})", str(err)) from None
        if case.weight_generator not in CHOICES["weight_generator"]:  # a plug-in: load it now
            from dmaml_core.weight_generators import make_weight_generator

            try:
                make_weight_generator(case.weight_generator)
            except ValueError as err:
                raise _fail(path, f"case {case.case_id}: weight_generator", str(err)) from None
        if case.mode == "task_parallel" and case.tasks < case.workers:
            raise _fail(
                path,
                f"case {case.case_id}",
                f"task_parallel mode splits tasks = {case.tasks} over workers = {case.workers}: "
                "needs tasks >= workers",
            )


def search_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Folders a suite *name* is looked up in, first match wins: ``extra`` (``--suites DIR``),
    then ``./suites`` of the working directory when it exists (a checkout, or a user's own
    suites), then the suites shipped with the package, so an installed ``dmaml-bench`` finds
    them from any directory."""
    for folder in extra:
        if not Path(folder).is_dir():
            raise SuiteError(f"--suites {folder}: no such folder (a folder of suite .toml files)")
    found: list[Path] = []
    for folder in [*map(Path, extra), Path.cwd() / "suites", SUITES_DIR]:
        if folder.is_dir() and all(folder.resolve() != f.resolve() for f in found):
            found.append(folder)
    return found


def resolve(source: str | Path, extra: Sequence[str | Path] = ()) -> Path:
    """The file of a suite given as a .toml path or a name in ``search_dirs(extra)``."""
    path = Path(source)
    if path.suffix == ".toml" and path.exists():
        return path
    for folder in search_dirs(extra):
        named = folder / f"{source}.toml"
        if named.is_file():
            return named
    known = ", ".join(available(extra))
    where = ", ".join(str(f) for f in search_dirs(extra))
    raise SuiteError(
        f"no suite {str(source)!r}: not a .toml file, nor one of: {known} (searched {where})"
    )


def available(extra: Sequence[str | Path] = ()) -> list[str]:
    """Suite names in ``search_dirs(extra)``."""
    return sorted({p.stem for folder in search_dirs(extra) for p in folder.glob("*.toml")})
