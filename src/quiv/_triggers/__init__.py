"""Triggers: when a task's runs are due, as immutable values.

Three kinds, each validated when it is built:

* :class:`Every` measures elapsed time on the monotonic clock (the seed's
  ``interval``), on a fixed cadence or relative to the end of each run.
* :class:`Cron` and :class:`At` are wall-clock instants computed from a zone's
  rules, so a daylight-saving change or a wall-clock jump moves them as a
  calendar would.

The arithmetic is pure: every method takes the time it needs as an argument
and none reads a clock, so each rule is testable on its own.
:mod:`._policies` holds the run policies (jitter, misfire grace, coalescing)
that apply to any trigger.
"""

from ._at import At as At
from ._base import Trigger as Trigger
from ._base import zone_name as zone_name
from ._cron import Cron as Cron
from ._every import Every as Every
from ._policies import Overdue as Overdue
from ._policies import is_missed as is_missed
from ._policies import jitter_delay as jitter_delay
from ._policies import settle_overdue as settle_overdue
from ._policies import validate_coalesce as validate_coalesce
from ._policies import validate_jitter as validate_jitter
from ._policies import validate_max_instances as validate_max_instances
from ._policies import validate_misfire_grace as validate_misfire_grace

__all__ = [
    "At",
    "Cron",
    "Every",
    "Overdue",
    "Trigger",
    "is_missed",
    "jitter_delay",
    "settle_overdue",
    "validate_coalesce",
    "validate_jitter",
    "validate_max_instances",
    "validate_misfire_grace",
    "zone_name",
]
