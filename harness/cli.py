"""Command line: ``python -m harness {run,list,report,check}``. One function per subcommand;
errors a user can fix print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import sys
import tempfile
import textwrap
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dmaml_core.layouts import check_layout_env
from harness.data_source import describe_data
from harness.machine import git_info
from harness.store import (
    FolderLock,
    RunFolder,
    StoreError,
    find_folders,
    finished_case_seeds,
    write_json_atomic,
)
from harness.suite import (
    NOT_IN_SIGNATURE,
    SCALES,
    Suite,
    SuiteError,
    available,
    load_suite,
    resolve,
    signature_changes,
    with_overrides,
)

ROOT = Path(__file__).resolve().parent.parent
# relative, so under the WORKING directory: an installed package must not write into site-packages
DEFAULT_RESULTS = Path("results") / "local"
LIST_WIDTH = 100  # columns of `list`
SUITES_HELP = (
    "folder of suite .toml files, searched first (repeatable); then ./suites of the working "
    "directory, then the suites shipped with the package"
)
DEFAULT_SUITE = "main"
WIDE_HELP = "show every table column (default: fit the terminal tables into 100 columns)"


def _check_environment() -> None:
    """The environment variables the project reads, checked like their flags (before TensorFlow
    and before any results folder): ``DMAML_LAYOUT`` and ``DMAML_DATA``."""
    try:
        check_layout_env()
    except ValueError as err:
        raise SuiteError(str(err)) from None
    data = os.environ.get("DMAML_DATA")
    if data is not None and not Path(data).is_dir():
        raise SuiteError(f"DMAML_DATA={data}: no such folder (unset it, or point it at the data)")


SCALE_HELP = (
    "smoke: seconds (CI); quick: minutes (default); paper: full fidelity; or a scale the suite "
    "defines under [scales]"
)


def _seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` as a list (None: the scale's own)."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SuiteError(
            f"--seeds {text!r}: give integers separated by commas, e.g. 0,1,2"
        ) from None


def cmd_run(args: argparse.Namespace) -> int:
    # Everything a user can get wrong is checked before TensorFlow is imported and before a
    # results folder exists: the suite (domains included), the data, the folder's lock.
    suite = load_suite(resolve(args.suite, args.suites), args.scale)
    overrides = {"cases": args.cases, "seeds": _seeds(args.seeds), "backend": args.backend}
    suite = with_overrides(suite, args.cases, overrides["seeds"], args.backend)
    _check_environment()
    if args.worker_timeout is not None:
        if not (args.worker_timeout > 0 and math.isfinite(args.worker_timeout)):
            raise SuiteError(
                "--worker-timeout must be a finite number of seconds > 0, "
                f"got {args.worker_timeout}"
            )
        plan = dataclasses.replace(suite.plan, worker_timeout_s=args.worker_timeout)
        suite = dataclasses.replace(suite, plan=plan)
    if args.max_failures is not None:
        if args.max_failures < 0:
            raise SuiteError(f"--max-failures must be >= 0, got {args.max_failures}")
        plan = dataclasses.replace(suite.plan, max_failures=args.max_failures)
        suite = dataclasses.replace(suite, plan=plan)
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise SuiteError(f"--data-dir {args.data_dir}: no such folder")
        os.environ["DMAML_DATA"] = str(Path(args.data_dir).resolve())
    data = describe_data(suite, args.data_dir)
    if args.dry_run:
        print(
            f"{suite.name} ({suite.scale}) is valid: {len(suite.cases)} case(s) x "
            f"{len(suite.plan.seeds)} seed(s) x (1 warm-up + {suite.plan.runs}) runs; data: "
            + "; ".join(d.get("path", d.get("source", "?")) for d in data)
            + "".join(f"; --{k} {v}" for k, v in overrides.items() if v)
        )
        return 0
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address
    root = Path(args.results_dir)
    if args.resume:
        folder, lock, manifest = _resume_folder(args, suite, root, data)
        if manifest is None:
            lock.release()
            return 0
    else:
        folder = RunFolder.create(root, suite.name, suite.scale)
        lock = folder.lock()
        manifest = _new_manifest(suite, data)
        manifest["overrides"] = {k: v for k, v in overrides.items() if v}
    with lock:
        return _run_locked(args, suite, folder, manifest)


def _resume_folder(
    args: argparse.Namespace, suite: Suite, root: Path, data: list[dict[str, Any]]
) -> tuple[RunFolder, FolderLock, dict[str, Any] | None]:
    """(folder, its lock, the manifest with a 'resumed' event), or a None manifest when every
    case-seed is already complete. A refused or no-op resume never rewrites the manifest.
    Changed code or data refuse it, unless allowed: then the event says what changed."""
    folder = (
        RunFolder(Path(args.resume))
        if args.resume != "latest"
        else RunFolder.latest(root, suite.name, suite.scale)
    )
    if folder is None:
        raise StoreError(f"nothing to resume: no {suite.name}/{suite.scale}-* under {root}")
    if not folder.path.is_dir():
        raise StoreError(f"{folder.path}: no such folder; not a dmaml-bench results folder")
    if folder.archived_records_path.exists() and not folder.records_path.exists():
        raise StoreError(
            f"{folder.path} is archived (records.jsonl.gz): decompress it (gunzip) to continue it"
        )
    lock = folder.lock()
    try:
        manifest = folder.manifest()
        if (manifest["suite"], manifest["scale"]) != (suite.name, suite.scale):
            raise StoreError(
                f"{folder.path} holds {manifest['suite']}/{manifest['scale']}, "
                f"not {suite.name}/{suite.scale}"
            )
        changes = signature_changes(_stored_signature(manifest), suite.signature())
        if changes:
            raise StoreError(
                f"{folder.path}: the suite's plan changed since these results were written "
                f"({'; '.join(changes)}); start a new sweep (run without --resume) instead of "
                "mixing them"
            )
        changed = _code_and_data_changes(args, suite, manifest, folder, data)
        planned = {(c.case_id, seed) for c in suite.cases for seed in suite.plan.seeds}
        if planned <= finished_case_seeds(folder.records()):
            print(
                f"nothing to resume: all {len(planned)} case-seed(s) in {folder.path} are complete"
            )
            return folder, lock, None
    except BaseException:
        lock.release()
        raise
    event = {"event": "resumed", "at": _now(), "command": sys.argv, "git": git_info()}
    if changed:
        event["changed"] = changed  # allowed by --allow-code-change / --allow-data-change
    return folder, lock, {**manifest, "events": [*manifest.get("events", []), event]}


def _code_and_data_changes(
    args: argparse.Namespace,
    suite: Suite,
    manifest: dict[str, Any],
    folder: RunFolder,
    data: list[dict[str, Any]],
) -> list[str]:
    """What changed since the folder was started (its manifest's ``code`` and ``data``), as
    lines for the report; raise StoreError naming it unless the matching --allow-* flag says
    to go on. A manifest from before code fingerprints has nothing to compare and passes."""
    from harness.machine import code_fingerprint

    changed = []
    stored = manifest.get("code")
    now = code_fingerprint()
    if isinstance(stored, dict) and stored.get("package_sha256") != now["package_sha256"]:
        what = (
            f"code changed: commit {str(stored.get('commit'))[:10]} -> {now['commit'][:10]}, "
            f"package files {str(stored.get('package_sha256'))[:12]} -> "
            f"{now['package_sha256'][:12]}"
        )
        if not args.allow_code_change:
            raise StoreError(f"{folder.path}: {what}; rerun with --allow-code-change to mix them")
        changed.append(what)
    old_plugins = {(p["kind"], p["name"]): p.get("sha256") for p in manifest.get("plugins", [])}
    for plugin in plugin_provenance(suite) if "plugins" in manifest else []:
        if old_plugins.get((plugin["kind"], plugin["name"])) != plugin.get("sha256"):
            what = f"plug-in {plugin['name']} changed: its file {plugin['file']} has another hash"
            if not args.allow_code_change:
                raise StoreError(
                    f"{folder.path}: {what}; rerun with --allow-code-change to mix them"
                )
            changed.append(what)
    old_data = {json.dumps(d, sort_keys=True) for d in manifest.get("data", [])}
    new_data = {json.dumps(d, sort_keys=True) for d in data}
    if "data" in manifest and old_data != new_data:
        paths = sorted({d.get("path", d.get("source", "?")) for d in manifest.get("data", [])})
        what = f"data changed: {', '.join(paths)} -> " + ", ".join(
            sorted({d.get("path", d.get("source", "?")) for d in data})
        )
        if old_data and all("sha256" in json.loads(d) for d in old_data):
            what += " (other archive hashes)"
        if not args.allow_data_change:
            raise StoreError(f"{folder.path}: {what}; rerun with --allow-data-change to mix them")
        changed.append(what)
    return changed


def _stored_signature(manifest: dict[str, Any]) -> dict[str, Any]:
    """The plan a folder was started with; folders written before signatures existed carry the
    plan and case ids only, and that is what they are compared on."""
    if "signature" in manifest:
        return dict(manifest["signature"])
    plan = {k: v for k, v in manifest.get("plan", {}).items() if k not in NOT_IN_SIGNATURE}
    # no configuration hashes: the case ids are compared, their configurations cannot be
    cases = {case_id: None for case_id in manifest.get("cases", [])}
    return {**plan, "baseline": manifest.get("baseline"), "cases": cases}


def _new_manifest(suite: Suite, data: list[dict[str, Any]]) -> dict[str, Any]:
    from harness.machine import code_fingerprint, machine_info

    started = _now()
    return {
        "suite": suite.name,
        "scale": suite.scale,
        "description": suite.description,
        "suite_file": str(suite.path),
        "labels": list(suite.labels),
        "baseline": suite.baseline,
        "cases": [c.case_id for c in suite.cases],
        "plan": {
            "runs": suite.plan.runs,
            "seeds": list(suite.plan.seeds),
            "checkpoints": list(suite.plan.checkpoints),
            "validation_tasks": suite.plan.validation_tasks,
            "validation_steps": suite.plan.validation_steps,
            # drift control (harness/drift.py): what the report normalises and flags with
            "calibration": suite.plan.calibration,
            "calibration_s": suite.plan.calibration_s,
            "block_runs": suite.plan.blocks,
            "drift_threshold": suite.plan.drift_threshold,
        },
        "signature": suite.signature(),
        "code": code_fingerprint(),
        # what the report compares against (harness/report.py), kept with the results
        "published": [row.as_dict() for row in suite.published],
        "target": suite.target.as_dict() if suite.target else None,
        "data": data,
        "plugins": plugin_provenance(suite),
        "machine": machine_info(),
        "started": started,
        "status": "running",
        "command": sys.argv,
        "events": [{"event": "started", "at": started, "command": sys.argv}],
    }


def plugin_provenance(suite: Suite) -> list[dict[str, Any]]:
    """Module, class, file hash and version of every plug-in the suite names (none: [])."""
    from dmaml_core.plugins import provenance
    from dmaml_core.tasks import DOMAINS
    from dmaml_core.weight_generators import WEIGHT_GENERATORS

    named = {("domain", c.domain) for c in suite.cases}
    named |= {("weight generator", c.weight_generator) for c in suite.cases}
    registries: dict[str, Any] = {"domain": DOMAINS, "weight generator": WEIGHT_GENERATORS}
    found = (provenance(kind, name, registries[kind]) for kind, name in sorted(named))
    return [record for record in found if record is not None]


def _run_locked(
    args: argparse.Namespace, suite: Suite, folder: RunFolder, manifest: dict[str, Any]
) -> int:
    from harness import report
    from harness.progress import ProgressLine
    from harness.runner import run_suite

    folder.write_manifest({**manifest, "status": "running"})
    print(
        f"{suite.name} ({suite.scale}): {len(suite.cases)} case(s) x "
        f"{len(suite.plan.seeds)} seed(s) x (1 warm-up + {suite.plan.runs}) runs"
    )
    print(f"results: {folder.path}")
    for label in suite.labels:
        print(f"NOTE: {label}")
    started = time.perf_counter()
    status = "failed"
    progress = None if args.quiet else ProgressLine(total_runs=0)
    try:
        run_suite(suite, folder, progress)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if progress is not None:
            progress.close()
        elapsed = time.perf_counter() - started
        end = {"event": "ended", "at": _now(), "status": status, "elapsed_s": elapsed}
        first = {} if "finished" in manifest else {"finished": end["at"], "elapsed_s": elapsed}
        folder.write_manifest(
            {
                **manifest,
                **first,
                "status": status,
                "events": [*manifest.get("events", []), end],
            }
        )
        if status != "complete":
            print(
                f"results so far kept in {folder.path}; continue with --resume {folder.path}",
                file=sys.stderr,
            )
    for results in report.load([folder]):
        print(report.render(results, args.extrapolate, wide=args.wide))
    print(f"\nresults stored in {folder.path} ({time.perf_counter() - started:.1f} s)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from harness import plan

    suite = load_suite(resolve(args.suite, args.suites), args.scale)
    describe_data(suite, args.data_dir)
    if args.cores is not None and args.ray_nodes is not None:
        raise SuiteError("give --cores or --ray-nodes, not both")
    here = plan_cores()
    if args.ray_nodes is not None:
        if args.ray_nodes < 1:
            raise SuiteError(f"--ray-nodes must be >= 1, got {args.ray_nodes}")
        cores, label = args.ray_nodes * here, f"{args.ray_nodes} nodes"
    else:
        cores = args.cores if args.cores is not None else here
        if cores < 1:
            raise SuiteError(f"--cores must be >= 1, got {cores}")
        label = f"{cores} cores"
    if args.calibrate_runs < 1:
        raise SuiteError(f"--calibrate-runs must be >= 1, got {args.calibrate_runs}")
    roots = [Path(args.results_dir), *([Path(p) for p in args.history])]
    estimates = plan.estimate(suite, cores, roots, args.calibrate_runs)
    print(plan.render(suite, estimates, cores, label))
    return 0


def plan_cores() -> int:
    from dmaml_core.backends.host import available_cores

    return available_cores()


def cmd_list(args: argparse.Namespace) -> int:
    """Suites, their case counts per scale ('-': that scale does not load), an estimated wall
    time on this machine per scale from the records of earlier runs of the same cases, and
    descriptions, in LIST_WIDTH columns: a description is cut, with an ellipsis, only where it
    does not fit. Fast: no calibration and no TensorFlow (harness.plan.history only reads
    records)."""
    roots = [Path(args.results_dir), Path("results") / "runs"]
    rows = []
    for name in available(args.suites):
        path = resolve(name, args.suites)
        counts, estimates, description = [], [], ""
        for scale in SCALES:
            try:
                suite = load_suite(path, scale)
            except SuiteError:
                counts.append("-")
                estimates.append("-")
                continue
            counts.append(str(len(suite.cases)))
            estimates.append(_list_estimate(suite, roots))
            description = description or " ".join(suite.description.split())
        rows.append((name, counts, estimates, description))
    name_w = max([len("suite"), *(len(row[0]) for row in rows)])
    count_w = max(len(s) for s in SCALES)
    est_w = max([count_w, *(len(e) for row in rows for e in row[2])])
    # scale columns one space apart, groups two: the description keeps what room is left
    counts_w = len(SCALES) * (count_w + 1) - 1
    est_all_w = len(SCALES) * (est_w + 1) - 1
    text_w = LIST_WIDTH - name_w - counts_w - est_all_w - 6

    def line(name: str, counts: list[str], estimates: list[str], text: str) -> str:
        return "  ".join(
            [
                f"{name:{name_w}}",
                " ".join(f"{c:>{count_w}}" for c in counts),
                " ".join(f"{e:>{est_w}}" for e in estimates),
                text,
            ]
        ).rstrip()

    print(line("", ["cases per scale".center(counts_w)], ["est. time here".center(est_all_w)], ""))
    print(line("suite", list(SCALES), [s.rjust(est_w) for s in SCALES], "description"))
    print(line("-" * name_w, ["-" * counts_w], ["-" * est_all_w], "-" * text_w))
    for name, counts, estimates, description in rows:
        if len(description) > text_w:
            description = description[: text_w - 1].rstrip() + "…"
        print(line(name, counts, estimates, description))
    where = " and ".join(str(r) for r in roots)
    print(
        textwrap.fill(
            "est.: setup + warm-up + runs x median run time + validations, per seed (s, m, h), "
            "from the "
            f"records of earlier runs of the same case configurations under {where}, measured on "
            "this CPU model where there are any; '*': some come from another CPU model (`plan` "
            "names it); '+': some cases have no records (a lower bound); '-': none have. `plan` "
            "calibrates the rest.",
            LIST_WIDTH,
        )
    )
    return 0


def _list_estimate(suite: Suite, roots: list[Path]) -> str:
    """Estimated wall time of ``suite`` here from earlier records, '-' without any."""
    from harness import plan

    # results folders are <root>/<suite>/<scale>-<time>: reading only this suite's keeps it fast
    known = plan.history(suite, [root / suite.name for root in roots])
    if not known:
        return "-"
    total = sum(
        plan.case_estimate(suite, case, known[case.case_id][1], "records", 1).total_s
        for case in suite.cases
        if case.case_id in known
    )
    partial = "+" if len(known) < len(suite.cases) else ""
    elsewhere = "*" if any(f.get("same_machine") is False for _, f in known.values()) else ""
    return plan.duration(total, compact=True) + partial + elsewhere


def cmd_report(args: argparse.Namespace) -> int:
    from harness import report

    # A results folder named on the command line is reported (and pooled with the others named
    # for its suite and scale). A parent folder stands for its *latest* folder per suite and
    # scale, as the default does: a parent holding two runs of one suite must not pool them
    # silently; name the folders to pool them (refused where they share a case-seed).
    roots = [Path(p) for p in args.paths] or [Path(args.results_dir)]
    folders: list[RunFolder] = []
    left_out = 0
    for root in roots:
        if not args.paths and not root.exists():
            continue
        found = find_folders([root])
        if (root / "manifest.json").exists():
            folders.extend(found)
            continue
        latest: dict[tuple[str, str], RunFolder] = {}
        for folder in found:
            m = folder.manifest()
            latest[(m["suite"], m["scale"])] = folder
        left_out += len(found) - len(latest)
        folders.extend(latest.values())
    folders = find_folders([f.path for f in folders])  # each folder once
    if left_out:
        print(
            f"NOTE: {left_out} older folder(s) of the same suite and scale under "
            f"{', '.join(map(str, roots))} left out (the latest of each is reported; name folders "
            "to pool them)",
            file=sys.stderr,
        )
    if not folders:
        raise StoreError(
            f"no results under {args.paths or args.results_dir}; run `python -m harness run` first"
        )
    out = Path(args.out)
    for results in report.load(folders):
        print(report.render(results, args.extrapolate, wide=args.wide))
        written = report.write(results, out, args.extrapolate)
        print(f"\nwritten: {', '.join(str(p) for p in written)}\n")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness import compare

    folders = []
    for path in (args.a, args.b):
        if not (Path(path) / "manifest.json").is_file():
            raise StoreError(f"{path}: not a results folder (no manifest.json)")
        folders.append(RunFolder(Path(path)))
    text = compare.render(folders[0], folders[1])
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"\nwritten: {args.out}")
    return 0


def _case_seed_folder(path: str) -> RunFolder:
    if not (Path(path) / "manifest.json").is_file():
        raise StoreError(f"{path}: not a results folder (no manifest.json)")
    return RunFolder(Path(path))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from harness import evaluate

    for name in ("tasks", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SuiteError(f"--{name} must be >= 1, got {value}")
    folder = _case_seed_folder(args.folder)
    result = evaluate.evaluate(folder, args.case, args.seed, args.tasks, args.steps, args.task_seed)
    print(evaluate.render(result))
    if args.out:
        write_json_atomic(Path(args.out), result)
        print(f"written: {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from harness import evaluate

    spec = evaluate.export(_case_seed_folder(args.folder), args.case, args.seed, Path(args.out))
    print(
        f"written: {args.out} ({len(spec['shapes'])} arrays, {spec['network']}, "
        f"after {spec['runs_done']} runs)"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from harness.regression import check

    return check(
        Path(args.baseline),
        update=args.update_baseline,
        threshold=args.threshold,
        samples=args.samples,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_baseline() -> Path:
    """The working directory's committed baseline, else the checkout's (an installed package
    has none of its own: baselines are per machine and live with the results)."""
    here = Path("results") / "baselines" / "throughput.json"
    checkout = ROOT / "results" / "baselines" / "throughput.json"
    return here if here.exists() or not checkout.exists() else checkout


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        # the console script and `python -m harness` are the same CLI; help names the one used
        prog="dmaml-bench" if Path(sys.argv[0]).name == "dmaml-bench" else "python -m harness",
        description=(
            "dmaml-bench: run DMAML suites, report timings and accuracy, gate regressions."
        ),
    )
    debug_help = "show the full traceback of an error instead of writing it to a log file"
    p.add_argument("--debug", action="store_true", help=debug_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", parents=[common], help="run a suite (default: the sinusoid main job)"
    )
    run.add_argument(
        "suite",
        nargs="?",
        default=DEFAULT_SUITE,
        help=f"suite name (see `list`) or a .toml path (default: {DEFAULT_SUITE})",
    )
    run.add_argument("--suites", action="append", default=[], metavar="DIR", help=SUITES_HELP)
    run.add_argument("--scale", default="quick", help=SCALE_HELP)
    run.add_argument(
        "--cases",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only the cases whose id matches this glob, e.g. 'w4-*' (repeatable; the baseline "
        "case must be among them); recorded, and a resume with others is refused",
    )
    run.add_argument(
        "--seeds", metavar="LIST", help="these seeds instead of the scale's, e.g. 0,1,2 (recorded)"
    )
    run.add_argument(
        "--backend",
        choices=("serial", "processes", "ray"),
        help="run every case on this backend instead of the suite's (recorded)",
    )
    run.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="FOLDER",
        help="continue an interrupted sweep (default: the latest of this suite/scale); refused "
        "when the code or the data changed since it started",
    )
    run.add_argument(
        "--allow-code-change",
        action="store_true",
        help="resume although the package files changed (recorded; every report shows it)",
    )
    run.add_argument(
        "--allow-data-change",
        action="store_true",
        help="resume although the data (path or archive hashes) changed (recorded, shown)",
    )
    run.add_argument(
        "--results-dir",
        default=str(DEFAULT_RESULTS),
        help="where result folders go (default: ./results/local of the working directory)",
    )
    run.add_argument("--data-dir", help="folder with the dataset (sets DMAML_DATA)")
    run.add_argument(
        "--ray-address",
        help="Ray cluster for backend 'ray' (sets RAY_ADDRESS; 'auto' joins the local node's "
        "cluster); without it a local single-node cluster is started",
    )
    run.add_argument(
        "--extrapolate",
        type=int,
        default=1000,
        metavar="N",
        help="extrapolate wall time to N runs (default 1000)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the suite and its data, print the plan, run nothing and write nothing",
    )
    run.add_argument("--wide", action="store_true", help=WIDE_HELP)
    run.add_argument(
        "--worker-timeout",
        type=float,
        metavar="SECONDS",
        help="fail a run whose workers take longer than this (overrides the suite's "
        "worker_timeout_s; default: scaled from the warm-up run)",
    )
    run.add_argument(
        "--max-failures",
        type=int,
        metavar="N",
        help="lost worker processes or nodes (ray backend) a case-seed survives by restarting "
        "them and going on from its newest checkpoint (overrides the suite's max_failures; "
        "default 3; 0: the first one ends the sweep)",
    )
    run.set_defaults(func=cmd_run)

    pln = sub.add_parser(
        "plan",
        parents=[common],
        help="estimate wall time and peak memory of a suite before running it",
    )
    pln.add_argument("suite", nargs="?", default=DEFAULT_SUITE, help="suite name or .toml path")
    pln.add_argument("--scale", default="quick", help=SCALE_HELP)
    pln.add_argument("--suites", action="append", default=[], metavar="DIR", help=SUITES_HELP)
    pln.add_argument(
        "--cores", type=int, help="project for this many cores (default: this machine's)"
    )
    pln.add_argument(
        "--ray-nodes",
        type=int,
        metavar="N",
        help="project for a Ray cluster of N nodes like this machine",
    )
    pln.add_argument(
        "--calibrate-runs",
        type=int,
        default=2,
        metavar="K",
        help="timed runs per case where no earlier records exist (default 2)",
    )
    pln.add_argument(
        "--results-dir",
        default=str(DEFAULT_RESULTS),
        help="earlier results of the same cases are used instead of calibrating",
    )
    pln.add_argument(
        "--history",
        action="append",
        default=[],
        metavar="DIR",
        help="more folders of earlier results (repeatable), e.g. results/runs",
    )
    pln.add_argument("--data-dir", help="folder with the dataset (as for run)")
    pln.set_defaults(func=cmd_plan)

    lst = sub.add_parser(
        "list", parents=[common], help="list the suites and their case counts per scale"
    )
    lst.add_argument("--suites", action="append", default=[], metavar="DIR", help=SUITES_HELP)
    lst.add_argument(
        "--results-dir",
        default=str(DEFAULT_RESULTS),
        help="earlier results the time estimates come from (and ./results/runs)",
    )
    lst.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", parents=[common], help="tables and plots from stored results")
    rep.add_argument(
        "paths",
        nargs="*",
        help="result folders, pooled per suite and scale; a parent folder stands for its latest "
        "folder per suite and scale (default: the latest under --results-dir)",
    )
    rep.add_argument(
        "--results-dir",
        default=str(DEFAULT_RESULTS),
        help="where result folders are (default: ./results/local)",
    )
    rep.add_argument(
        "--out",
        default=str(DEFAULT_RESULTS / "reports"),
        help="folder for the Markdown, CSV, JSON and PNG files (default: ./results/local/reports)",
    )
    rep.add_argument("--extrapolate", type=int, default=1000, metavar="N")
    rep.add_argument("--wide", action="store_true", help=WIDE_HELP)
    rep.set_defaults(func=cmd_report)

    cmp_ = sub.add_parser(
        "compare",
        parents=[common],
        help="two result folders of one suite side by side: what differs, time and quality",
    )
    cmp_.add_argument("a", help="results folder A (the reference)")
    cmp_.add_argument("b", help="results folder B")
    cmp_.add_argument("--out", help="also write the comparison to this file")
    cmp_.set_defaults(func=cmd_compare)

    for name, help_text in (
        ("evaluate", "adapt a case-seed's final weights on validation tasks: its metrics, ci95"),
        ("export", "write a case-seed's final weights as a plain .npz with the network's spec"),
    ):
        use = sub.add_parser(name, parents=[common], help=help_text)
        use.add_argument("folder", help="a results folder (results/local/<suite>/<scale>-<time>)")
        use.add_argument("--case", required=True, help="case id (see the folder's report)")
        use.add_argument("--seed", type=int, required=True, help="training seed")
        if name == "evaluate":
            use.add_argument("--tasks", type=int, help="validation tasks (default: the plan's)")
            use.add_argument("--steps", type=int, help="inner steps (default: the plan's)")
            use.add_argument(
                "--task-seed",
                type=int,
                help="draw the tasks from this seed (default: the run's held-out stream, so the "
                "result equals the last validation of the run)",
            )
            use.add_argument("--out", help="also write the result as JSON here")
            use.set_defaults(func=cmd_evaluate)
        else:
            use.add_argument("--out", required=True, help="the .npz file to write")
            use.set_defaults(func=cmd_export)

    chk = sub.add_parser(
        "check", parents=[common], help="throughput regression gate against a committed baseline"
    )
    chk.add_argument(
        "--baseline",
        default=str(default_baseline()),
        help="baseline JSON (default: ./results/baselines/throughput.json of the working "
        "directory, else the checkout's)",
    )
    chk.add_argument(
        "--threshold",
        type=float,
        default=0.25,
        help="relative slowdown that counts, if also significant (default 0.25)",
    )
    chk.add_argument(
        "--samples",
        type=int,
        default=12,
        help="calibration/workload pairs per workload and round (an integer >= 3)",
    )
    chk.add_argument(
        "--update-baseline",
        action="store_true",
        help="measure and write the baseline instead of checking",
    )
    chk.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    """The one error boundary: an expected failure is one line on stderr and exit 2 (bad input,
    data, files, cluster) or 1 (a run that failed); the traceback goes to a log file the line
    names, or to the terminal with ``--debug``."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted; completed results are on disk (use --resume)", file=sys.stderr)
        return 130
    except Exception as err:  # every failure ends here, as one line
        code, message = describe_failure(err)
        if args.debug:
            traceback.print_exc()
            print(f"error: {message}", file=sys.stderr)
        elif message.startswith(INTERNAL):  # expected errors say all there is in their line
            log = write_error_log()
            where = f" (traceback in {log})" if log else ""
            print(f"error: {message}{where}", file=sys.stderr)
        else:
            print(f"error: {message}", file=sys.stderr)
        return code


