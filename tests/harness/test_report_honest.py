"""The report hides nothing: divergence, incompleteness and malformed records are shown or named,
p-values are readable, terminal tables fit 100 columns, plots label what they show. Every test
writes small fixed records with RunFolder, the way the runner writes them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import cli, report, stats
from harness.stats import summarize
from harness.store import RunFolder, StoreError

BASE = "w1-e1-t4-sum-o2"
W2 = "w2-e1-t4-sum-o2"
PLAN = {"runs": 4, "seeds": [0, 1], "checkpoints": [0, 5], "validation_tasks": 3}


def case_config(workers: int = 1, backend: str = "serial") -> dict[str, Any]:
    return {
        "domain": "sinusoid",
        "mode": "dmaml",
        "backend": backend,
        "workers": workers,
        "epochs": 1,
        "tasks": 4,
        "inner_steps": 1,
        "order": 2,
        "aggregation": "sum",
        "processes": 0,
    }


def make_folder(
    tmp_path: Path, cases: list[str], status: str = "complete", name: str = "tiny"
) -> RunFolder:
    folder = RunFolder.create(tmp_path / "results", name, "smoke")
    folder.write_manifest(
        {
            "suite": name,
            "scale": "smoke",
            "baseline": BASE,
            "cases": cases,
            "plan": PLAN,
            "labels": [],
            "status": status,
        }
    )
    return folder


def write_case_seed(
    folder: RunFolder,
    case_id: str,
    seed: int,
    *,
    workers: int = 1,
    runs: int = 4,
    wall_s: float = 0.01,
    final_loss: float = 1.0,
    diverge_at: int | None = None,
    end: bool = True,
    backend: str = "serial",
) -> None:
    """What runner.run_case_seed appends: case_start, validation at checkpoints 0 and runs + 1,
    a warm-up and ``runs`` timed runs, and case_end; a divergence stops the runs at that index."""
    base = {"case_id": case_id, "seed": seed, "attempt": 0}
    folder.append({**base, "kind": "case_start", "case": case_config(workers, backend)})

    def validation(after: int, loss: float) -> None:
        per_task = [loss - 0.1, loss, loss + 0.1]
        folder.append(
            {
                **base,
                "kind": "validation",
                "after_runs": after,
                "loss_by_step": [4.0, loss],
                "accuracy_by_step": [0.0, 0.0],
                "loss_final_per_task": per_task,
                "accuracy_final_per_task": [0.0, 0.0, 0.0],
            }
        )

    for done in range(runs + 2):
        if done in (0, runs + 1):  # the untrained checkpoint 0 is the same for every case
            validation(done, 3.9 if done == 0 else final_loss + 0.01 * seed)
        if done == runs + 1:
            break
        diverged = done == diverge_at
        folder.append(
            {
                **base,
                "kind": "run",
                "run_index": done,
                "warmup": done == 0,
                "wall_s": 100.0 if diverged else wall_s * (1 + 0.01 * done),
                "projected_s": wall_s / workers,
                "tasks_per_s": 400.0,
                "cpu_s": wall_s,
                "peak_rss_bytes": 2**20,
                "loss_sum": math.nan if diverged else 1.0,
                "diverged": diverged,
            }
        )
        if diverged:
            folder.append({**base, "kind": "diverged", "run_index": done, "loss_sum": math.nan})
            break
    if end:
        folder.append({**base, "kind": "case_end"})


def load_one(folder: RunFolder) -> report.Results:
    (results,) = report.load([folder])
    return results


# 1. divergence is shown, never hidden


@pytest.fixture
def diverged(tmp_path: Path) -> report.Results:
    folder = make_folder(tmp_path, [BASE, W2])
    for seed in (0, 1):
        write_case_seed(folder, BASE, seed)
        write_case_seed(folder, W2, seed, workers=2, diverge_at=3 if seed == 0 else 2)
    return load_one(folder)


def test_diverged_case_seeds_are_listed_with_run_and_loss(diverged: report.Results) -> None:
    assert report.diverged_rows(diverged) == [
        {"case": W2, "seed": 0, "run_index": 3, "loss_sum": "nan"},
        {"case": W2, "seed": 1, "run_index": 2, "loss_sum": "nan"},
    ]
    text = report.render(diverged, 1000)
    assert "DIVERGED (NaN/inf loss)" in text
    rows = [line.split() for line in text.splitlines() if line.endswith(" nan")]
    assert rows == [[W2, "0", "3", "nan"], [W2, "1", "2", "nan"]]


def test_timing_excludes_the_diverged_run_and_says_so(diverged: report.Results) -> None:
    row = next(r for r in report.timing_rows(diverged) if r["case"] == W2)
    assert row["status"] == "diverged in 2/2 seeds"
    assert row["wall_s"] < 1.0  # the 100 s diverged run is not averaged in
    assert row["n_runs"] == 2 + 1  # timed runs before divergence: indices 1-2 and 1
    seconds, relative = report.ratio_tables(report.timing_rows(diverged))
    assert (
        seconds[1]["workers"].endswith(" [diverged]") and relative[1]["workers"] == "99 [diverged]"
    )


def test_a_diverged_case_is_not_compared_from_checkpoint_0(diverged: report.Results) -> None:
    (quality,) = [r for r in report.quality_rows(diverged) if r["case"] == W2]
    assert quality["value"] == "diverged in 2/2 seeds"
    (row,) = report.comparison_rows(diverged)
    assert row["loss_diff"] == "diverged in 2/2 seeds"
    assert math.isnan(row["loss_p"]) and row["loss_significant"] is False
    line = next(
        line
        for line in report.render(diverged, 1000, wide=True).splitlines()
        if line.startswith(W2) and "diverged" in line and "1000" not in line
    )
    assert " 1 " not in line.replace("2/2", "") and "diverged in 2/2 seeds" in line


# 2. incompleteness is shown


@pytest.fixture
def partial(tmp_path: Path) -> report.Results:
    folder = make_folder(tmp_path, [BASE, W2, "w4-e1-t4-sum-o2"], status="running")
    write_case_seed(folder, BASE, 0)
    write_case_seed(folder, BASE, 1)
    write_case_seed(folder, W2, 0, workers=2, runs=2, end=False)  # killed after 2 runs
    folder.append({"kind": "case_error", "case_id": W2, "seed": 0, "attempt": 0, "error": "hang"})
    return load_one(folder)


def test_partial_and_not_run_cases_are_marked(partial: report.Results) -> None:
    status = {r["case"]: r["status"] for r in report.timing_rows(partial)}
    assert report.ratio_tables(report.timing_rows(partial))[1][1]["workers"].endswith(" [partial]")
    assert status == {BASE: "complete", W2: "partial (2/4 runs, 1/2 seeds); failed in seed 0"}
    assert partial.not_run == ["w4-e1-t4-sum-o2"]
    text = report.render(partial, 1000)
    assert "NOT RUN (planned, no records): w4-e1-t4-sum-o2" in text
    assert "partial (2/4 runs, 1/2 seeds)" in text


def test_a_running_folder_says_so_at_the_top(partial: report.Results) -> None:
    lines = report.render(partial, 1000).splitlines()
    assert lines[1].startswith("STATUS: RUNNING: the sweep had not finished")
    assert "numbers below are incomplete" in " ".join(lines[1:4])


def test_a_seed_without_case_end_is_partial_even_with_all_runs(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, [BASE])
    write_case_seed(folder, BASE, 0)
    write_case_seed(folder, BASE, 1, end=False)
    (row,) = report.timing_rows(load_one(folder))
    assert row["status"] == "partial (4/4 runs, 2/2 seeds)"


# 3. malformed but parseable records name the file and what is missing


@pytest.mark.parametrize(
    ("drop", "kind", "expected"),
    [
        ("case_id", "case_start", "case_id"),
        ("seed", "run", "seed"),
        ("wall_s", "run", "wall_s"),
        ("after_runs", "validation", "after_runs"),
        ("kind", "run", "kind"),
    ],
)
def test_a_record_missing_a_field_is_a_store_error(
    tmp_path: Path, drop: str, kind: str, expected: str
) -> None:
    folder = make_folder(tmp_path, [BASE])
    write_case_seed(folder, BASE, 0)
    lines = folder.records_path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["kind"] == kind)
    record = json.loads(lines[index])
    del record[drop]
    lines[index] = json.dumps(record)
    folder.records_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError) as err:
        report.load([folder])
    message = str(err.value)
    assert str(folder.path) in message and expected in message and "\n" not in message


def test_a_case_missing_a_field_is_a_store_error(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, [BASE])
    folder.append({"kind": "case_start", "case_id": BASE, "seed": 0, "case": {"workers": 1}})
    with pytest.raises(StoreError, match=r"missing case\.backend, case\.epochs"):
        report.load([folder])


@pytest.mark.parametrize("field", ["suite", "scale"])
def test_a_manifest_missing_suite_or_scale_is_a_store_error(tmp_path: Path, field: str) -> None:
    folder = make_folder(tmp_path, [BASE])
    manifest = folder.manifest()
    del manifest[field]
    folder.write_manifest(manifest)
    with pytest.raises(StoreError, match=field) as err:
        report.load([folder])
    assert str(folder.path) in str(err.value)


def test_cli_report_of_a_malformed_folder_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_folder(tmp_path, [BASE])
    folder.append({"kind": "run", "case_id": BASE, "seed": 0})
    assert cli.main(["report", str(folder.path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(folder.path) in err and "Traceback" not in err


# 4. readable numbers, tables that fit a terminal


def test_p_values_are_readable() -> None:
    assert report.format_p(3.624e-283) == "< 1e-6"
    assert report.format_p(0.0) == "< 1e-6"
    assert report.format_p(0.012345) == "0.0123"
    assert report.format_p(0.5) == "0.5"
    assert report.format_p(math.nan) == "-"


LONG = "w2-e1-t4-sum-o2-with-a-long-variant-name-that-goes-on-and-on"


@pytest.fixture
def long_ids(tmp_path: Path) -> report.Results:
    folder = make_folder(tmp_path, [BASE, LONG])
    for seed in (0, 1):
        write_case_seed(folder, BASE, seed, final_loss=2.0)
        write_case_seed(folder, LONG, seed, workers=2, wall_s=0.05, final_loss=1.0)
    return load_one(folder)


def test_terminal_tables_fit_100_columns_and_wide_shows_all(long_ids: report.Results) -> None:
    narrow = report.render(long_ids, 1000)
    assert max(len(line) for line in narrow.splitlines()) <= report.TERMINAL_WIDTH
    assert "…" in narrow and "--wide shows them" in narrow
    assert "< 1e-6" in narrow and "e-2" not in narrow  # the timing p-value
    wide = report.render(long_ids, 1000, wide=True)
    assert LONG in wide and "…" not in wide and "left out" not in wide
    header = next(
        line for line in wide.splitlines() if line.startswith("case ") and "warmup_s" in line
    )
    assert all(column in header for column in report.TIMING_COLUMNS)


def test_files_keep_every_column(long_ids: report.Results, tmp_path: Path) -> None:
    report.write(long_ids, tmp_path / "out", 1000)
    markdown = (tmp_path / "out" / "tiny-smoke.md").read_text()
    assert LONG in markdown and "left out" not in markdown and "…" not in markdown
    # the status column and the columns a terminal drops first
    columns = ["case", "status", "startup_s", "peak_rss_mb", "tasks_per_s", "notes"]
    header = next(
        line for line in markdown.splitlines() if line.startswith("| case ") and "notes" in line
    )
    assert [c.strip() for c in header.strip("|").split("|")] == report.TIMING_COLUMNS
    csv_header = (tmp_path / "out" / "tiny-smoke-timing.csv").read_text().splitlines()[0]
    assert set(columns) <= set(csv_header.split(","))
    saved = json.loads((tmp_path / "out" / "tiny-smoke.json").read_text())
    assert saved["not_run"] == [] and saved["diverged"] == [] and saved["status"] == ["complete"]


def test_cli_wide_flag(long_ids: report.Results, capsys: pytest.CaptureFixture[str]) -> None:
    (path,) = long_ids.folders
    out = str(path.parent / "out")
    assert cli.main(["report", str(path), "--out", out]) == 0
    table_lines = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("written:")]
    assert max(len(line) for line in table_lines) <= 100
    assert cli.main(["report", str(path), "--out", out, "--wide"]) == 0
    assert LONG in capsys.readouterr().out


# 5. plots say what they show


def _legend(ax: Any) -> tuple[str, list[str]]:
    legend = ax.get_legend()
    return legend.get_title().get_text(), [t.get_text() for t in legend.get_texts()]


def test_timing_plot_names_the_axis_and_shows_projected_and_ideal(
    long_ids: report.Results,
) -> None:
    fig = report.timing_figure(long_ids)
    (ax,) = fig.axes
    title, labels = _legend(ax)
    assert title == "error bars: ci95 (Student t, n-1)"
    assert labels == ["ideal scaling (flat)", "measured", "projected (>= W free cores)"]
    assert ax.get_xlabel() == "workers W"
    title = fig.get_suptitle().replace("\n", " ")
    assert "backend serial: the W workers ran one after another" in title
    report._pyplot().close(fig)


def test_timing_plot_says_when_workers_shared_processes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, [BASE, "w4"])
    folder.write_manifest({**folder.manifest(), "machine": {"usable_cores": 2}})
    write_case_seed(folder, BASE, 0, backend="processes")
    write_case_seed(folder, "w4", 0, workers=4, backend="processes")
    fig = report.timing_figure(load_one(folder))
    assert "W > 2 workers shared 2 processes" in fig.get_suptitle()
    report._pyplot().close(fig)


def test_quality_plot_legend_says_ci95(diverged: report.Results, tmp_path: Path) -> None:
    fig = report.quality_figure(diverged)
    (ax,) = fig.axes
    assert _legend(ax)[0] == "shaded: ci95 (Student t, n-1)"
    assert f"not shown, diverged: {W2}" in ax.get_title()
    report._pyplot().close(fig)
    written = report.plot(diverged, tmp_path)
    assert [p.name for p in written] == [
        "tiny-smoke-quality.png",
        "tiny-smoke-timing.png",
        "tiny-smoke-quality-vs-wall.png",  # no [target] in the manifest: no time-to-target plot
    ]


def test_timing_rows_use_blocks_median_and_tasks_over_time(tmp_path: Path) -> None:
    """Issue 19: tasks_per_s is tasks done / time taken (not a mean of per-run rates), the median
    and IQR stand beside the mean, and ci95 comes from block means; quality comparisons between
    cases on one domain are paired over the seeds they share."""
    folder = make_folder(tmp_path, [BASE, W2])
    for seed in (0, 1):
        write_case_seed(folder, BASE, seed, runs=20)
        write_case_seed(folder, W2, seed, workers=2, runs=20, final_loss=0.9)
    results = load_one(folder)
    rows = {r["case"]: r for r in report.timing_rows(results)}
    walls = [r["wall_s"] for r in results.cases[BASE].runs]
    assert rows[BASE]["tasks_per_s"] == pytest.approx(400.0)  # every run: 400 tasks/s
    assert rows[BASE]["wall_median_s"] == pytest.approx(float(np.median(walls)))
    seeds = {0: walls[:20], 1: walls[20:]}
    blocks = summarize(stats.block_means(seeds))
    assert rows[BASE]["wall_ci95_s"] == pytest.approx(blocks.ci95)
    assert rows[BASE]["wall_s"] == pytest.approx(float(np.mean(walls)))
    (comparison,) = report.comparison_rows(results)
    assert comparison["quality_test"] == "paired over seeds"


def test_tasks_per_s_is_not_a_mean_of_rates(tmp_path: Path) -> None:
    """Two runs of 10 tasks, 5 ms and 15 ms: 20 tasks / 20 ms = 1000 tasks/s; the mean of the
    per-run rates (2000 and 667) would say 1333."""
    folder = make_folder(tmp_path, [BASE])
    base = {"case_id": BASE, "seed": 0, "attempt": 0}
    folder.append({**base, "kind": "case_start", "case": case_config()})
    for index, wall in enumerate((0.005, 0.005, 0.015)):  # the first is the warm-up
        folder.append(
            {
                **base,
                "kind": "run",
                "run_index": index,
                "warmup": index == 0,
                "wall_s": wall,
                "projected_s": wall,
                "tasks_per_s": 10 / wall,
                "loss_sum": 1.0,
                "diverged": False,
            }
        )
    (row,) = report.timing_rows(load_one(folder))
    assert row["tasks_per_s"] == pytest.approx(1000.0)
