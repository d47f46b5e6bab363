"""Triggers and run policies: dated DST examples, property tests, bad input.

The 2030 transition days: Europe/Berlin springs forward 02:00 -> 03:00 on
31 March and falls back 03:00 -> 02:00 on 27 October; America/New_York springs
forward 02:00 -> 03:00 on 10 March and falls back 02:00 -> 01:00 on 3 November.
"""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import date, datetime, timedelta, timezone, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quiv import ConfigurationError, InvalidTimezoneError
from quiv._triggers import (
    At,
    Cron,
    Every,
    Moment,
    Overdue,
    RunPolicy,
    _cron,
    choose_trigger,
    is_missed,
    jitter_delay,
    resolve_trigger,
    settle_overdue,
    task_zone,
    validate_coalesce,
    validate_jitter,
    validate_max_instances,
    validate_misfire_grace,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SPRING = {"Europe/Berlin": date(2030, 3, 31), "America/New_York": date(2030, 3, 10)}
AUTUMN = {"Europe/Berlin": date(2030, 10, 27), "America/New_York": date(2030, 11, 3)}


def fires_on(cron: Cron, day: date) -> list[str]:
    """Local ISO times of the fires during ``day`` (local midnight to midnight)."""
    zone = cron.zone
    start = datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    fires = []
    for instant in cron.fire_times(start - timedelta(microseconds=1)):
        if instant >= end:
            break
        fires.append(instant.astimezone(zone).isoformat())
    return fires


def restarted_fires_on(cron: Cron, day: date) -> list[str]:
    """As ``fires_on``, but asking ``next_after`` afresh each time, as the engine does."""
    zone = cron.zone
    start = datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    fires = []
    instant = cron.next_after(start - timedelta(microseconds=1))
    while instant is not None and instant < end:
        fires.append(instant.astimezone(zone).isoformat())
        instant = cron.next_after(instant)
    return fires


# -- cron across daylight-saving changes --------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "expression", "expected"),
    [
        # 02:30 does not exist: it runs once, right after the gap.
        ("Europe/Berlin", SPRING["Europe/Berlin"], "30 2 * * *", ["2030-03-31T03:00:00+02:00"]),
        ("America/New_York", date(2030, 3, 10), "30 2 * * *", ["2030-03-10T03:00:00-04:00"]),
        # 02:30 happens twice in Berlin: it runs once, on the first pass.
        ("Europe/Berlin", AUTUMN["Europe/Berlin"], "30 2 * * *", ["2030-10-27T02:30:00+02:00"]),
        # New York repeats 01:00-02:00, so 02:30 is ordinary and 01:30 is the repeated one.
        ("America/New_York", date(2030, 11, 3), "30 2 * * *", ["2030-11-03T02:30:00-05:00"]),
        ("America/New_York", date(2030, 11, 3), "30 1 * * *", ["2030-11-03T01:30:00-04:00"]),
        # A fixed-hour expression with a stepped minute follows real instants (Debian cron).
        ("Europe/Berlin", SPRING["Europe/Berlin"], "*/30 2 * * *", []),
        (
            "Europe/Berlin",
            AUTUMN["Europe/Berlin"],
            "*/30 2 * * *",
            [
                "2030-10-27T02:00:00+02:00",
                "2030-10-27T02:30:00+02:00",
                "2030-10-27T02:00:00+01:00",
                "2030-10-27T02:30:00+01:00",
            ],
        ),
    ],
)
def test_daily_times_on_transition_days(
    zone: str, day: date, expression: str, expected: list[str]
) -> None:
    cron = Cron(expression, zone)
    assert fires_on(cron, day) == expected
    assert restarted_fires_on(cron, day) == expected


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
def test_hourly_fires_23_times_in_spring_and_25_in_autumn(zone: str) -> None:
    cron = Cron("0 * * * *", zone)
    for day, count in ((SPRING[zone], 23), (AUTUMN[zone], 25)):
        fires = restarted_fires_on(cron, day)
        assert fires == fires_on(cron, day)
        assert len(fires) == count
        instants = [datetime.fromisoformat(f) for f in fires]
        # An hour apart in real time, straight through the change.
        assert all(b - a == timedelta(hours=1) for a, b in pairwise(instants))
    ordinary = SPRING[zone] - timedelta(days=7)
    assert len(fires_on(cron, ordinary)) == 24


