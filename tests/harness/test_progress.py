"""The progress line: what it says, live (tqdm) and as throttled plain lines for logs."""

from __future__ import annotations

import io

from harness.progress import ProgressEvent, ProgressLine


def events() -> list[ProgressEvent]:
    case = ProgressEvent("case", "w1-e1-t10-sum-o2", 0, 1, 2, runs=3)
    return [
        ProgressEvent("sweep", "", -1, 0, 2, runs=6),
        case,
        ProgressEvent("validation", "w1-e1-t10-sum-o2", 0, 1, 2, runs=3, metric="loss", value=2.5),
        ProgressEvent("run", "w1-e1-t10-sum-o2", 0, 1, 2, runs=3, run=1, wall_s=0.0123),
        ProgressEvent("run", "w1-e1-t10-sum-o2", 0, 1, 2, runs=3, run=2, wall_s=0.0101),
    ]


def test_plain_lines_say_case_run_elapsed_eta_last_run_and_validation() -> None:
    stream = io.StringIO()
    line = ProgressLine(0, stream, interval_s=0.0, live=False)
    for event in events():
        line(event)
    out = stream.getvalue().splitlines()
    assert out[0].startswith("[00:00] case 1/2 w1-e1-t10-sum-o2 seed 0; elapsed 00:00, ETA")
    assert "run 2/3" in out[-1] and "ETA ~" in out[-1]
    assert "last run 10.1 ms" in out[-1] and "val loss 2.5" in out[-1]


def test_plain_lines_are_throttled_but_every_case_start_shows() -> None:
    stream = io.StringIO()
    line = ProgressLine(0, stream, interval_s=3600.0, live=False)
    for event in events():
        line(event)
    line(ProgressEvent("case", "w4-e1-t10-sum-o2", 0, 2, 2, runs=3))
    out = stream.getvalue().splitlines()
    assert len(out) == 2  # the two case starts; runs within the hour are not repeated
    assert "case 2/2 w4-e1-t10-sum-o2" in out[1] and "last run 10.1 ms" in out[1]


def test_skipped_case_seeds_are_said_so() -> None:
    stream = io.StringIO()
    ProgressLine(0, stream, live=False)(ProgressEvent("skipped", "w1", 3, 0, 1))
    assert "w1 seed 3 (already complete, skipped)" in stream.getvalue()


def test_live_line_is_a_tqdm_bar_over_the_runs_left() -> None:
    stream = io.StringIO()
    line = ProgressLine(0, stream, live=True)
    for event in events():
        line(event)
    line.close()
    shown = stream.getvalue().split("\r")[-1]
    assert "case 1/2 w1-e1-t10-sum-o2 seed 0 run 2/3" in shown
    assert "2/6" in shown and "last run 10.1 ms, val loss 2.5" in shown
