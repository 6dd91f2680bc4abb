"""Command line: ``python -m harness {run,list,report,check}``. One function per subcommand;
errors a user can fix print one line and exit non-zero, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness.store import RunFolder, StoreError, find_folders
from harness.suite import SCALES, SuiteError, available, load_suite

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "results" / "local"
DEFAULT_SUITE = "main"


def cmd_run(args: argparse.Namespace) -> int:
    from harness import report
    from harness.machine import machine_info
    from harness.runner import run_suite, terminal_progress

    suite = load_suite(args.suite, args.scale)
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise SuiteError(f"--data-dir {args.data_dir}: no such folder")
        os.environ["DMAML_DATA"] = str(Path(args.data_dir).resolve())
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address
    root = Path(args.results_dir)
    if args.resume:
        folder = (
            RunFolder(Path(args.resume))
            if args.resume != "latest"
            else RunFolder.latest(root, suite.name, suite.scale)
        )
        if folder is None:
            raise StoreError(f"nothing to resume: no {suite.name}/{suite.scale}-* under {root}")
        manifest = folder.manifest()
        if (manifest["suite"], manifest["scale"]) != (suite.name, suite.scale):
            raise StoreError(
                f"{folder.path} holds {manifest['suite']}/{manifest['scale']}, "
                f"not {suite.name}/{suite.scale}"
            )
    else:
        folder = RunFolder.create(root, suite.name, suite.scale)
        manifest = {
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
            },
            "machine": machine_info(),
            "started": _now(),
            "status": "running",
            "command": sys.argv,
        }
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
    try:
        run_suite(suite, folder, None if args.quiet else terminal_progress)
        status = "complete"
    finally:
        if sys.stderr.isatty() and not args.quiet:
            sys.stderr.write("\n")
        folder.write_manifest(
            {
                **manifest,
                "status": status,
                "finished": _now(),
                "elapsed_s": time.perf_counter() - started,
            }
        )
        if status != "complete":
            print(
                f"results so far kept in {folder.path}; continue with --resume {folder.path}",
                file=sys.stderr,
            )
    for results in report.load([folder]):
        print(report.render(results, args.extrapolate))
    print(f"\nresults stored in {folder.path} ({time.perf_counter() - started:.1f} s)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in available():
        counts = []
        for scale in SCALES:
            try:
                counts.append(str(len(load_suite(name, scale).cases)))
            except SuiteError:
                counts.append("-")
        description = load_suite(name, "smoke").description if counts[0] != "-" else ""
        rows.append([name, *counts, description[:70]])
    from tabulate import tabulate

    print(tabulate(rows, ["suite", *[f"cases ({s})" for s in SCALES], "description"]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness import report

    if args.paths:
        folders = find_folders([Path(p) for p in args.paths])
    else:  # the latest complete-or-not folder per suite and scale
        latest: dict[tuple[str, str], RunFolder] = {}
        for folder in (
            find_folders([Path(args.results_dir)]) if Path(args.results_dir).exists() else []
        ):
            m = folder.manifest()
            latest[(m["suite"], m["scale"])] = folder
        folders = list(latest.values())
    if not folders:
        raise StoreError(
            f"no results under {args.paths or args.results_dir}; run `python -m harness run` first"
        )
    out = Path(args.out)
    for results in report.load(folders):
        print(report.render(results, args.extrapolate))
        written = report.write(results, out, args.extrapolate)
        print(f"\nwritten: {', '.join(str(p) for p in written)}\n")
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness",
        description=(
            "dmaml-bench: run DMAML suites, report timings and accuracy, gate regressions."
        ),
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite (default: the sinusoid main job)")
    run.add_argument(
        "suite",
        nargs="?",
        default=DEFAULT_SUITE,
        help=f"suite name under suites/ or a .toml path (default: {DEFAULT_SUITE})",
    )
    run.add_argument(
        "--scale",
        choices=SCALES,
        default="quick",
        help="smoke: seconds (CI); quick: minutes (default); paper: full fidelity",
    )
    run.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="FOLDER",
        help="continue an interrupted sweep (default: the latest of this suite/scale)",
    )
    run.add_argument(
        "--results-dir",
        default=str(DEFAULT_RESULTS),
        help="where result folders go (default: results/local)",
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
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="list the suites and their case counts per scale")
    lst.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="tables and plots from stored results")
    rep.add_argument("paths", nargs="*", help="result folders (default: latest per suite/scale)")
    rep.add_argument("--results-dir", default=str(DEFAULT_RESULTS))
    rep.add_argument(
        "--out",
        default=str(DEFAULT_RESULTS / "reports"),
        help="folder for the Markdown, CSV, JSON and PNG files",
    )
    rep.add_argument("--extrapolate", type=int, default=1000, metavar="N")
    rep.set_defaults(func=cmd_report)

    chk = sub.add_parser("check", help="throughput regression gate against a committed baseline")
    chk.add_argument("--baseline", default=str(ROOT / "results" / "baselines" / "throughput.json"))
    chk.add_argument(
        "--threshold",
        type=float,
        default=0.25,
        help="relative slowdown that counts, if also significant (default 0.25)",
    )
    chk.add_argument("--samples", type=int, default=12, help="timed samples per workload")
    chk.add_argument(
        "--update-baseline",
        action="store_true",
        help="measure and write the baseline instead of checking",
    )
    chk.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SuiteError, StoreError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; completed results are on disk (use --resume)", file=sys.stderr)
        return 130
    except RuntimeError as err:  # a worker crash or hang (CaseFailed, WorkerError)
        print(f"error: {err}", file=sys.stderr)
        return 1
