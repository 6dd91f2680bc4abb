"""The reproduction suites (one per experiment of the thesis and the paper in
/work/shared/reference): every one loads at every scale with the expected number of cases, its
smoke scale is small and uses real data, and every [[published]] row names a case of its paper
scale at a checkpoint the paper scale validates. Loading is fast (no TensorFlow): nothing here is
slow."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.suite import SCALES, Suite, load_suite

# suite -> cases at (smoke, quick, paper)
REPRODUCTIONS: dict[str, tuple[int, int, int]] = {
    # thesis, chapter 6
    "thesis_impl_omniglot": (1, 1, 1),  # fig 6.1
    "thesis_impl_miniimagenet": (1, 1, 1),  # fig 6.2
    "thesis_impl_sinusoid": (1, 1, 1),  # fig 6.3
    "thesis_beta_omniglot": (4, 8, 8),  # figs 6.5/6.6
    "thesis_beta_miniimagenet": (4, 4, 8),  # figs 6.7/6.8
    "thesis_beta_sinusoid": (4, 8, 8),  # figs 6.9/6.10
    "thesis_workers_omniglot": (2, 4, 5),  # figs 6.11/6.12
    "thesis_workers_miniimagenet": (2, 2, 3),  # fig 6.13
    "thesis_workers_sinusoid": (2, 3, 3),  # fig 6.14
    "thesis_inner_steps": (4, 6, 6),  # figs 6.15/6.16
    "thesis_scaling": (4, 7, 13),  # figs 6.17-6.19, 6.23, 6.25, tables 6.2-6.4
    "thesis_scaling_mean": (4, 4, 13),  # figs 6.20/6.21
    "thesis_scaling_mixed_sum": (3, 3, 3),  # figs 6.24/6.26
    "thesis_scaling_mixed_mean": (3, 3, 3),  # fig 6.22
    # paper
    "paper_sinusoid_workers": (2, 3, 4),  # table 1, fig 2
    "paper_omniglot_5w1s": (2, 4, 6),  # table 2, fig 3
    "paper_omniglot_5w5s": (2, 2, 6),  # table 3
    "paper_omniglot_20w1s": (2, 2, 6),  # table 4
    "paper_miniimagenet_5w1s": (2, 1, 4),  # table 5 (left)
    "paper_miniimagenet_5w5s": (2, 1, 4),  # table 5 (right)
    "paper_maml_steps": (2, 4, 4),  # fig 4
    "paper_tasks_mean": (2, 5, 5),  # fig 5 (top)
    "paper_tasks_sum": (5, 5, 5),  # fig 5 (bottom)
    "paper_same_total_tasks": (4, 4, 4),  # fig 6
}
# existing suites that carry [[published]] rows of the documents: suite -> number of rows
PUBLISHED_ELSEWHERE = {"time_measurement": 26, "aggregation": 10}
# published rows per reproduction suite (all cells of the tables that survived the extraction)
PUBLISHED_ROWS = {
    "thesis_beta_omniglot": 1,
    "thesis_scaling": 26,
    "paper_sinusoid_workers": 4,
    "paper_omniglot_5w1s": 36,
    "paper_omniglot_5w5s": 36,
    "paper_omniglot_20w1s": 36,
    "paper_miniimagenet_5w1s": 12,
    "paper_miniimagenet_5w5s": 12,
}
SMOKE_RUN_BUDGET = 20  # cases x seeds x (1 warm-up + runs) at the smoke scale
SMOKE_VALIDATION_TASKS = 20


def _load(name: str, scale: str) -> Suite:
    return load_suite(name, scale)


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
@pytest.mark.parametrize("scale", SCALES)
def test_loads_at_every_scale_with_expected_cases(name: str, scale: str) -> None:
    suite = _load(name, scale)
    expected = dict(zip(SCALES, REPRODUCTIONS[name], strict=True))[scale]
    assert suite.name == name
    assert len(suite.cases) == expected, [c.case_id for c in suite.cases]
    assert suite.baseline in {c.case_id for c in suite.cases}
    assert suite.labels, "a reproduction says what it chose where the documents leave it open"


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_smoke_scale_is_small_and_uses_real_data(name: str) -> None:
    suite = _load(name, "smoke")
    plan = suite.plan
    runs = len(suite.cases) * len(plan.seeds) * (1 + plan.runs)
    assert runs <= SMOKE_RUN_BUDGET, f"{name}: {runs} runs at the smoke scale"
    assert plan.validation_tasks <= SMOKE_VALIDATION_TASKS
    assert plan.checkpoints, "an accuracy suite validates at least once, even at the smoke scale"
    assert all(c.domain != "random_images" for c in suite.cases), "accuracy needs real data"


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_quick_scale_is_a_subset_of_the_paper_scale(name: str) -> None:
    quick, paper = _load(name, "quick"), _load(name, "paper")
    assert {c.case_id for c in quick.cases} <= {c.case_id for c in paper.cases}
    assert quick.plan.runs <= paper.plan.runs
    assert len(quick.plan.seeds) <= len(paper.plan.seeds)


@pytest.mark.parametrize("name", sorted({**REPRODUCTIONS, **PUBLISHED_ELSEWHERE}))
def test_published_rows_name_paper_scale_cases_and_checkpoints(name: str) -> None:
    paper = _load(name, "paper")
    expected = PUBLISHED_ROWS.get(name, PUBLISHED_ELSEWHERE.get(name, 0))
    assert len(paper.published) == expected
    ids = {c.case_id for c in paper.cases}
    for row in paper.published:
        assert row.case in ids, f"{name}: {row.source} names {row.case}, not a paper-scale case"
        assert row.source.startswith(("paper ", "thesis "))
        if row.metric not in ("seconds_per_run", "relative_pct"):
            assert row.after_runs in paper.plan.checkpoints, (
                f"{name}: {row.source} after {row.after_runs} runs, which the paper scale "
                f"does not validate at (checkpoints {paper.plan.checkpoints})"
            )
        if row.metric == "accuracy":
            assert 0 < row.value <= 1
        if row.ci95 is not None:
            assert row.ci95 < row.value


def test_paper_tables_cover_every_cell() -> None:
    """Tables 2-4: 6 worker counts x 6 checkpoints; table 5: 4 x 3 per half."""
    for name in ("paper_omniglot_5w1s", "paper_omniglot_5w5s", "paper_omniglot_20w1s"):
        rows = _load(name, "paper").published
        assert {(r.case, r.after_runs) for r in rows} == {
            (f"w{w}-e1-t32-sum-o1", s)
            for w in (1, 2, 4, 8, 16, 32)
            for s in (500, 1000, 2000, 4000, 8000, 10000)
        }
    for name in ("paper_miniimagenet_5w1s", "paper_miniimagenet_5w5s"):
        rows = _load(name, "paper").published
        assert {(r.case, r.after_runs) for r in rows} == {
            (f"w{w}-e1-t4-sum-k5-o1", s) for w in (4, 8, 16, 32) for s in (500, 1000, 2000)
        }


def test_a_few_published_values_as_printed() -> None:
    """Spot checks against the documents (thesis table 6.3, paper tables 1, 2 and 5)."""

    def value(name: str, case: str, metric: str, after: int | None = None) -> float:
        rows = [
            r
            for r in _load(name, "paper").published
            if r.case == case and r.metric == metric and r.after_runs == after
        ]
        assert len(rows) == 1, rows
        return rows[0].value

    assert value("thesis_scaling", "w16-e1-t32-sum-o1", "seconds_per_run") == 10.97
    assert value("thesis_scaling", "w1-e1-t512-sum-o1", "relative_pct") == 1520.85
    assert value("time_measurement", "w1-e16-t32-sum-o1", "seconds_per_run") == 114.93
    assert value("paper_sinusoid_workers", "w16-e1-t10-sum-o1", "loss", 10000) == 0.53
    assert value("paper_omniglot_5w1s", "w1-e1-t32-sum-o1", "accuracy", 1000) == 0.82
    assert value("paper_omniglot_20w1s", "w8-e1-t32-sum-o1", "accuracy", 4000) == 0.85
    assert value("paper_miniimagenet_5w5s", "w32-e1-t4-sum-k5-o1", "accuracy", 2000) == 0.53


@pytest.mark.parametrize("name", sorted(REPRODUCTIONS))
def test_smoke_dry_run_finds_the_data(name: str) -> None:
    """What `run --dry-run` checks beyond loading: the data. miniImageNet is not downloadable
    (and absent on the development machine); Omniglot is only looked up locally here, so the
    test never downloads."""
    from dmaml_core.tasks.omniglot import DatasetNotFoundError, find_omniglot
    from harness.data_source import describe_data

    suite = _load(name, "smoke")
    domains = {c.domain for c in suite.cases}
    if "omniglot" in domains:
        try:
            find_omniglot(None, None, allow_download=False)
        except DatasetNotFoundError:
            pytest.skip("Omniglot is not on this machine (the harness would download it)")
    try:
        entries = describe_data(suite, None)
    except FileNotFoundError as err:
        if "miniimagenet" in domains:
            pytest.skip(f"miniImageNet data absent: {str(err)[:80]}")
        raise
    assert entries


def test_a_stand_in_data_set_is_named_in_the_manifest_entry_and_the_report(
    tmp_path: Path,
) -> None:
    """The miniImageNet fixture (synthetic images) carries ``STAND_IN.txt``: ``describe_data``
    records its first line and the report's header says, in capitals, that the numbers are not
    miniImageNet's. Real data (no marker) and generated data read plainly."""
    from harness import report
    from harness.data_source import describe_data
    from suites.conftest import write_synthetic_miniimagenet

    folder = tmp_path / "miniimagenet"
    write_synthetic_miniimagenet(folder)
    suite = _load("thesis_impl_miniimagenet", "smoke")
    (entry,) = describe_data(suite, str(folder))
    assert entry["path"] == str(folder.resolve())
    assert "synthetic" in entry["stand_in"] and "absent" in entry["stand_in"]
    generated = {"domain": "sinusoid", "source": "generated in memory"}
    omniglot = {"domain": "omniglot", "path": "/data/o", "sha256": {"a.zip": "0123456789ab"}}
    results = report.Results("s", "smoke", "b", [{"data": [entry, generated, omniglot]}], {})
    lines = report.data_lines(results)
    assert lines[0].startswith(f"data: miniimagenet from {folder.resolve()}")
    assert "STAND-IN, NOT THE REAL DATA SET: synthetic" in lines[0]
    assert lines[1] == "data: sinusoid: generated in memory"
    assert lines[2] == "data: omniglot from /data/o (a.zip 01234567...)"
