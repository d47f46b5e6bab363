"""Property tests for the pure schedule arithmetic."""

from __future__ import annotations

import math
import numbers
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quiv import ConfigurationError
from quiv._schedule import (
    MAX_SECONDS,
    MIN_INTERVAL,
    next_fixed_slot,
    next_relative_run,
    skipped_slots,
    validate_delay,
    validate_interval,
)

intervals = st.floats(min_value=0.001, max_value=86_400, allow_nan=False)
anchors = st.floats(min_value=0, max_value=1e6, allow_nan=False)
MAX_FLOAT = sys.float_info.max


def _earliest_slot(anchor: float, interval: float, k: int, now: float) -> float:
    """The oracle: the first slot after slot ``k`` not in the past, by plain search."""
    j = k + 1
    while anchor + j * interval < now:
        j += 1
    return anchor + j * interval


overruns = st.integers(0, 50).map(float) | st.floats(0, 50)


@given(anchor=anchors, interval=intervals, k=st.integers(0, 10_000), overrun=overruns)
def test_fixed_slot_is_exactly_the_earliest_slot_ahead(
    anchor: float, interval: float, k: int, overrun: float
) -> None:
    previous = anchor + k * interval
    now = previous + overrun * interval
    assert next_fixed_slot(anchor, interval, previous, now) == _earliest_slot(
        anchor, interval, k, now
    )


@pytest.mark.parametrize(
    ("anchor", "interval", "previous", "now", "expected"),
    [
        (0.0, 10.0, 10.0, 20.0, 20.0),  # ends exactly on a slot: that slot, not the one after
        (0.0, 10.0, 10.0, 10.0, 20.0),  # ends at once: the very next slot
        (0.0, 10.0, 10.0, 20.5, 30.0),
        (5.0, 10.0, 5.0, 5.0, 15.0),  # the first run, on the anchor
        (0.0, 0.1, 0.3, 0.6, 0.6000000000000001),  # 0.6 / 0.1 rounds above 6
        (0.0, 0.1, 0.2, 0.3, 0.30000000000000004),  # 0.3 / 0.1 rounds above 3
    ],
)
def test_fixed_slot_examples(
    anchor: float, interval: float, previous: float, now: float, expected: float
) -> None:
    assert next_fixed_slot(anchor, interval, previous, now) == expected


@pytest.mark.parametrize(
    ("anchor", "interval", "now", "first_guess"),
    [
        # Found by search: the division rounds above a whole number of slots...
        (767157.6291479621, 0.3, 770063.4291479621, "one late"),
        (861008.8608533249, 0.1, 861145.2608533249, "one late"),
        (5102.779372744837, 48.242737566559754, 79058.89606228094, "one late, ahead of now"),
        # ...or below one, to a whole number or just under it.
        (0.0, 0.1, 247.50000000000003, "one early"),
        (204968.21281119372, 94.18018059883698, 885985.098721384, "one early"),
    ],
)
def test_fixed_slot_corrects_the_rounding_of_its_first_guess(
    anchor: float, interval: float, now: float, first_guess: str
) -> None:
    guess = math.ceil((now - anchor) / interval)
    if first_guess.startswith("one late"):
        assert anchor + (guess - 1) * interval >= now
    else:
        assert anchor + guess * interval < now
    assert next_fixed_slot(anchor, interval, anchor, now) == _earliest_slot(
        anchor, interval, 0, now
    )


finite = st.floats(allow_nan=False, allow_infinity=False)
any_interval = st.floats(min_value=MIN_INTERVAL, max_value=MAX_SECONDS)


@given(anchor=finite, interval=any_interval, previous=finite, now=finite)
def test_fixed_slot_is_total(anchor: float, interval: float, previous: float, now: float) -> None:
    """Any finite times, any accepted interval: a finite time not in the past, no error."""
    slot = next_fixed_slot(anchor, interval, previous, now)
    assert math.isfinite(slot)
    assert slot >= now


@pytest.mark.parametrize(
    ("anchor", "interval", "previous", "now"),
    [
        (-1e308, 1.0, 0.0, 1e308),  # the distance overflows
        (0.0, MIN_INTERVAL, 1e300, 1e300),  # floats too coarse to step one slot
        (-MAX_FLOAT / 2, 3e9, -MAX_FLOAT / 2, MAX_FLOAT / 2),  # the slot itself overflows
    ],
)
def test_fixed_slot_falls_back_to_now_where_floats_give_out(
    anchor: float, interval: float, previous: float, now: float
) -> None:
    assert next_fixed_slot(anchor, interval, previous, now) == now


@given(interval=any_interval, previous=finite, upcoming=finite)
def test_skipped_slots_is_total(interval: float, previous: float, upcoming: float) -> None:
    assert skipped_slots(interval, previous, upcoming) >= 0


