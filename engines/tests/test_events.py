"""The engines' shared protocol helpers."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpuworker_engines.events import Pace  # noqa: E402


def test_pace_reports_every_n_steps_and_after_a_quiet_while():
    now = [0.0]
    pace = Pace(50, seconds=5.0, clock=lambda: now[0])
    due = []
    for step in range(1, 121):
        now[0] += 0.5  # slow steps: 10 steps take 5 s
        if pace.due(step):
            due.append(step)
    # never more than 5 s (10 steps) without a report, and step 50/100 always
    gaps = [b - a for a, b in zip([0] + due, due)]
    assert max(gaps) <= 10, due
    assert 50 in due and 100 in due


def test_pace_fast_steps_report_by_count():
    now = [0.0]
    pace = Pace(50, seconds=5.0, clock=lambda: now[0])
    due = [s for s in range(1, 201) if (now.__setitem__(0, now[0] + 0.001) or pace.due(s))]
    assert due == [50, 100, 150, 200]