def test_restarting_inside_the_repeated_hour_does_not_run_twice() -> None:
    # 02:10 CET is the second pass of Berlin's repeated hour; 02:30 CEST already fired.
    cron = Cron("30 2 * * *", "Europe/Berlin")
    second_pass = datetime(2030, 10, 27, 1, 10, tzinfo=UTC)
    # cronsim itself, started here, answers with the first pass's 02:30 (in the past).
    raw = next(CronSim("30 2 * * *", second_pass.astimezone(BERLIN)))
    assert raw < second_pass
    assert cron.next_after(second_pass) == datetime(2030, 10, 28, 1, 30, tzinfo=UTC)


def test_due_between_lists_what_became_due_during_a_jump() -> None:
    # The wall clock jumped from Friday 02:00 to Tuesday 09:00 (a long suspend).
    cron = Cron("0 3 * * 1-5", "Europe/Berlin")
    before = datetime(2030, 5, 3, 2, 0, tzinfo=BERLIN)
    after = datetime(2030, 5, 7, 9, 0, tzinfo=BERLIN)
    local = [t.astimezone(BERLIN).isoformat() for t in cron.due_between(before, after)]
    assert local == [
        "2030-05-03T03:00:00+02:00",
        "2030-05-06T03:00:00+02:00",
        "2030-05-07T03:00:00+02:00",
    ]
    assert cron.count_between(before, after) == 3
    assert cron.due_between(before, after, limit=2) == cron.due_between(before, after)[:2]
    # The window is half open: a fire at ``after`` is not due again, one at ``until`` is.
    three = datetime(2030, 5, 6, 3, 0, tzinfo=BERLIN)
    assert cron.due_between(three, three) == []
    assert cron.due_between(three - timedelta(seconds=1), three) == [three.astimezone(UTC)]
    assert cron.count_between(three - timedelta(seconds=1), three) == 1
    assert cron.count_between(three, three + timedelta(hours=1)) == 0


