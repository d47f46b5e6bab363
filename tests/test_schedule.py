"""Property tests for the pure schedule arithmetic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quiv import ConfigurationError
from quiv._schedule import (
    next_fixed_slot,
    next_relative_run,
    skipped_slots,
    validate_delay,
    validate_interval,
)

intervals = st.floats(min_value=0.001, max_value=86_400, allow_nan=False)
anchors = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(anchor=anchors, interval=intervals, k=st.integers(0, 10_000), overrun=st.floats(0, 50))
def test_fixed_slot_stays_on_the_cadence(
    anchor: float, interval: float, k: int, overrun: float
) -> None:
    previous = anchor + k * interval
    now = previous + overrun * interval
    slot = next_fixed_slot(anchor, interval, previous, now)
    steps = (slot - anchor) / interval
    assert math.isclose(steps, round(steps), abs_tol=1e-6 * max(1.0, steps))
    assert slot > previous
    assert slot >= now
    # It is the first such slot: one interval earlier is either not after the
    # previous run or already in the past (to within float rounding).
    earlier = slot - interval
    eps = 1e-9 * max(1.0, abs(now))
    assert earlier <= previous + eps or earlier < now + eps


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