def test_skipped_slots_counts_the_slots_strictly_between() -> None:
    assert skipped_slots(10.0, 10.0, 20.0) == 0
    assert skipped_slots(10.0, 10.0, 50.0) == 3
    assert skipped_slots(10.0, 10.0, 10.0) == 0
    assert skipped_slots(1.0, -MAX_FLOAT, MAX_FLOAT) == 0  # the gap overflows


@given(anchor=anchors, interval=intervals, k=st.integers(0, 10_000), early=st.floats(0, 0.999))
def test_a_run_that_ends_early_keeps_the_very_next_slot(
    anchor: float, interval: float, k: int, early: float
) -> None:
    previous = anchor + k * interval
    now = previous + early * interval
    expected = anchor + (k + 1) * interval
    assert math.isclose(next_fixed_slot(anchor, interval, previous, now), expected, rel_tol=1e-12)


def test_overrun_skips_missed_slots_and_counts_them() -> None:
    # Slots at 0, 10, 20, 30...; the run of slot 10 ended at 34.
    upcoming = next_fixed_slot(0.0, 10.0, 10.0, 34.0)
    assert upcoming == 40.0
    assert skipped_slots(10.0, 10.0, upcoming) == 2  # 20 and 30 were skipped


def test_dispatch_delay_does_not_accumulate() -> None:
    # Each run starts 3 ms late and ends 5 ms later; targets never drift.
    anchor, interval, slot = 100.0, 1.0, 100.0
    for _ in range(1000):
        slot = next_fixed_slot(anchor, interval, slot, slot + 0.008)
    assert slot == pytest.approx(1100.0, abs=1e-9)


@given(finished=anchors, interval=intervals)
def test_relative_run_is_measured_from_the_end(finished: float, interval: float) -> None:
    assert next_relative_run(finished, interval) == finished + interval


@pytest.mark.parametrize(
    "value", [0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "5", None, 1j]
)
def test_invalid_intervals_are_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="interval"):
        validate_interval(value)


@pytest.mark.parametrize("value", [-1, -0.001, math.nan, math.inf, True, "0", None])
def test_invalid_delays_are_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="delay"):
        validate_delay(value)


@given(st.floats(min_value=0.0, max_value=1e9) | st.integers(0, 10**9))
def test_valid_delays_pass_through_as_float(value: float) -> None:
    assert validate_delay(value) == float(value)


def test_the_bounds_are_a_millisecond_and_a_century() -> None:
    assert MIN_INTERVAL == 0.001
    assert MAX_SECONDS == 3_155_760_000  # 100 x 365.25 days


def test_interval_bounds_are_inclusive() -> None:
    assert validate_interval(MIN_INTERVAL) == MIN_INTERVAL
    assert validate_interval(MAX_SECONDS) == MAX_SECONDS
    assert validate_interval(3_155_760_000) == MAX_SECONDS
    with pytest.raises(ConfigurationError, match=r"at least 0\.001 s \(1 ms\)"):
        validate_interval(math.nextafter(MIN_INTERVAL, 0))
    with pytest.raises(ConfigurationError, match=r"at most 3155760000 s \(100 years\)"):
        validate_interval(math.nextafter(MAX_SECONDS, math.inf))
    with pytest.raises(ConfigurationError, match="at most"):
        validate_interval(3_155_760_001)


def test_delay_bounds_are_inclusive() -> None:
    assert validate_delay(0) == 0.0
    assert validate_delay(MAX_SECONDS) == MAX_SECONDS
    with pytest.raises(ConfigurationError, match=r"delay must be at most 3155760000 s"):
        validate_delay(math.nextafter(MAX_SECONDS, math.inf))
    with pytest.raises(ConfigurationError, match="delay must be 0 or more"):
        validate_delay(-5e-324)
    with pytest.raises(ConfigurationError, match="at most"):
        validate_delay(-MAX_SECONDS * 2)  # too large either way: the size check comes first


@pytest.mark.parametrize("check", [validate_interval, validate_delay])
def test_numbers_beyond_float_range_are_refused_not_read_as_zero(check: Any) -> None:
    with pytest.raises(ConfigurationError, match="must be finite, got 1000"):
        check(10**400)
    with pytest.raises(ConfigurationError, match="must be finite"):
        check(Fraction(10**400))


class BrokenReal:
    """A ``numbers.Real`` whose conversion to float fails."""

    def __float__(self) -> float:
        raise ArithmeticError("cannot")


numbers.Real.register(BrokenReal)


@pytest.mark.parametrize("check", [validate_interval, validate_delay])
def test_a_real_that_will_not_convert_is_a_configuration_error(check: Any) -> None:
    with pytest.raises(ConfigurationError, match="must convert to a float") as caught:
        check(BrokenReal())
    assert isinstance(caught.value.__cause__, ArithmeticError)


def test_other_reals_are_read_as_seconds() -> None:
    assert validate_delay(Fraction(1, 4)) == 0.25
    assert validate_interval(Fraction(1, 4)) == 0.25


def test_decimal_is_refused_as_it_is_no_numbers_real() -> None:
    with pytest.raises(ConfigurationError, match="number of seconds"):
        validate_delay(Decimal("0.25"))
