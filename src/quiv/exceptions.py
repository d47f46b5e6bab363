"""The errors quiv raises, at the import path quiv 0.x used (``quiv.exceptions``).

Every name here is also importable from ``quiv`` itself.
"""

from ._exceptions import ConfigurationError as ConfigurationError
from ._exceptions import DatabaseInitializationError as DatabaseInitializationError
from ._exceptions import HandlerNotRegisteredError as HandlerNotRegisteredError
from ._exceptions import HandlerRegistrationError as HandlerRegistrationError
from ._exceptions import InvalidTimezoneError as InvalidTimezoneError
from ._exceptions import JobCancelledError as JobCancelledError
from ._exceptions import JobNotFoundError as JobNotFoundError
from ._exceptions import QuivError as QuivError
from ._exceptions import SchedulerClosedError as SchedulerClosedError
from ._exceptions import SchedulerStateError as SchedulerStateError
from ._exceptions import TaskNotFoundError as TaskNotFoundError
from ._exceptions import TaskNotScheduledError as TaskNotScheduledError

__all__ = [
    "ConfigurationError",
    "DatabaseInitializationError",
    "HandlerNotRegisteredError",
    "HandlerRegistrationError",
    "InvalidTimezoneError",
    "JobCancelledError",
    "JobNotFoundError",
    "QuivError",
    "SchedulerClosedError",
    "SchedulerStateError",
    "TaskNotFoundError",
    "TaskNotScheduledError",
]
