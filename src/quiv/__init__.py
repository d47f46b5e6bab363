"""quiv: an asyncio-native, in-process task scheduler.

``AsyncQuiv`` runs on your event loop; ``Quiv`` is the same scheduler behind a
blocking API for scripts and sync code.
"""

# config, exceptions and models: quiv 0.x's public modules, kept for its users.
from . import config as config
from . import exceptions as exceptions
from . import models as models
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._clock import VirtualClock as VirtualClock
from ._config import QuivConfig as QuivConfig
from ._config import resolve_timezone as resolve_timezone
from ._core import AsyncQuiv as AsyncQuiv
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
from ._handlers import call_on_main as call_on_main
from ._handlers import run_subprocess as run_subprocess
from ._models import Event as Event
from ._models import Job as Job
from ._models import JobStatus as JobStatus
from ._models import Stats as Stats
from ._models import Task as Task
from ._models import TaskStatus as TaskStatus
from ._sync import Quiv as Quiv
from ._triggers import At as At
from ._triggers import Cron as Cron
from ._triggers import Every as Every
from ._version import __version__ as __version__

__all__ = [
    "AsyncQuiv",
    "At",
    "Clock",
    "ConfigurationError",
    "Cron",
    "DatabaseInitializationError",
    "Event",
    "Every",
    "HandlerNotRegisteredError",
    "HandlerRegistrationError",
    "InvalidTimezoneError",
    "Job",
    "JobCancelledError",
    "JobNotFoundError",
    "JobStatus",
    "Quiv",
    "QuivConfig",
    "QuivError",
    "SchedulerClosedError",
    "SchedulerStateError",
    "Stats",
    "SystemClock",
    "Task",
    "TaskNotFoundError",
    "TaskNotScheduledError",
    "TaskStatus",
    "VirtualClock",
    "__version__",
    "call_on_main",
    "resolve_timezone",
    "run_subprocess",
]

# Show the public home in reprs, tracebacks and generated docs.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and _name != "__version__":
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
