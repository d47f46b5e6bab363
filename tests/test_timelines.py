"""Timelines: a task's position on its trigger, driven as the engine drives it.

Pure and fast: ``make mutation`` runs this file (with ``test_triggers.py``)
against every mutant of the trigger modules. The wall-clock timeline is driven
with a fake rule that fires every 10 s and counts what it is asked, so the
cached next fire time and the bounded walks are pinned, not only the answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from quiv._triggers import Every, Moment, Timeline
from quiv._triggers._base import WALK_STEPS, WallTimeline

UTC = timezone.utc
BASE = datetime(2030, 1, 1, tzinfo=UTC)


def wall(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def at(seconds: float, mono_offset: float = 0.0) -> Moment:
    """``seconds`` after ``BASE`` on the wall; the monotonic clock reads that plus an offset."""
    return Moment(seconds + mono_offset, wall(seconds))


class Rule:
    """Fires at ``BASE + 10 k`` s (up to ``last`` if given); counts the questions it gets."""

    def __init__(self, last: float | None = None) -> None:
        self.last = last
        self.asked = 0  # next_after calls
        self.walks = 0  # fire_times iterators opened

    def _next(self, after: datetime) -> datetime | None:
        k = math.floor((after - BASE).total_seconds() / 10) + 1
        if self.last is not None and 10 * k > self.last:
            return None
        return wall(10 * k)

    def next_after(self, after: datetime) -> datetime | None:
        self.asked += 1
        assert self.asked < 500, "walked the rule without end"
        return self._next(after)

    def fire_times(self, after: datetime) -> Iterator[datetime]:
        self.walks += 1
        instant = self._next(after)
        for _ in range(500):
            if instant is None:
                return
            yield instant
            instant = self._next(instant)
        raise AssertionError("iterated the rule without end")

    def timeline(self) -> WallTimeline:
        return WallTimeline(self._next, self.next_after, self.fire_times)


def cursor_of(timeline: Timeline) -> Moment | None:
    return timeline.cursor  # read afresh: the timeline moved it since the last look


def started(rule: Rule, now: float = 3.0) -> WallTimeline:
    timeline = rule.timeline()
    timeline.start(at(now), 0.0)
    return timeline


# -- Moment --------------------------------------------------------------------


def test_a_moment_derives_its_other_clock_from_now() -> None:
    now = Moment(100.0, wall(0))
    assert Moment.at_mono(105.0, now) == Moment(105.0, wall(5))
    assert Moment.at_mono(95.0, now) == Moment(95.0, wall(-5))
    assert Moment.at_wall(wall(5), now) == Moment(105.0, wall(5))
    assert Moment.at_wall(wall(-5), now) == Moment(95.0, wall(-5))


# -- the wall-clock timeline -----------------------------------------------------


def test_start_plans_the_first_fire_after_the_delay() -> None:
    rule = Rule()
    timeline = rule.timeline()
    assert timeline.start(at(3, 1000), 0.0) == at(10, 1000)
    assert timeline.cursor == at(3, 1000)
    assert timeline.start(at(3, 1000), 12.0) == at(20, 1000)
    assert timeline.cursor == at(15, 1000)  # nothing before the delay is owed
    assert Rule(last=0).timeline().start(at(3), 0.0) is None  # the rule fires no more


def test_overdue_lists_the_fires_through_now_and_counts_them() -> None:
    assert Rule().timeline().overdue(at(50), 5) == ([], 0)  # never started
    timeline = started(Rule())
    assert timeline.overdue(at(9), 5) == ([], 0)
    assert timeline.overdue(at(10), 5) == ([at(10)], 1)  # due at exactly now: due
    assert timeline.overdue(at(35), 5) == ([at(10), at(20), at(30)], 3)
    assert timeline.overdue(at(35), 2) == ([at(20), at(30)], 3)  # the latest are kept
    assert timeline.overdue(at(35), 0) == ([], 3)
    assert timeline.overdue(at(35, 1000), 1) == ([at(30, 1000)], 3)  # on now's clocks
    assert started(Rule(last=20)).overdue(at(50), 5) == ([at(10), at(20)], 2)


def test_nothing_overdue_costs_one_question_for_the_whole_interval() -> None:
    rule = Rule()
    timeline = started(rule)
    for now in (4, 5, 6, 9):
        assert timeline.overdue(at(now), 5) == ([], 0)
        assert timeline.upcoming(at(now)) == at(10)
        assert timeline.after_run(at(now)) == at(10)
    assert (rule.asked, rule.walks) == (1, 0)


def test_a_short_backlog_is_walked_one_fire_at_a_time() -> None:
    rule = Rule()
    timeline = started(rule)
    assert timeline.overdue(at(25), 5) == ([at(10), at(20)], 2)
    assert (rule.asked, rule.walks) == (3, 0)  # after 3, after 10, after 20


def test_a_long_backlog_switches_to_one_iterator() -> None:
    rule = Rule()
    timeline = started(rule)
    listed, count = timeline.overdue(at(200), 100)
    assert listed == [at(10 * k) for k in range(1, 21)]  # 200 itself is due
    assert count == 20
    # The cursor's next fire, WALK_STEPS - 1 steps, then one iterator for the rest.
    assert (rule.asked, rule.walks) == (WALK_STEPS, 1)
    rule = Rule(last=150)
    listed, count = started(rule).overdue(at(500), 100)
    assert (listed[-1], count, rule.walks) == (at(150), 15, 1)  # the rule ran out


def test_advance_moves_the_cursor_forward_only() -> None:
    fresh = Rule().timeline()
    fresh.advance(at(10))
    assert fresh.cursor == at(10)
    assert fresh.upcoming(at(11)) == at(20)  # the first question is answered afresh
    timeline = started(Rule())
    timeline.advance(at(10))
    assert timeline.cursor == at(10)
    timeline.advance(at(5))
    assert timeline.cursor == at(10)
    timeline.advance(Moment(999.0, wall(10)))  # the same wall time: not later
    assert timeline.cursor == at(10)
    timeline.advance(at(12))
    assert timeline.cursor == at(12)


def test_the_next_fire_is_looked_up_again_only_once_the_cursor_reaches_it() -> None:
    rule = Rule()
    timeline = started(rule)
    assert timeline.upcoming(at(4)) == at(10)
    assert rule.asked == 1
    timeline.advance(at(10))
    assert timeline.upcoming(at(11)) == at(20)
    assert rule.asked == 2
    timeline.advance(at(15))  # short of the next fire: it stands
    assert timeline.upcoming(at(16)) == at(20)
    assert rule.asked == 2
    timeline.advance(at(20))
    assert timeline.upcoming(at(21)) == at(30)
    assert rule.asked == 3


def test_a_rule_that_fires_no_more_is_asked_once() -> None:
    rule = Rule(last=10)
    timeline = started(rule)
    timeline.advance(at(10))
    assert timeline.upcoming(at(11)) is None
    timeline.advance(at(50))
    assert timeline.upcoming(at(51)) is None
    assert timeline.after_run(at(51)) is None
    assert timeline.overdue(at(60), 5) == ([], 0)
    assert rule.asked == 1


def test_upcoming_without_a_cursor_asks_from_now() -> None:
    timeline = Rule().timeline()
    assert timeline.upcoming(at(13, 1000)) == at(20, 1000)
    assert Rule(last=0).timeline().upcoming(at(13)) is None


def test_after_run_plans_the_first_fire_after_the_run() -> None:
    assert Rule().timeline().after_run(at(13, 1000)) == at(20, 1000)  # never started
    assert Rule(last=0).timeline().after_run(at(13)) is None
    timeline = started(Rule())
    timeline.advance(at(10))  # the run for 10 starts
    assert timeline.after_run(at(12, 1000)) == at(20, 1000)
    assert timeline.after_run(at(20)) == at(30)  # it ended on 20: 20 is past
    rule = Rule()
    timeline = started(rule)
    timeline.advance(at(10))
    assert timeline.after_run(at(35)) == at(40)
    assert rule.asked == 3  # after 10, 20 and 30
    assert started(Rule(last=20)).after_run(at(35)) is None


def test_a_long_overrun_jumps_straight_past_now() -> None:
    rule = Rule()
    timeline = started(rule)
    timeline.advance(at(10))
    assert timeline.after_run(at(1005)) == at(1010)
    # The cursor's next fire, WALK_STEPS - 1 steps along the rule, then one jump.
    assert rule.asked == WALK_STEPS + 1
    assert rule.walks == 0


def test_wall_lateness_and_rebase() -> None:
    timeline = Rule().timeline()
    assert timeline.late_by(at(10), at(13)) == 3.0
    assert timeline.late_by(at(10), at(7)) == -3.0
    # After a wall-clock jump, the wall time stands and the monotonic one follows.
    assert timeline.rebase(at(10), Moment(1003.0, wall(3))) == Moment(1010.0, wall(10))


# -- the interval timeline -----------------------------------------------------------


def test_every_fields_and_timeline_kind() -> None:
    every = Every(10)
    assert every.needs_zone is False  # elapsed time needs no zone
    assert every.with_default_zone("Europe/Berlin") is every
    assert Every(10, fixed=False).fields() == {
        "interval_seconds": 10.0,
        "fixed_interval": False,
        "cron": None,
        "run_at": None,
    }
    assert Every(10).timeline().start(at(3, 1000), 2.0) == at(5, 1000)


def test_a_fixed_cadence_anchors_on_the_first_start() -> None:
    timeline = Every(10).timeline()
    assert timeline.start(at(0), 0.0) == at(0)
    assert timeline.overdue(at(50), 5) == ([], 0)  # no grid before the first run
    timeline.advance(at(0))  # its job is created: still no grid until it starts
    assert timeline.overdue(at(50), 5) == ([], 0)
    assert timeline.upcoming(at(0)) is None
    assert timeline.after_run(at(4)) == at(14)  # no grid yet: measured from the end
    timeline.started(at(0), at(0.5))  # the first run starts half a second late
    assert timeline.cursor == at(0.5)
    assert timeline.upcoming(at(1)) == at(10.5)
    timeline.started(at(10.5), at(11))  # later runs keep the grid
    assert timeline.cursor == at(10.5)
    assert timeline.upcoming(at(12)) == at(20.5)
    assert timeline.after_run(at(12)) == at(20.5)
    assert timeline.after_run(at(25)) == at(30.5)  # the run overran 20.5
    assert timeline.overdue(at(35), 5) == ([at(20.5), at(30.5)], 2)
    assert timeline.overdue(at(35), 1) == ([at(30.5)], 2)
    assert timeline.overdue(at(35), 0) == ([], 2)
    assert timeline.overdue(at(15), 5) == ([], 0)
    # A restart (resume, update) drops the grid.
    assert timeline.start(at(40), 1.0) == at(41)
    assert cursor_of(timeline) is None
    assert timeline.overdue(at(60), 5) == ([], 0)
    assert timeline.upcoming(at(41)) is None


def test_a_relative_cadence_counts_from_each_end() -> None:
    timeline = Every(10, fixed=False).timeline()
    timeline.start(at(0), 0.0)
    timeline.started(at(0), at(0.5))
    assert timeline.cursor == at(0)  # no grid: the cursor is the slot
    assert timeline.upcoming(at(1)) is None  # known only once the run ends
    assert timeline.after_run(at(4)) == at(14)
    assert timeline.overdue(at(50), 5) == ([], 0)  # nothing to fall behind on


def test_every_advance_moves_forward_only() -> None:
    timeline = Every(10).timeline()
    timeline.advance(at(10))
    assert timeline.cursor == at(10)
    timeline.advance(at(5))
    assert timeline.cursor == at(10)
    timeline.advance(Moment(10.0, wall(99)))  # the same monotonic time: not later
    assert timeline.cursor == at(10)
    timeline.advance(at(20))
    assert timeline.cursor == at(20)


def test_every_lateness_and_rebase_keep_the_monotonic_clock() -> None:
    timeline = Every(10).timeline()
    assert timeline.late_by(at(10), at(13)) == 3.0
    assert timeline.late_by(at(10), at(7)) == -3.0
    assert timeline.rebase(at(10), Moment(3.0, wall(1003))) == Moment(10.0, wall(1010))


@pytest.mark.parametrize("fixed", [True, False])
def test_a_start_delay_is_measured_from_now(fixed: bool) -> None:
    assert Every(10, fixed=fixed).timeline().start(at(3, 100), 4.0) == at(7, 100)
