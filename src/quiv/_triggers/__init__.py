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
from ._base import Moment as Moment
from ._base import Timeline as Timeline
from ._base import Trigger as Trigger
from ._base import zone_name as zone_name
from ._choose import choose_trigger as choose_trigger
from ._choose import resolve_trigger as resolve_trigger
from ._choose import task_zone as task_zone
from ._cron import Cron as Cron
from ._every import Every as Every
from ._policies import Overdue as Overdue
from ._policies import RunPolicy as RunPolicy
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
    "Moment",
    "Overdue",
    "RunPolicy",
    "Timeline",
    "Trigger",
    "choose_trigger",
    "is_missed",
    "jitter_delay",
    "resolve_trigger",
    "settle_overdue",
    "task_zone",
    "validate_coalesce",
    "validate_jitter",
    "validate_max_instances",
    "validate_misfire_grace",
    "zone_name",
]
