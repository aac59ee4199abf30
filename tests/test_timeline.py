"""The run's timeline as a file: every kernel sees the steps, appends never interleave, damage is skipped."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

from labkit.timeline import EVENT_SENT, FLAG_APPLIED, Timeline

ADD_MANY = """
import sys
from labkit.timeline import Timeline
tl = Timeline(sys.argv[1])
for i in range(200):
    tl.add("flag applied", flag=f"flag{sys.argv[2]}", old="off", new=str(i))
"""


def test_a_second_timeline_on_the_same_file_sees_the_steps_and_the_run(tmp_path):
    path = tmp_path / "timeline.jsonl"
    first = Timeline(path)
    first.add(EVENT_SENT, flag="cartFailure", old="off", new="on")
    second = Timeline(path)
    assert second.run_id == first.run_id
    assert second.last(EVENT_SENT).detail == "cartFailure: off → on"
    assert second.last(EVENT_SENT).time.tzinfo is not None
    second.add(FLAG_APPLIED, flag="cartFailure", old="off", new="on")
    assert [s.kind for s in first.steps] == [EVENT_SENT, FLAG_APPLIED]


def test_two_processes_adding_at_once_lose_nothing(tmp_path):
    path = tmp_path / "timeline.jsonl"
    Timeline(path).clear()
    procs = [subprocess.Popen([sys.executable, "-c", ADD_MANY, str(path), str(n)]) for n in (1, 2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    steps = Timeline(path).steps
    assert len(steps) == 400
    for n in (1, 2):
        assert [s.new for s in steps if s.flag == f"flag{n}"] == [str(i) for i in range(200)]


def test_a_damaged_line_is_skipped_not_fatal(tmp_path):
    path = tmp_path / "timeline.jsonl"
    tl = Timeline(path)
    tl.add(FLAG_APPLIED, flag="cartFailure", old="off", new="on", at=datetime(2026, 12, 1, tzinfo=timezone.utc))
    with open(path, "a") as f:
        f.write('{"kind": "flag applied", "time": "not a time"}\n{half a line\n')
    tl.add(EVENT_SENT, flag="cartFailure", old="on", new="off")
    assert [s.kind for s in Timeline(path).steps] == [FLAG_APPLIED, EVENT_SENT]


def test_clear_starts_a_new_run(tmp_path):
    tl = Timeline(tmp_path / "timeline.jsonl")
    tl.add(FLAG_APPLIED, flag="cartFailure", old="off", new="on")
    run = tl.run_id
    tl.clear()
    assert tl.steps == [] and tl.run_id != run and Timeline(tmp_path / "timeline.jsonl").run_id == tl.run_id


def test_the_run_id_handed_out_before_the_first_step_stays_the_runs(tmp_path):
    tl = Timeline(tmp_path / "runs" / "timeline.jsonl")  # nothing written yet
    run = tl.run_id  # e.g. put on the change event before its step is added
    tl.add(EVENT_SENT, flag="cartFailure", old="off", new="on")
    assert Timeline(tmp_path / "runs" / "timeline.jsonl").run_id == run == tl.run_id


def test_a_run_id_shown_before_any_step_is_the_one_every_kernel_shows(tmp_path):
    """00's lab card shows the run id before any step; 01's kernel, started later, shows the same."""
    path = tmp_path / "timeline.jsonl"
    first, second = Timeline(path), Timeline(path)  # two kernels, neither has written a step
    shown = first.run_id
    assert second.run_id == shown and Timeline(path).run_id == shown
    second.add(EVENT_SENT, flag="cartFailure", old="off", new="on")
    assert first.run_id == shown and [s.kind for s in first.steps] == [EVENT_SENT]


def test_each_cycle_looks_up_its_own_steps():
    from labkit.timeline import FIRST_FAILURE, ROLLED_BACK

    tl = Timeline()
    t = lambda m: datetime(2026, 12, 1, 10, m, tzinfo=timezone.utc)  # noqa: E731
    assert tl.cycle_start() is None and tl.in_cycle(FIRST_FAILURE) is None
    tl.add(FLAG_APPLIED, flag="cartFailure", old="off", new="on", at=t(0))
    tl.add(FIRST_FAILURE, at=t(1))
    assert tl.in_cycle(FIRST_FAILURE).time == t(1)
    tl.add(FLAG_APPLIED, flag="cartFailure", old="on", new="off", at=t(5))
    tl.add(ROLLED_BACK, flag="cartFailure", new="off", at=t(5))
    tl.add(FLAG_APPLIED, flag="cartFailure", old="off", new="on", at=t(10))
    assert tl.cycle_start() == t(10) and tl.in_cycle(FIRST_FAILURE) is None  # the second change's own
    tl.add(FIRST_FAILURE, at=t(11))
    assert tl.in_cycle(FIRST_FAILURE).time == t(11)


def test_a_kernel_sees_the_run_end_when_a_new_local_lab_sets_its_file_aside(tmp_path):
    """A restarted local lab archives timeline.jsonl (its tenant forgot the markers): a kernel that
    read the old run shows none of its steps and a new run id, not markers the tenant has dropped."""
    path = tmp_path / "timeline.jsonl"
    kernel = Timeline(path)
    kernel.add(FLAG_APPLIED, flag="cartFailure", old="off", new="on")
    old_run = kernel.run_id
    assert len(kernel.steps) == 1

    path.rename(tmp_path / "timeline-20260101T000000Z.jsonl")  # what LocalLab.start() does

    assert kernel.steps == [] and kernel.run_id != old_run
    kernel.add(EVENT_SENT, flag="cartFailure", old="off", new="on")
    assert [s.kind for s in Timeline(path).steps] == [EVENT_SENT]
