"""Published numbers beside ours, the paper-format tables under both rules, and time to target,
on small fixed records whose arithmetic is done by hand in the comments."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from harness import published, report
from harness.store import RunFolder

W1 = "w1-e1-t4-sum-o2"
W2 = "w2-e1-t4-sum-o2"
PLAN = {"runs": 3, "seeds": [0, 1, 2], "checkpoints": [0, 2, 4], "validation_tasks": 3}
T95_2 = 4.302652729911275  # two-sided 95% Student t, 2 degrees of freedom
TARGET = {"metric": "loss", "value": 0.8}
PUBLISHED: list[dict[str, Any]] = [
    {"source": "paper table 1", "case": W1, "metric": "loss", "after_runs": 4, "value": 0.65},
    {"source": "paper fig 3", "case": W1, "metric": "loss", "after_runs": 4, "value": 1.0,
     "ci95": 0.01, "read_off_plot": True, "rule": "best of 3 seeds"},
    {"source": "paper table 1", "case": "w64-e1-t4-sum-o2", "metric": "loss", "after_runs": 4,
     "value": 0.4},
    {"source": "thesis 6.4", "case": W2, "metric": "relative_pct", "value": 200.0},
    {"source": "thesis 6.4", "case": W2, "metric": "relative_pct", "value": 150.0},
    {"source": "paper table 1", "case": W2, "metric": "loss", "after_runs": 4, "value": 0.9},
    {"source": "paper table 1", "case": W1, "metric": "loss", "after_runs": 3, "value": 0.6},
    {"source": "thesis 6.3", "case": W1, "metric": "seconds_per_run", "value": 7.67},
]  # fmt: skip


def case_config(workers: int) -> dict[str, Any]:
    return {"domain": "sinusoid", "mode": "dmaml", "backend": "serial", "workers": workers,
            "epochs": 1, "tasks": 4, "inner_steps": 1, "order": 2, "aggregation": "sum",
            "processes": 0}  # fmt: skip


def write_seed(
    folder: RunFolder, case_id: str, seed: int, workers: int, losses: dict[int, float], wall: float
) -> None:
    """case_start; runs 0 (warm-up: 1.0 s, projected 1.0 s) to 3 (``wall`` s each, projected
    half of it); validations at checkpoints 0, 2 and 4 with the given final losses and per-task
    losses loss - 0.1, loss, loss + 0.1."""
    base = {"case_id": case_id, "seed": seed, "attempt": 0}
    folder.append({**base, "kind": "case_start", "case": case_config(workers)})
    for done in range(5):
        if done in losses:
            loss = losses[done]
            folder.append(
                {
                    **base,
                    "kind": "validation",
                    "after_runs": done,
                    "loss_by_step": [4.0, loss],
                    "accuracy_by_step": [0.0, 0.0],
                    "loss_final_per_task": [loss - 0.1, loss, loss + 0.1],
                    "accuracy_final_per_task": [0.0, 0.0, 0.0],
                }
            )
        if done == 4:
            break
        seconds = 1.0 if done == 0 else wall
        folder.append(
            {
                **base,
                "kind": "run",
                "run_index": done,
                "warmup": done == 0,
                "wall_s": seconds,
                "projected_s": seconds if done == 0 else seconds / 2,
            }
        )
    folder.append({**base, "kind": "case_end"})


def make_results(
    tmp_path: Path, manifest_extra: dict[str, Any] | None = None, name: str = "tiny"
) -> report.Results:
    folder = RunFolder.create(tmp_path / "results", name, "smoke")
    manifest = {"suite": name, "scale": "smoke", "baseline": W1, "cases": [W1, W2], "plan": PLAN,
                "labels": [], "status": "complete"}  # fmt: skip
    folder.write_manifest({**manifest, **(manifest_extra or {})})
    # W1: seeds 0-2 reach loss 0.5/0.6/0.7 at checkpoint 4, from 1.0/1.2/1.4 at checkpoint 2
    for seed, (mid, end) in enumerate([(1.0, 0.5), (1.2, 0.6), (1.4, 0.7)]):
        write_seed(folder, W1, seed, 1, {0: 4.0, 2: mid, 4: end}, wall=0.5)
    # W2: one seed only, never below 0.9; timed runs take 1.0 s (W1: 0.5 s)
    write_seed(folder, W2, 0, 2, {0: 4.0, 2: 1.5, 4: 0.9}, wall=1.0)
    (results,) = report.load([folder])
    return results


@pytest.fixture
def results(tmp_path: Path) -> report.Results:
    return make_results(tmp_path, {"published": PUBLISHED, "target": TARGET})


def test_published_vs_ours_verdicts(results: report.Results) -> None:
    rows = published.published_rows(results)
    verdicts = [r["verdict"] for r in rows]
    assert verdicts == [
        "agree",  # ours 0.6 ± 0.248 (seeds 0.5, 0.6, 0.7) holds 0.65
        "differ",  # 1.0 is 0.4 away: outside ± 0.248
        "not run at this scale",
        "agree",  # W2 1.0 s / W1 0.5 s = 200 %, every run equal: ci95 0
        "differ",
        "n too small",  # W2 ran one seed
        "no checkpoint at 3 (ours: 0, 2, 4)",
        "differ",  # 0.5 ± 0 s per run against the thesis' 7.67 s
    ]
    first = rows[0]
    assert first["ours_mean"] == pytest.approx(0.6)
    assert first["ours_ci95"] == pytest.approx(T95_2 * 0.1 / math.sqrt(3))  # sd 0.1, n 3
    assert first["difference"] == pytest.approx(-0.05)
    assert first["ours"] == "0.6 ± 0.25 (n=3 seeds)"
    assert rows[1]["theirs"] == "1 ± 0.01 (read off plot)"
    assert rows[3]["ours_mean"] == pytest.approx(200.0) and rows[3]["ours_ci95"] == 0.0
    # timings also against the projected times (timed runs project to half their wall time)
    assert rows[3]["ours_projected"] == "200 ± 0 (n=3 runs)"
    assert [r["verdict_projected"] for r in rows[3:5]] == ["agree", "differ"]
    assert rows[7]["ours_projected"] == "0.25 ± 0 (n=9 runs)"
    assert rows[0]["ours_projected"] == "-" and rows[0]["verdict_projected"] == ""

    text = report.render(results, 1000)
    assert "## Published vs measured" in text
    assert "published numbers from the results manifest" in text
    assert "not run at this scale" in text and "(read off plot)" in text
    assert max(len(line) for line in text.splitlines()) <= report.TERMINAL_WIDTH


def test_paper_format_tables_under_both_rules(results: report.Results) -> None:
    paper, honest = published.paper_tables(results, report.quality_metric(results))
    assert [r["W"] for r in paper] == [1, 2] and list(paper[0]) == [
        "W", "case", "0 runs", "2 runs", "4 runs",
    ]  # fmt: skip
    # paper's rule at 4 runs: the best seed (0, loss 0.5), ci95 over its 3 validation tasks
    # 0.4, 0.5, 0.6: sd 0.1, half-width 4.303 x 0.1 / sqrt(3) = 0.248
    assert paper[0]["4 runs"] == "0.500 ± 0.248 (seed 0 of 3)"
    # at 2 runs the best seed is again seed 0 (1.0 < 1.2 < 1.4): tasks 0.9, 1.0, 1.1
    assert paper[0]["2 runs"] == "1.000 ± 0.248 (seed 0 of 3)"
    # honest: mean of the seeds' 0.5, 0.6, 0.7 = 0.6, ci95 over seeds 4.303 x 0.1 / sqrt(3)
    assert honest[0]["4 runs"] == "0.600 ± 0.248"
    assert honest[0]["2 runs"] == "1.200 ± 0.497"  # 1.0, 1.2, 1.4: sd 0.2 -> 4.303 x 0.2 / sqrt(3)
    assert honest[1]["4 runs"] == "0.900 (1 seed: no ci95)"
    text = report.render(results, 1000, wide=True)
    assert published.PAPER_RULE in text and published.HONEST_RULE in text


def test_time_to_target_interpolates_between_checkpoints(results: report.Results) -> None:
    rows = {r["case"]: r for r in published.time_to_target_rows(results)}
    w1 = rows[W1]
    # cumulative wall: 1.0 s at checkpoint 2 (the warm-up counts as a steady-state run of 0.5 s:
    # its 1.0 s holds one-time costs that no case is charged), 2.0 s at 4; projected 0.5 s and
    # 1.0 s. Loss 0.8 lies at fraction (0.8 - mid) / (end - mid) of the way:
    # seed 0: 0.2/0.5 = 0.4, seed 1: 0.4/0.6 = 2/3, seed 2: 0.6/0.7 = 6/7
    fractions = [0.4, 2 / 3, 6 / 7]
    assert w1["reached"] == "3/3 seeds"
    assert w1["wall_s"] == pytest.approx(sum(1.0 + f * 1.0 for f in fractions) / 3)
    assert w1["projected_s"] == pytest.approx(sum(0.5 + f * 0.5 for f in fractions) / 3)
    assert w1["runs"] == pytest.approx(sum(2 + f * 2 for f in fractions) / 3)
    assert w1["checkpoint_wall_s"] == pytest.approx(2.0) and w1["checkpoint_runs"] == 4
    assert w1["seen_tasks_per_run"] == 4
    assert rows[W2]["reached"] == "not reached (best 0.9)" and math.isnan(rows[W2]["wall_s"])
    text = report.render(results, 1000, wide=True)
    assert "## Time to target: validation loss <= 0.8" in text and "not reached" in text


def test_a_target_reached_at_the_first_checkpoint_takes_no_time(tmp_path: Path) -> None:
    results = make_results(tmp_path, {"target": {"metric": "loss", "value": 5.0}})
    row = published.time_to_target_rows(results)[0]
    assert row["wall_s"] == 0.0 and row["runs"] == 0.0 and row["reached"] == "3/3 seeds"


def test_a_target_on_a_metric_the_domain_lacks_is_not_compared(tmp_path: Path) -> None:
    """An older folder's accuracy target on the sinusoid (a suite refuses it now): the stored
    accuracy zeros are no metric of the domain, so nothing is "reached" or "not reached"."""
    results = make_results(tmp_path, {"target": {"metric": "accuracy", "value": 0.9}})
    rows = published.time_to_target_rows(results)
    assert [r["reached"] for r in rows] == ["not comparable: the domain declares no 'accuracy'"] * 2
    assert published.time_to_target_figure(results) is None
    assert "not comparable" in report.render(results, 1000)


RETURN = {"name": "return", "unit": "mean return", "higher_is_better": True, "source": "score"}
NEG_RETURN = {"name": "loss", "unit": "minus return", "higher_is_better": False, "source": "loss"}


def test_the_declared_metric_and_its_direction_drive_the_report(tmp_path: Path) -> None:
    """A domain declaring a return (higher is better) as its primary metric: the report compares
    on it, a target on it is reached at or above its value, and no accuracy appears."""
    folder = RunFolder.create(tmp_path / "results", "rl", "smoke")
    target = {"metric": "return", "value": -15}
    manifest = {"suite": "rl", "scale": "smoke", "baseline": W1, "cases": [W1], "plan": PLAN,
                "labels": [], "status": "complete", "target": target}  # fmt: skip
    folder.write_manifest(manifest)
    base = {"case_id": W1, "seed": 0, "attempt": 0}
    start = {"case": {**case_config(1), "domain": "navigation"}, "metrics": [RETURN, NEG_RETURN]}
    folder.append({**base, "kind": "case_start", **start})
    for done, ret in ((0, -30.0), (2, -20.0), (4, -10.0)):
        fields = {"return_by_step": [-40.0, ret], "return_final_per_task": [ret - 1, ret + 1],
                  "loss_by_step": [40.0, -ret],
                  "loss_final_per_task": [1 - ret, -1 - ret]}  # fmt: skip
        folder.append({**base, "kind": "validation", "after_runs": done, **fields})
        if done < 4:
            for run in (done, done + 1):
                folder.append({**base, "kind": "run", "run_index": run, "warmup": run == 0,
                               "wall_s": 1.0, "projected_s": 1.0})  # fmt: skip
    (results,) = report.load([folder])
    metric = report.quality_metric(results)
    assert (metric.name, metric.higher_is_better) == ("return", True)
    assert published.target_text(results) == "validation return >= -15"
    (row,) = published.time_to_target_rows(results)
    assert row["reached"] == "1/1 seeds"  # -20 at run 2, -10 at run 4: crossed in between
    assert row["runs"] == pytest.approx(3.0)
    text = report.render(results, 1000)
    assert "return" in text and "accuracy" not in text


def test_write_makes_the_new_tables_and_plots(results: report.Results, tmp_path: Path) -> None:
    names = {p.name for p in report.write(results, tmp_path / "out", 1000)}
    assert {
        "tiny-smoke-published.csv",
        "tiny-smoke-paper_rule.csv",
        "tiny-smoke-honest.csv",
        "tiny-smoke-time_to_target.csv",
        "tiny-smoke-time-to-target.png",
        "tiny-smoke-quality-vs-wall.png",
    } <= names
    fig = published.time_to_target_figure(results)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("measured") and labels[1].startswith("projected")
    assert "ci95 over seeds" in ax.get_legend().get_title().get_text()
    assert f"not reached: {W2}" in ax.get_title()
    report._pyplot().close(fig)


def test_old_folders_read_published_rows_from_the_suite_file(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.toml"
    suite.write_text(
        'name = "tiny"\ndescription = "d"\n[domain]\nname = "sinusoid"\n[base]\ntasks = 4\n'
        "[sweep]\nworkers = [1, 2]\n[scales.smoke]\nruns = 3\nseeds = [0, 1, 2]\n"
        'checkpoints = [0, 2, 4]\n[target]\nmetric = "loss"\nvalue = 0.8\n'
        '[[published]]\nsource = "paper"\ncase = "w1-e1-t4-sum-o2"\nmetric = "loss"\n'
        "after_runs = 4\nvalue = 0.65\n"
    )
    results = make_results(tmp_path, {"suite_file": str(suite)})
    assert results.target == TARGET
    assert [r["verdict"] for r in published.published_rows(results)] == ["agree"]
    assert "tiny.toml as it is now (the manifest predates them)" in report.render(results, 10)
    # neither in the manifest nor a loadable suite: no rows, no crash
    bare = make_results(tmp_path / "bare", name="no_such_suite")
    assert bare.published == [] and bare.target is None
    assert "the suite sets no [target]" in report.render(bare, 10)


def test_extrapolation_beside_the_thesis_rule(results: report.Results) -> None:
    row = next(r for r in report.extrapolation_rows(results, 1000) if r["case"] == W1)
    assert row["extrapolated_s"] == pytest.approx(1000 * 0.5)  # N x mean, no one-time cost
    assert row["one_time_s"] == pytest.approx(1.0 - 0.5)  # the warm-up beyond a steady run
    assert row["thesis_rule_s"] == pytest.approx(999 * 0.5)  # thesis fig. 6.26
    text = report.render(results, 1000, wide=True)
    assert "thesis_rule_s (thesis fig. 6.26): 999 x mean" in text


LIST_SUITE = """
name = "timed"
description = "a suite with earlier records"
[domain]
name = "sinusoid"
[base]
tasks = 4
[sweep]
workers = [1, 2]
[scales.smoke]
runs = 3
seeds = [0]
checkpoints = [0, 4]
[scales.quick]
runs = 30
seeds = [0]
"""


def test_list_estimates_from_earlier_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import LIST_WIDTH, main
    from harness.suite import load_suite

    monkeypatch.chdir(tmp_path)  # no ./results/runs here
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "timed.toml").write_text(LIST_SUITE)
    suite = load_suite(tmp_path / "suites" / "timed.toml", "smoke")
    w1 = suite.cases[0]
    folder = RunFolder.create(tmp_path / "earlier", "timed", "smoke")
    folder.write_manifest({"suite": "timed", "scale": "smoke"})
    base = {"case_id": w1.case_id, "seed": 0, "config_hash": w1.config_hash()}
    folder.append({**base, "kind": "case_start", "setup_s": 0.1})
    for index, wall in enumerate([1.0, 0.4, 0.5, 0.9]):
        folder.append({**base, "kind": "run", "warmup": index == 0, "wall_s": wall})
    folder.append({**base, "kind": "validation", "validation_s": 0.2})
    args = [
        "list",
        "--suites",
        str(tmp_path / "suites"),
        "--results-dir",
        str(tmp_path / "earlier"),
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= LIST_WIDTH
    row = next(line for line in lines if line.startswith("timed "))
    # smoke: setup 0.1 + warm-up 1.0 + 3 runs x median 0.5 + 2 validations x 0.2 = 3.0 s, for the
    # one case with records ('+': w2 has none); quick: these cases' configurations differ in
    # nothing but the plan, so the same records serve: 0.1 + 1.0 + 30 x 0.5 + 1 x 0.2 = 16.3 s
    assert row.split()[1:6] == ["2", "2", "-", "3s+", "16s+"]
    assert any(line.startswith("est.: setup + warm-up") for line in lines)


def test_the_manifest_keeps_the_published_rows_and_target(tmp_path: Path) -> None:
    from harness.cli import _new_manifest
    from harness.suite import load_suite

    path = tmp_path / "timed.toml"
    path.write_text(
        LIST_SUITE + '[target]\nmetric = "loss"\nvalue = 0.8\n[[published]]\nsource = "paper"\n'
        'case = "w2-e1-t4-sum-o2"\nmetric = "seconds_per_run"\nvalue = 7.67\nci95 = 0.1\n'
    )
    manifest = _new_manifest(load_suite(path, "smoke"), [])
    assert manifest["target"] == TARGET
    assert manifest["published"] == [
        {"source": "paper", "case": "w2-e1-t4-sum-o2", "metric": "seconds_per_run",
         "value": 7.67, "after_runs": None, "ci95": 0.1, "rule": "", "read_off_plot": False}
    ]  # fmt: skip


def test_a_diverged_case_is_named_not_compared(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "results", "tiny", "smoke")
    folder.write_manifest(
        {
            "suite": "tiny",
            "scale": "smoke",
            "baseline": W1,
            "cases": [W1],
            "plan": PLAN,
            "published": PUBLISHED[:1],
            "target": TARGET,
        }
    )
    write_seed(folder, W1, 0, 1, {0: 4.0, 2: 0.7, 4: 0.5}, wall=0.5)
    folder.append({"case_id": W1, "seed": 0, "attempt": 0, "kind": "diverged", "run_index": 3})
    (results,) = report.load([folder])
    assert published.published_rows(results)[0]["verdict"] == "diverged in 1/1 seeds"
    (row,) = published.time_to_target_rows(results)
    # reached at checkpoint 2, before the divergence: counted, and the divergence noted
    assert row["reached"] == "1/1 seeds" and row["notes"].endswith("diverged in seed 0")
    assert "first checkpoint after run 0" in row["notes"]  # 0.7 at 2 runs: past 0.8 already
    paper, honest = published.paper_tables(results, report.quality_metric(results))
    assert paper[0]["4 runs"] == honest[0]["4 runs"] == "diverged in 1/1 seeds"


def test_one_seed_time_to_target_is_a_range_from_the_checkpoints_ci(
    results: report.Results,
) -> None:
    """Issue 19: W2 ran one seed. Its checkpoints' ci95 over the 3 validation tasks is
    4.303 x 0.1 / sqrt(3) = 0.248: optimistically loss 1.252 at 2 runs and 0.652 at 4 (crossing
    0.8 at fraction 0.7533 of the way, 2.0 s + 0.7533 x 2.0 s), pessimistically 1.148 at 4 runs:
    not reached."""
    rows = {r["case"]: r for r in published.time_to_target_rows(results)}
    ci = T95_2 * 0.1 / math.sqrt(3)
    fraction = (0.8 - (1.5 - ci)) / ((0.9 - ci) - (1.5 - ci))
    assert rows[W2]["wall_range"] == f"between {2.0 + fraction * 2.0:.3g} s and not reached"
    assert rows[W1]["wall_range"] == "-"  # three seeds: ci95 over seeds instead
    text = report.render(results, 1000, wide=True)
    assert "wall_range" in text and "not reached" in text


def test_one_seed_cases_whose_ranges_overlap_are_not_resolved(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path / "results", "one", "smoke")
    manifest = {"suite": "one", "scale": "smoke", "baseline": W1, "cases": [W1, W2],
                "plan": PLAN, "labels": [], "status": "complete", "target": TARGET}  # fmt: skip
    folder.write_manifest(manifest)
    write_seed(folder, W1, 0, 1, {0: 4.0, 2: 1.0, 4: 0.5}, wall=0.5)
    write_seed(folder, W2, 0, 2, {0: 4.0, 2: 1.0, 4: 0.5}, wall=0.6)  # a little slower
    (results,) = report.load([folder])
    rows = {r["case"]: r for r in published.time_to_target_rows(results)}
    assert rows[W2]["vs_baseline"] == "not resolved"
    assert rows[W1]["vs_baseline"] == "baseline"
    assert "first checkpoint" not in rows[W2]["notes"]
    # the baseline's row comes first in the CSV: its header must still hold every column
    written = report.write(results, tmp_path / "out", 1000)
    (csv_path,) = [p for p in written if p.name.endswith("time_to_target.csv")]
    assert "vs_baseline" in csv_path.read_text().splitlines()[0]
