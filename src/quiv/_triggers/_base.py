"""What every trigger shares, and the zone helpers the wall-clock kinds use."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from datetime import datetime, timezone, tzinfo
from typing import ClassVar

from quiv._config import resolve_timezone
from quiv._exceptions import ConfigurationError

if sys.version_info >= (3, 11):
    from typing import Self
else:
    from typing_extensions import Self

__all__ = ["Trigger", "optional_zone", "require_aware", "zone_name"]

UTC = timezone.utc


class Trigger(ABC):
    """A rule saying when a task's runs are due; immutable, validated when built.

    ``wall_clock`` tells the scheduler which clock the rule speaks: monotonic
    seconds (:class:`Every`) or aware UTC datetimes (:class:`Cron`, :class:`At`).
    """

    wall_clock: ClassVar[bool]

    @abstractmethod
    def describe(self) -> str:
        """The readable form shown as ``Task.trigger``."""

    @property
    def needs_zone(self) -> bool:
        """True while the rule still waits for the scheduler's zone to mean anything."""
        return False

    def with_default_zone(self, zone: str | tzinfo) -> Self:
        """This trigger, with ``zone`` filled in where no zone was given (else unchanged).

        Raises:
            InvalidTimezoneError: if ``zone`` is unknown.
        """
        return self

    def __str__(self) -> str:
        return self.describe()


def optional_zone(value: str | tzinfo | None) -> tzinfo | None:
    """Resolve an IANA name or ``tzinfo``; ``None`` stays ``None`` (the scheduler's zone)."""
    return None if value is None else resolve_timezone(value)


def zone_name(zone: tzinfo) -> str:
    """The name to show for ``zone``: the IANA key when it has one."""
    key = getattr(zone, "key", None)
    return key if isinstance(key, str) else str(zone)


def require_aware(value: object, what: str) -> datetime:
    """``value`` as an aware datetime, or ``ConfigurationError`` naming ``what``."""
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be timezone-aware, got {value!r}")
    return value
