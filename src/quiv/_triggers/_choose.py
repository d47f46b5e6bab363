"""From ``add_task``'s arguments to one trigger: exactly one way of saying when."""

from __future__ import annotations

from datetime import tzinfo

from quiv._exceptions import ConfigurationError

from ._at import At
from ._base import Trigger, optional_zone
from ._cron import Cron
from ._every import Every

__all__ = ["choose_trigger", "resolve_trigger"]


def choose_trigger(
    interval: object,
    fixed_interval: object,
    cron: object,
    run_at: object,
    trigger: object,
) -> Trigger:
    """The trigger that ``interval``, ``cron``, ``run_at`` or ``trigger=`` names.

    Raises:
        ConfigurationError: unless exactly one of them is given, or if it is invalid.
    """
    if (interval is None) + (cron is None) + (run_at is None) + (trigger is None) != 3:
        named = (("interval", interval), ("cron", cron), ("run_at", run_at), ("trigger", trigger))
        given = [name for name, value in named if value is not None]
        which = ", ".join(given) if given else "none"
        raise ConfigurationError(
            f"give exactly one of interval, cron, run_at or trigger (given: {which})"
        )
    if trigger is not None:
        if not isinstance(trigger, Trigger):
            raise ConfigurationError(
                f"trigger must be quiv.Every, quiv.Cron or quiv.At, got {trigger!r}"
            )
        return trigger
    if cron is not None:
        return Cron(cron)  # type: ignore[arg-type]  # validated by Cron
    if run_at is not None:
        return At(run_at)  # type: ignore[arg-type]  # validated by At
    if not isinstance(fixed_interval, bool):
        raise ConfigurationError(f"fixed_interval must be a bool, got {fixed_interval!r}")
    return Every(interval, fixed_interval)  # type: ignore[arg-type]  # validated by Every


def resolve_trigger(trigger: Trigger, timezone: tzinfo | None, default: tzinfo) -> Trigger:
    """``trigger`` with its zone filled in: the task's ``timezone``, else the scheduler's.

    Raises:
        ConfigurationError: if the trigger names a zone of its own and ``timezone`` is given too.
    """
    if timezone is not None and trigger.wall_clock and not trigger.needs_zone:
        own = getattr(trigger, "timezone", None)
        if own is not None and own is not timezone and own != timezone:
            raise ConfigurationError(
                f"{trigger!r} has a timezone of its own; do not pass timezone= as well"
            )
    return trigger.with_default_zone(timezone if timezone is not None else default)


def task_zone(value: object) -> tzinfo | None:
    """``add_task``'s ``timezone``: ``None`` (the scheduler's) or a resolved zone."""
    return optional_zone(value)  # type: ignore[arg-type]  # InvalidTimezoneError if bad