def test_seconds_field_and_shorthands() -> None:
    every_20s = Cron("*/20 * * * * *", "UTC")
    start = datetime(2030, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    assert [t.second for t in every_20s.due_between(start, start + timedelta(minutes=1))] == [
        20,
        40,
        0,
    ]
    daily = Cron("@daily", "Europe/Berlin")
    assert daily.describe() == "cron '@daily' (Europe/Berlin)"
    assert daily.next_after(datetime(2030, 6, 1, 12, tzinfo=UTC)) == datetime(
        2030, 6, 1, 22, tzinfo=UTC
    )
    last_friday = Cron("0 9 * * 5L", "UTC")
    assert last_friday.next_after(datetime(2030, 5, 1, tzinfo=UTC)) == datetime(
        2030, 5, 31, 9, tzinfo=UTC
    )


def test_cron_value_semantics() -> None:
    cron = Cron("0  3 * *  1-5", "Europe/Berlin")
    assert cron.expression == "0 3 * * 1-5"
    assert cron.describe() == "cron '0 3 * * 1-5' (Europe/Berlin)"
    assert str(cron) == cron.describe()
    assert repr(cron) == "Cron('0 3 * * 1-5', timezone='Europe/Berlin')"
    assert cron == Cron("0 3 * * 1-5", BERLIN)
    assert hash(cron) == hash(Cron("0 3 * * 1-5", BERLIN))
    assert cron != Cron("0 3 * * 1-5", "America/New_York")
    assert cron != Cron("0 4 * * 1-5", "Europe/Berlin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cron.expression = "* * * * *"  # type: ignore[misc]


def test_cron_without_a_zone_waits_for_the_schedulers() -> None:
    cron = Cron("0 3 * * *")
    assert cron.needs_zone
    assert cron.describe() == "cron '0 3 * * *'"
    with pytest.raises(ConfigurationError, match="no timezone yet"):
        cron.next_after(datetime(2030, 1, 1, tzinfo=UTC))
    berlin = cron.with_default_zone("Europe/Berlin")
    assert berlin == Cron("0 3 * * *", "Europe/Berlin")
    assert not berlin.needs_zone
    assert berlin.with_default_zone("UTC") is berlin  # an explicit zone wins
    assert berlin.next_after(datetime(2030, 1, 1, tzinfo=UTC)) == datetime(
        2030, 1, 1, 2, tzinfo=UTC
    )


# -- one-off dates -------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "naive", "expected"),
    [
        # In the gap: read with the offset before the change, i.e. moved forward by the gap.
        ("Europe/Berlin", datetime(2030, 3, 31, 2, 30), "2030-03-31T03:30:00+02:00"),
        ("America/New_York", datetime(2030, 3, 10, 2, 30), "2030-03-10T03:30:00-04:00"),
        # In the repeated hour: the first occurrence, or the second with fold=1.
        ("Europe/Berlin", datetime(2030, 10, 27, 2, 30), "2030-10-27T02:30:00+02:00"),
        ("Europe/Berlin", datetime(2030, 10, 27, 2, 30, fold=1), "2030-10-27T02:30:00+01:00"),
        ("America/New_York", datetime(2030, 11, 3, 1, 30), "2030-11-03T01:30:00-04:00"),
        ("America/New_York", datetime(2030, 11, 3, 1, 30, fold=1), "2030-11-03T01:30:00-05:00"),
    ],
)
def test_at_in_a_gap_or_a_fold(zone: str, naive: datetime, expected: str) -> None:
    at = At(naive, zone)
    assert at.describe() == f"at {expected}"
    assert at.instant == datetime.fromisoformat(expected).astimezone(UTC)
    assert at.instant.tzinfo is UTC


def test_at_instant_and_first_due() -> None:
    at = At(datetime(2030, 3, 1, 9, 0), "Europe/Berlin")
    assert at.describe() == "at 2030-03-01T09:00:00+01:00"
    instant = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
    assert at.instant == instant
    earlier, later = instant - timedelta(days=1), instant + timedelta(days=1)
    assert at.first_due(earlier) == instant
    assert at.first_due(later) == later  # already past when scheduled: due at once
    assert at.next_after(earlier) == instant
    assert at.next_after(instant) is None
    assert at.due_between(earlier, instant) == [instant]
    assert at.due_between(instant, later) == []


def test_at_aware_and_pending_forms() -> None:
    aware = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
    assert At(aware).describe() == "at 2030-03-01T08:00:00+00:00"
    assert At(aware).with_default_zone("Europe/Berlin") == At(aware)  # nothing to resolve
    # A zone given with an aware time only changes how it is shown.
    shown = At(aware, "Europe/Berlin")
    assert shown.instant == aware
    assert shown.describe() == "at 2030-03-01T09:00:00+01:00"
    pending = At(datetime(2030, 3, 1, 9, 0))
    assert pending.needs_zone
    assert pending.describe() == "at 2030-03-01T09:00:00 (scheduler's zone)"
    with pytest.raises(ConfigurationError, match="no timezone yet"):
        _ = pending.instant
    assert pending.with_default_zone("America/New_York").instant == datetime(
        2030, 3, 1, 14, 0, tzinfo=UTC
    )
    assert repr(shown) == f"At({shown.when!r}, timezone='Europe/Berlin')"
    assert shown == At(datetime(2030, 3, 1, 9, 0), "Europe/Berlin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        shown.when = aware  # type: ignore[misc]


# -- intervals -----------------------------------------------------------------


def test_every_delegates_to_the_cadence_arithmetic() -> None:
    fixed, relative = Every(10), Every(10, fixed=False)
    assert fixed.describe() == "every 10s (fixed)"
    assert relative.describe() == "every 10s (relative)"
    assert Every(0.5).describe() == "every 0.5s (fixed)"
    assert repr(relative) == "Every(10, fixed=False)"
    assert fixed == Every(10.0) != relative
    assert not fixed.wall_clock
    assert Cron("* * * * *").wall_clock and At(datetime(2030, 1, 1)).wall_clock
    # Slots at 0, 10, 20...; the run of slot 10 ended at 34: 20 and 30 were missed.
    assert fixed.next_due(anchor=0.0, last_slot=10.0, ended=34.0) == 40.0
    assert fixed.skipped(10.0, 40.0) == 2
    assert fixed.overdue_slots(anchor=0.0, last_slot=10.0, now=34.0) == [20.0, 30.0]
    assert fixed.overdue_slots(anchor=0.0, last_slot=10.0, now=40.0) == [20.0, 30.0, 40.0]
    assert fixed.overdue_slots(anchor=0.0, last_slot=10.0, now=15.0) == []
    assert relative.next_due(anchor=0.0, last_slot=10.0, ended=34.0) == 44.0
    assert relative.skipped(10.0, 44.0) == 0
    assert relative.overdue_slots(anchor=0.0, last_slot=10.0, now=34.0) == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        fixed.seconds = 5  # type: ignore[misc]


@given(
    anchor=st.floats(0, 1e6),
    interval=st.floats(0.001, 86_400),
    k=st.integers(0, 10_000),
    behind=st.floats(0, 50),
)
def test_overdue_slots_lie_on_the_cadence_between_last_slot_and_now(
    anchor: float, interval: float, k: int, behind: float
) -> None:
    every = Every(interval)
    last = anchor + k * interval
    now = last + behind * interval
    slots = every.overdue_slots(anchor=anchor, last_slot=last, now=now)
    upcoming = every.next_due(anchor=anchor, last_slot=last, ended=now)
    assert all(last < s <= now for s in slots)
    assert slots == sorted(slots)
    # Together with the upcoming slot they account for every slot skipped.
    assert len(slots) == every.skipped(last, upcoming) + (upcoming <= now)
    tol = 1e-6 * max(1.0, abs(now))
    assert all(math.isclose(b - a, interval, abs_tol=tol) for a, b in pairwise(slots))


# -- policies ------------------------------------------------------------------


def test_coalesce_runs_one_for_many_and_false_runs_each() -> None:
    due = [10.0, 20.0, 30.0]
    assert settle_overdue(due, 31.0, misfire_grace=None, coalesce=True) == Overdue((30.0,), (), 2)
    assert settle_overdue(due, 31.0, misfire_grace=None, coalesce=False) == Overdue(
        (10.0, 20.0, 30.0), (), 0
    )
    assert settle_overdue([], 31.0, misfire_grace=0.0, coalesce=True) == Overdue((), (), 0)


def test_misfire_grace_misses_the_runs_past_it() -> None:
    due = [10.0, 20.0, 30.0]
    # Grace 15 s at 36: 10 and 20 are 26 and 16 s late, 30 is 6 s late.
    assert settle_overdue(due, 36.0, misfire_grace=15.0, coalesce=False) == Overdue(
        (30.0,), (10.0, 20.0), 0
    )
    assert settle_overdue(due, 36.0, misfire_grace=15.0, coalesce=True) == Overdue((30.0,), (), 2)
    # Even the latest is past grace: one missed record stands for all three.
    assert settle_overdue(due, 50.0, misfire_grace=15.0, coalesce=True) == Overdue((), (30.0,), 2)
    base = datetime(2030, 1, 1, tzinfo=UTC)
    wall = [base, base + timedelta(seconds=10)]
    assert settle_overdue(
        wall, base + timedelta(seconds=12), misfire_grace=5.0, coalesce=False
    ) == Overdue((wall[1],), (wall[0],), 0)


def test_is_missed_boundaries() -> None:
    assert not is_missed(10.0, 1e9, None)
    assert not is_missed(10.0, 15.0, 5.0)  # exactly at the grace still runs
    assert is_missed(10.0, 15.001, 5.0)
    assert is_missed(10.0, 10.001, 0.0)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    assert is_missed(start, start + timedelta(seconds=6), 5.0)
    for due, now in ((10.0, start), (start, 10.0)):
        with pytest.raises(TypeError, match="both be seconds or both datetimes"):
            is_missed(due, now, 5.0)  # type: ignore[type-var]


@given(
    due=st.lists(st.floats(0, 1000), max_size=20),
    grace=st.none() | st.floats(0, 1000),
    coalesce=st.booleans(),
)
def test_settle_overdue_accounts_for_every_due_time(
    due: list[float], grace: float | None, coalesce: bool
) -> None:
    now = 1000.0
    out = settle_overdue(due, now, misfire_grace=grace, coalesce=coalesce)
    assert len(out.run) + len(out.missed) + out.coalesced == len(due)
    assert all(not is_missed(d, now, grace) for d in out.run)
    assert all(is_missed(d, now, grace) for d in out.missed)
    if coalesce:
        assert len(out.run) + len(out.missed) == min(1, len(due))
    if grace is None:
        assert out.missed == ()


def test_jitter_delays_within_bounds_and_is_reproducible() -> None:
    delays = [jitter_delay(5.0, random.Random(7)) for _ in range(3)]
    assert len(set(delays)) == 1  # same seed, same delay: the randomness is injected
    rng = random.Random(1)
    samples = [jitter_delay(5.0, rng) for _ in range(1000)]
    assert all(0.0 <= s <= 5.0 for s in samples)
    assert max(samples) > 4.5 and min(samples) < 0.5  # spread over the range
    assert jitter_delay(0.0, rng) == 0.0
    # No jitter draws nothing: the random sequence of the other tasks is not disturbed.
    drawn = random.Random(3)
    assert jitter_delay(0.0, drawn) == 0.0
    assert drawn.random() == random.Random(3).random()
    small = [jitter_delay(0.5, random.Random(seed)) for seed in range(20)]
    assert all(0.0 <= s <= 0.5 for s in small)
    assert len(set(small)) == 20  # below one second is still random


# -- property tests: cron --------------------------------------------------------

seconds_field = st.sampled_from(["0", "*/20", "30", "15,45"])
minutes = st.sampled_from(["*", "0", "30", "*/15", "5,35", "0-10/5", "59"])
hours = st.sampled_from(["*", "2", "1-3", "*/6", "0,2,12", "23", "0"])
days = st.sampled_from(["*", "1", "L", "15", "27-31", "LW", "*/10"])
months = st.sampled_from(["*", "3", "10", "3,10,11", "*/2", "NOV"])
weekdays = st.sampled_from(["*", "0", "MON-FRI", "5L", "SUN#1", "SAT,SUN"])


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = [draw(minutes), draw(hours), draw(days), draw(months), draw(weekdays)]
    if draw(st.booleans()):
        fields.insert(0, draw(seconds_field))
    return " ".join(fields)


zones = st.sampled_from(
    ["Europe/Berlin", "America/New_York", "UTC", "Australia/Lord_Howe", "America/Santiago"]
)
# Starts spread over 2030, and starts packed around the transition days.
transitions = [
    datetime(2030, 3, 31, 1, tzinfo=UTC),
    datetime(2030, 10, 27, 1, tzinfo=UTC),
    datetime(2030, 3, 10, 7, tzinfo=UTC),
    datetime(2030, 11, 3, 6, tzinfo=UTC),
]
near_transition = st.builds(
    lambda base, offset: base + timedelta(seconds=offset),
    st.sampled_from(transitions),
    st.integers(-3 * 3600, 3 * 3600),
)
anywhere = st.datetimes(
    min_value=datetime(2030, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(expression=expressions(), zone=zones, start=near_transition | anywhere)
def test_fire_times_increase_and_agree_with_cronsim(
    expression: str, zone: str, start: datetime
) -> None:
    # Some combinations never fire ('* * */10 NOV 5L': no 1st/11th/21st is a last
    # Friday); Cron rejects those, tested below.
    assume(next(CronSim(expression, datetime(2000, 1, 1)), None) is not None)
    cron = Cron(expression, zone)
    restarted: list[datetime] = []
    instant = cron.next_after(start)
    while instant is not None and len(restarted) < 12:
        restarted.append(instant)
        instant = cron.next_after(instant)
    assert restarted, "a valid expression fires within a few years"
    assert restarted[0] > start
    assert all(a < b for a, b in pairwise(restarted))
    assert all(t.tzinfo is UTC for t in restarted)
    # One lazy iterator gives the same as restarting after each fire.
    lazy = cron.fire_times(start)
    assert [next(lazy) for _ in restarted] == restarted
    # cronsim's own iteration, minus anything not after the last time kept.
    own: list[datetime] = []
    for local in CronSim(cron._evaluated, start.astimezone(ZoneInfo(zone))):
        t = local.astimezone(UTC)
        if t > (own[-1] if own else start):
            own.append(t)
        if len(own) == len(restarted):
            break
    assert own == restarted


@given(
    naive=st.datetimes(min_value=datetime(2030, 1, 1), max_value=datetime(2030, 12, 31)),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
)
def test_at_never_runs_before_the_wall_time_it_names(naive: datetime, zone: str) -> None:
    naive = naive.replace(fold=0)
    at = At(naive, zone)
    shown = at.instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    # The same wall time, or later by the gap it fell into (at most an hour here).
    assert timedelta(0) <= shown - naive <= timedelta(hours=1)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("60 * * * *", "minute field '60'"),
        ("* 24 * * *", "hour field '24'"),
        ("* * 0 * *", "day-of-month field '0'"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * 8", "day-of-week field '8'"),
        ("* * * * MON#6", "day-of-week field 'MON#6'"),
        ("61 * * * * *", "second field '61'"),
        ("0 0 30 2 *", "day-of-month field '30'"),  # February never has a 30th
        ("*/0 * * * *", "minute field '*/0'"),
        ("5-1 * * * *", "minute field '5-1'"),
    ],
)
def test_invalid_cron_names_the_field(expression: str, field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Cron(expression)
    assert f"bad {field}" in str(caught.value)


@pytest.mark.parametrize("expression", ["", "* * * *", "* * * * * * *", "@fortnightly"])
def test_wrong_number_of_cron_fields(expression: str) -> None:
    with pytest.raises(ConfigurationError, match="expected 5 fields"):
        Cron(expression)


def test_an_expression_that_never_fires_is_rejected() -> None:
    # Day fields starting with '*' must both match: no 1st, 11th or 21st is a last Friday.
    with pytest.raises(ConfigurationError, match="never fires"):
        Cron("0 0 */10 NOV 5L")
    assert Cron("0 0 29 2 *", "UTC").next_after(datetime(2030, 1, 1, tzinfo=UTC)) == datetime(
        2032, 2, 29, tzinfo=UTC
    )


def test_bad_trigger_arguments() -> None:
    with pytest.raises(ConfigurationError, match="must be a string"):
        Cron(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidTimezoneError):
        Cron("* * * * *", "Mars/Olympus_Mons")
    with pytest.raises(InvalidTimezoneError):
        At(datetime(2030, 1, 1), "Nowhere/Special")
    for not_a_datetime in (date(2030, 1, 1), "2030-01-01T09:00", 1_900_000_000):
        with pytest.raises(ConfigurationError, match="run_at must be a datetime"):
            At(not_a_datetime)  # type: ignore[arg-type]
    for seconds in (0, -1, math.nan, math.inf, True, "60"):
        with pytest.raises(ConfigurationError, match="interval"):
            Every(seconds)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="fixed must be True or False"):
        Every(1, fixed=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        Cron("* * * * *", "UTC").next_after(datetime(2030, 1, 1))
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        Cron("* * * * *", "UTC").next_after(datetime(2030, 1, 1, tzinfo=_NoOffset()))
    with pytest.raises(ConfigurationError, match="after must be a datetime"):
        Cron("* * * * *", "UTC").next_after("2030-01-01T00:00Z")  # type: ignore[arg-type]


def test_policy_validation() -> None:
    assert validate_jitter(0) == 0.0
    assert validate_jitter(2) == 2.0
    assert validate_misfire_grace(None) is None
    assert validate_misfire_grace(0) == 0.0
    assert validate_max_instances(2) == 2
    assert validate_max_instances(1) == 1
    assert RunPolicy() == RunPolicy(jitter=0.0, misfire_grace=None, coalesce=True, max_instances=1)
    assert validate_coalesce(False) is False
    for bad_jitter in (-0.1, math.nan, "1", None):
        with pytest.raises(ConfigurationError, match="jitter"):
            validate_jitter(bad_jitter)
    for bad_grace in (-1, math.inf, "5"):
        with pytest.raises(ConfigurationError, match="misfire_grace"):
            validate_misfire_grace(bad_grace)
    for bad_count in (0, -1, 1.5, True, None):
        with pytest.raises(ConfigurationError, match="max_instances"):
            validate_max_instances(bad_count)
    with pytest.raises(ConfigurationError, match="coalesce"):
        validate_coalesce(1)


class _NoOffset(tzinfo):
    """A tzinfo that knows no offset: a datetime carrying it is still naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


class _Unhashable(tzinfo):
    """A fixed UTC+1 zone that cannot be hashed (it defines __eq__ only)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "UTC+1"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Unhashable)

    __hash__ = None  # type: ignore[assignment]


def test_at_refuses_a_tzinfo_without_an_offset() -> None:
    with pytest.raises(ConfigurationError, match="gives no UTC offset"):
        At(datetime(2030, 1, 1, tzinfo=_NoOffset()))


def test_at_fires_once_and_reports_its_fields() -> None:
    instant = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
    at = At(instant)
    assert not at.repeats
    assert Cron("* * * * *").repeats and Every(1).repeats
    assert list(at.fire_times(instant - timedelta(seconds=1))) == [instant]
    assert list(at.fire_times(instant)) == []
    assert list(at.fire_times(instant + timedelta(seconds=1))) == []
    assert at.fields() == {"interval_seconds": None, "cron": None, "run_at": instant}
    timeline = at.timeline()
    early = Moment(0.0, instant - timedelta(seconds=30))
    assert timeline.start(early, 0.0) == Moment(30.0, instant)
    assert timeline.after_run(Moment(31.0, instant + timedelta(seconds=1))) is None
    late = Moment(0.0, instant + timedelta(hours=1))
    assert at.timeline().start(late, 0.0) == late  # already past: due at once


def test_cron_fields_and_timeline() -> None:
    cron = Cron("0 3 * * *", "UTC")
    assert cron.fields() == {"interval_seconds": None, "cron": "0 3 * * *", "run_at": None}
    now = Moment(0.0, datetime(2030, 1, 1, 2, 0, tzinfo=UTC))
    timeline = cron.timeline()
    assert timeline.start(now, 0.0) == Moment(3600.0, datetime(2030, 1, 1, 3, 0, tzinfo=UTC))
    assert timeline.upcoming(now) == Moment(3600.0, datetime(2030, 1, 1, 3, 0, tzinfo=UTC))


def test_cron_in_a_zone_that_cannot_be_hashed() -> None:
    odd = Cron("0 3 * * *", _Unhashable())
    plain = Cron("0 3 * * *", timezone(timedelta(hours=1)))
    start = datetime(2030, 1, 1, tzinfo=UTC)
    assert odd.next_after(start) == plain.next_after(start) == datetime(2030, 1, 1, 2, tzinfo=UTC)


def test_a_parser_error_of_another_kind_is_still_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(expression: str, start: datetime) -> object:
        raise ValueError("cronsim gave up")

    monkeypatch.setattr(_cron, "CronSim", broken)
    _cron._parse_text.cache_clear()  # parsed expressions are cached
    with pytest.raises(ConfigurationError, match="'1 2 3 4 5': cronsim gave up"):
        Cron("1 2 3 4 5")


def test_an_unknown_parser_message_is_passed_on() -> None:
    assert _cron._which_field("Something new", ["*"] * 5) == "Something new"
    assert _cron._which_field("Bad hour", ["1", "25", "*", "*", "*"]) == "bad hour field '25'"


# -- choosing and resolving a trigger -----------------------------------------------------


def test_choose_trigger_takes_exactly_one_way_of_saying_when() -> None:
    berlin = Cron("0 3 * * *", "Europe/Berlin")
    when = datetime(2030, 1, 1, 9, 0)
    assert choose_trigger(5, True, None, None, None) == Every(5)
    assert choose_trigger(5, False, None, None, None) == Every(5, fixed=False)
    assert choose_trigger(None, True, "0 3 * * *", None, None) == Cron("0 3 * * *")
    assert choose_trigger(None, True, None, when, None) == At(when)
    assert choose_trigger(None, True, None, None, berlin) is berlin
    with pytest.raises(ConfigurationError, match=r"exactly one .*\(given: none\)"):
        choose_trigger(None, True, None, None, None)
    with pytest.raises(ConfigurationError, match=r"\(given: interval, cron\)"):
        choose_trigger(5, True, "* * * * *", None, None)
    with pytest.raises(ConfigurationError, match=r"\(given: run_at, trigger\)"):
        choose_trigger(None, True, None, when, berlin)
    with pytest.raises(ConfigurationError, match="trigger must be"):
        choose_trigger(None, True, None, None, "daily")
    with pytest.raises(ConfigurationError, match="run_at must be a datetime"):
        choose_trigger(None, True, None, "2030-01-01", None)
    with pytest.raises(ConfigurationError, match="fixed_interval must be a bool"):
        choose_trigger(5, "yes", None, None, None)


def test_resolve_trigger_fills_in_the_zone() -> None:
    berlin, utc = ZoneInfo("Europe/Berlin"), timezone.utc
    # No zone of its own: the task's, else the scheduler's.
    assert resolve_trigger(Cron("0 3 * * *"), berlin, utc) == Cron("0 3 * * *", berlin)
    assert resolve_trigger(Cron("0 3 * * *"), None, berlin) == Cron("0 3 * * *", berlin)
    naive = datetime(2030, 1, 1, 9, 0)
    assert resolve_trigger(At(naive), None, berlin) == At(naive, berlin)
    # A zone of its own stands; the same zone again is no conflict.
    own = Cron("0 3 * * *", "America/New_York")
    assert resolve_trigger(own, None, berlin) is own
    assert resolve_trigger(own, ZoneInfo("America/New_York"), utc) is own
    plus_one = Cron("0 3 * * *", timezone(timedelta(hours=1)))
    assert resolve_trigger(plus_one, timezone(timedelta(hours=1)), utc) is plus_one
    # Elapsed time has no zone to conflict with.
    every = Every(5)
    assert resolve_trigger(every, berlin, utc) is every
    for zoned in (own, At(datetime(2030, 1, 1, tzinfo=utc), "America/New_York")):
        with pytest.raises(ConfigurationError, match="has a timezone of its own"):
            resolve_trigger(zoned, berlin, utc)


def test_task_zone() -> None:
    assert task_zone(None) is None
    assert task_zone("Europe/Berlin") == ZoneInfo("Europe/Berlin")
    assert task_zone("UTC") is timezone.utc
    with pytest.raises(InvalidTimezoneError):
        task_zone("Mars/Olympus")