def describe_failure(err: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for a failure; unknown exceptions are internal errors."""
    # by class name: importing the backends here would import TensorFlow on every error path
    names = {cls.__name__ for cls in type(err).__mro__}
    text = " ".join(str(err).split())  # one line, whatever the message's layout
    if isinstance(err, (SuiteError, StoreError)):
        return 2, text
    if isinstance(err, OSError):  # dataset not found, permissions, disk full, a folder for a file
        if err.errno == errno.ENOSPC:
            return 2, f"no space left on the device{_filename(err)}; completed records are kept"
        if err.strerror and not isinstance(err, FileNotFoundError | TimeoutError):
            return 2, f"{err.strerror}{_filename(err)}"
        return 2, text or type(err).__name__
    plugin = _plugin_frame(err)
    if plugin:  # a bug in the user's plug-in, not in the harness
        what = f"{type(err).__name__}: {text}"
        return 1, f"plug-in code failed at {plugin} ({what}); --debug shows the traceback"
    if isinstance(err, ValueError):  # bad values, corrupt files (their messages name the file)
        return 2, text
    if "BackendConnectionError" in names:  # a cluster that cannot be reached: fix and rerun
        return 2, text
    if names & {"WorkerError", "CaseFailed"}:  # a run that failed: results so far are kept
        return 1, text
    if isinstance(err, RuntimeError):
        return 1, text
    return 1, f"{INTERNAL} ({type(err).__name__}: {text}); please report it"


def _plugin_frame(err: BaseException) -> str:
    """'FILE:LINE' of the innermost frame of ``err`` in a plug-in loaded by this process ('' when
    none): where a plug-in failed, however it was installed."""
    from dmaml_core.plugins import is_plugin_file

    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if is_plugin_file(frame.filename):
            return f"{frame.filename}:{frame.lineno}"
    return ""


def _filename(err: OSError) -> str:
    return f": {err.filename}" if err.filename else ""


INTERNAL = "internal error"
KEPT_ERROR_LOGS = 20  # the newest logs a log folder keeps; older ones are removed


def write_error_log() -> Path | None:
    """Write the current exception's traceback to a log file, keeping the newest
    ``KEPT_ERROR_LOGS`` in its folder; its path, or None if no folder could take it (the
    one-line message is printed either way)."""
    from dmaml_core.tasks.omniglot import user_cache_dir

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    text = f"{' '.join(sys.argv)}\n\n{traceback.format_exc()}"
    for folder in (user_cache_dir("logs"), Path(tempfile.gettempdir()) / "dmaml-bench"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"error-{stamp}-{os.getpid()}.log"
            path.write_text(text)
            for old in sorted(folder.glob("error-*.log"))[:-KEPT_ERROR_LOGS]:
                with contextlib.suppress(OSError):
                    old.unlink()
            return path
        except OSError:
            continue
    return None
