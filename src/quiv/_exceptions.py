"""The errors quiv raises.

Every error derives from :class:`QuivError`, so ``except QuivError`` catches
anything the library raises on purpose. Each class also derives from the
closest builtin, so code that already catches ``ValueError``, ``LookupError``
or ``RuntimeError`` keeps working::

    QuivError
    ├── ConfigurationError          (ValueError)   bad argument or option
    │   ├── InvalidTimezoneError                   unknown zone name
    │   └── HandlerRegistrationError               func or progress_callback unusable
    ├── TaskNotFoundError           (LookupError)  no task with that id
    │   └── HandlerNotRegisteredError              run_task_immediately on an unknown id
    ├── JobNotFoundError            (LookupError)  no job with that id
    ├── TaskNotScheduledError       (RuntimeError) run-once task already consumed
    ├── SchedulerStateError         (RuntimeError) call not possible in this state
    │   └── SchedulerClosedError                   the scheduler has shut down
    ├── JobCancelledError           (RuntimeError) a handler helper gave up: stop event set
    └── DatabaseInitializationError (RuntimeError) the history database cannot be created
"""

from __future__ import annotations

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


class QuivError(Exception):
    """Base class of every error quiv raises on purpose."""


class ConfigurationError(QuivError, ValueError):
    """Raised when an argument or option is invalid; nothing was changed."""


class InvalidTimezoneError(ConfigurationError):
    """Raised when ``timezone`` names no known IANA zone, or is a ``tzinfo`` that fails."""

    def __init__(self, timezone: object, failure: str | None = None) -> None:
        self.timezone = timezone
        if failure is not None:
            super().__init__(f"timezone {timezone!r} cannot convert a time: {failure}")
            return
        super().__init__(
            f"unknown timezone {timezone!r}: pass an IANA name such as 'Europe/Paris' "
            "or a datetime.tzinfo instance"
        )


class HandlerRegistrationError(ConfigurationError):
    """Raised by ``add_task`` when ``func`` or ``progress_callback`` cannot serve as one.

    A ``ConfigurationError``, so ``except ConfigurationError`` still catches it;
    the name is the one quiv 0.x raised for the same mistakes.
    """


class TaskNotFoundError(QuivError, LookupError):
    """Raised when no task has the given id (it was never added, or was removed)."""

    def __init__(self, task_id: object) -> None:
        self.task_id = task_id
        super().__init__(f"no task with id {task_id!r}")


class HandlerNotRegisteredError(TaskNotFoundError):
    """Raised by ``run_task_immediately`` when no handler is registered for the id."""

    def __init__(self, task_id: object) -> None:
        super().__init__(task_id)
        self.args = (f"no handler registered for task id {task_id!r}",)


class JobNotFoundError(QuivError, LookupError):
    """Raised when no job has the given id (never existed, or purged by retention)."""

    def __init__(self, job_id: object) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class TaskNotScheduledError(QuivError, RuntimeError):
    """Raised by ``run_task_immediately`` for a run-once task whose run already began."""

    def __init__(self, task_id: object) -> None:
        self.task_id = task_id
        super().__init__(
            f"task {task_id!r} is a run-once task whose single run has already started; "
            "add it again to run it once more"
        )


class SchedulerStateError(QuivError, RuntimeError):
    """Raised when a call cannot be served in the scheduler's current state or thread."""


class SchedulerClosedError(SchedulerStateError):
    """Raised when the scheduler is used after it has shut down."""

    def __init__(self) -> None:
        super().__init__(
            "this scheduler has shut down; create a new Quiv/AsyncQuiv instance to schedule again"
        )


class DatabaseInitializationError(QuivError, RuntimeError):
    """Raised when the history database cannot be created (directory, file or schema).

    The database is created on the first write, in the background, so no call
    raises this: the writer logs it and retries while scheduling goes on from
    memory. The name is the one quiv 0.x raised from its constructor.
    """


class JobCancelledError(QuivError, RuntimeError):
    """Raised in a handler by ``call_on_main`` or ``run_subprocess`` when the job's
    stop event is set; let it propagate and the job ends ``cancelled``."""
