"""Scheduler options, validated once when they are given."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from numbers import Real
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._exceptions import ConfigurationError, InvalidTimezoneError

__all__ = ["DEFAULT_CONFIG", "QuivConfig", "resolve_config", "resolve_timezone"]


_UTC_NAMES = frozenset({"UTC", "Z", "GMT"})


def resolve_timezone(value: str | tzinfo) -> tzinfo:
    """Turn an IANA name or a ``tzinfo`` into a ``tzinfo``; raise ``InvalidTimezoneError``.

    ``"UTC"``, ``"Z"`` and ``"GMT"``, in any case, give ``datetime.timezone.utc``.
    """
    if isinstance(value, tzinfo):
        # Find a broken zone now, not in the middle of a later call that logs a time.
        try:
            sample = datetime.fromtimestamp(0, value)  # what displaying a time calls
            sample.isoformat()
            sample.tzname()
        except Exception as exc:
            raise InvalidTimezoneError(value, f"{type(exc).__name__}: {exc}") from exc
        return value
    if not isinstance(value, str) or not value.strip():
        raise InvalidTimezoneError(value)
    if value.strip().upper() in _UTC_NAMES:
        return timezone.utc
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidTimezoneError(value) from exc


@dataclass(frozen=True)
class QuivConfig:
    """Grouped scheduler options; pass as ``Quiv(config=...)`` or ``AsyncQuiv(config=...)``.

    Args:
        pool_size: how many jobs, sync and async together, may run at once.
        history_retention_seconds: how long finished job records are kept.
        timezone: IANA name or ``tzinfo``: the default zone of cron expressions and
            naive ``run_at`` times, and the zone of times in quiv's logs.

    Raises:
        ConfigurationError: if ``pool_size`` is not a positive int or the retention
            is negative or not finite.
        InvalidTimezoneError: if ``timezone`` is unknown.
    """

    pool_size: int = 10
    history_retention_seconds: float = 86400
    timezone: str | tzinfo = "UTC"
    tz: tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        size: object = self.pool_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"pool_size must be an int of at least 1, got {size!r}")
        keep: object = self.history_retention_seconds
        if isinstance(keep, bool) or not isinstance(keep, Real):
            seconds = math.nan
        else:
            try:
                seconds = float(keep)
            except Exception:  # too large for a float, or a broken __float__
                seconds = math.inf
        if not 0 <= seconds < math.inf:
            raise ConfigurationError(
                f"history_retention_seconds must be a finite number >= 0, got {keep!r}"
            )
        object.__setattr__(self, "tz", resolve_timezone(self.timezone))


DEFAULT_CONFIG = QuivConfig()


def resolve_config(
    config: QuivConfig | None,
    pool_size: int,
    history_retention_seconds: float,
    timezone: str | tzinfo,
) -> QuivConfig:
    """Merge the constructor's two ways of giving options, refusing a mix of both.

    Explicit values equal to the defaults count as "not given", since the
    signature cannot tell them apart.
    """
    if config is None:
        return QuivConfig(pool_size, history_retention_seconds, timezone)
    if not isinstance(config, QuivConfig):
        raise ConfigurationError(f"config must be a QuivConfig, got {type(config).__name__}")
    explicit = [
        name
        for name, value, default in (
            ("pool_size", pool_size, DEFAULT_CONFIG.pool_size),
            (
                "history_retention_seconds",
                history_retention_seconds,
                DEFAULT_CONFIG.history_retention_seconds,
            ),
            ("timezone", timezone, DEFAULT_CONFIG.timezone),
        )
        if value != default
    ]
    if explicit:
        raise ConfigurationError(
            f"pass either config or explicit options, not both (also given: {', '.join(explicit)})"
        )
    return config
