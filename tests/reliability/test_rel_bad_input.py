"""Bad input is refused with a typed error, and refusing it changes nothing.

Every case runs against a fresh, running scheduler holding two tasks (one
paused) that are not due for an hour. The case must raise the expected
``QuivError`` subclass, and afterwards the tasks (``get_all_tasks(
include_run_once=True)``), the jobs and the listeners must be exactly as before.
Each case is run on ``AsyncQuiv`` and on the ``Quiv`` facade.
"""

from __future__ import annotations

import gc
import math
import numbers
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import datetime, timedelta, tzinfo
from typing import Any, NoReturn

import pytest
from rel_support import DEADLINE, EventLog, eventually, noop, wait_until

from quiv import (
    AsyncQuiv,
    ConfigurationError,
    Event,
    HandlerNotRegisteredError,
    InvalidTimezoneError,
    JobNotFoundError,
    Quiv,
    QuivConfig,
    QuivError,
    TaskNotFoundError,
)

UNKNOWN_ID = str(uuid.UUID(int=0))
NAN, INF = math.nan, math.inf


def _explode() -> NoReturn:
    raise RuntimeError("this object cannot be rebuilt")


class PicklesButNeverLoads:
    """Pickling succeeds; unpickling raises. Accepting it poisons every later read."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_explode, ())


class _Placeholder:
    """Stands for a value only known at run time (an id, an open file)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


ACTIVE = _Placeholder("active task id")
PAUSED = _Placeholder("paused task id")
REMOVED = _Placeholder("removed task id")
OPEN_FILE = _Placeholder("open file")


class BrokenReal:
    """Registered as a ``numbers.Real`` but cannot become a float (a buggy numeric type)."""

    def __float__(self) -> float:
        raise TypeError("no float for you")

    def __repr__(self) -> str:
        return "BrokenReal()"


numbers.Real.register(BrokenReal)


class UninspectableHandler:
    """Callable, but any attribute lookup fails with more than ``AttributeError``."""

    def __call__(self) -> None:  # pragma: no cover - never runs
        pass

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")

    def __repr__(self) -> str:
        return "UninspectableHandler()"


def sync_generator_handler() -> Iterator[None]:  # pragma: no cover - body never runs
    yield


class BrokenZone(tzinfo):
    """A ``tzinfo`` whose every answer fails."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset")

    def tzname(self, dt: datetime | None) -> str:
        raise RuntimeError("no name")

    def dst(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no dst")


def case(method: str, *args: Any, error: type[QuivError], id: str, **kwargs: Any) -> Any:
    return pytest.param(method, args, kwargs, error, id=id)


ADD = ("t", noop, 60)  # task_name, func, interval

CASES = [
    # -- add_task: names, functions and numbers
    case("add_task", "", noop, 60, error=ConfigurationError, id="add-empty-name"),
    case("add_task", "   ", noop, 60, error=ConfigurationError, id="add-blank-name"),
    case("add_task", None, noop, 60, error=ConfigurationError, id="add-None-name"),
    case("add_task", 5, noop, 60, error=ConfigurationError, id="add-int-name"),
    case("add_task", "t", None, 60, error=ConfigurationError, id="add-None-func"),
    case("add_task", "t", 5, 60, error=ConfigurationError, id="add-int-func"),
    case("add_task", "t", "noop", 60, error=ConfigurationError, id="add-str-func"),
    case("add_task", "t", noop, NAN, error=ConfigurationError, id="interval-nan"),
    case("add_task", "t", noop, INF, error=ConfigurationError, id="interval-inf"),
    case("add_task", "t", noop, -INF, error=ConfigurationError, id="interval-minus-inf"),
    case("add_task", "t", noop, 0, error=ConfigurationError, id="interval-zero"),
    case("add_task", "t", noop, -1, error=ConfigurationError, id="interval-negative"),
    case("add_task", "t", noop, True, error=ConfigurationError, id="interval-True"),
    case("add_task", "t", noop, False, error=ConfigurationError, id="interval-False"),
    case("add_task", "t", noop, "60", error=ConfigurationError, id="interval-str"),
    case("add_task", "t", noop, None, error=ConfigurationError, id="interval-None"),
    case("add_task", "t", noop, 0.000999, error=ConfigurationError, id="interval-below-1ms"),
    case("add_task", "t", noop, 1e-300, error=ConfigurationError, id="interval-1e-300"),
    case("add_task", "t", noop, 5e-324, error=ConfigurationError, id="interval-5e-324"),
    case("add_task", "t", noop, 10**400, error=ConfigurationError, id="interval-10**400"),
    case("add_task", "t", noop, BrokenReal(), error=ConfigurationError, id="interval-BrokenReal"),
    case("add_task", *ADD, delay=10**400, error=ConfigurationError, id="delay-10**400"),
    case("add_task", *ADD, delay=BrokenReal(), error=ConfigurationError, id="delay-BrokenReal"),
    case("add_task", "t", sync_generator_handler, 60, error=ConfigurationError, id="add-gen-func"),
    case("add_task", "t", UninspectableHandler(), 60, error=ConfigurationError, id="add-odd-func"),
    case("add_task", *ADD, delay=NAN, error=ConfigurationError, id="delay-nan"),
    case("add_task", *ADD, delay=INF, error=ConfigurationError, id="delay-inf"),
    case("add_task", *ADD, delay=-1, error=ConfigurationError, id="delay-negative"),
    case("add_task", *ADD, delay=True, error=ConfigurationError, id="delay-True"),
    case("add_task", *ADD, delay="0", error=ConfigurationError, id="delay-str"),
    case("add_task", *ADD, delay=None, error=ConfigurationError, id="delay-None"),
    case("add_task", *ADD, run_once="yes", error=ConfigurationError, id="run_once-str"),
    case("add_task", *ADD, run_once=1, error=ConfigurationError, id="run_once-int"),
    case("add_task", *ADD, fixed_interval=0, error=ConfigurationError, id="fixed-int"),
    case("add_task", *ADD, fixed_interval="no", error=ConfigurationError, id="fixed-str"),
    # -- add_task: arguments
    case("add_task", *ADD, args=[1, 2], error=ConfigurationError, id="args-list"),
    case("add_task", *ADD, args="ab", error=ConfigurationError, id="args-str"),
    case("add_task", *ADD, args=(lambda: 1,), error=ConfigurationError, id="args-lambda"),
    case("add_task", *ADD, args=(OPEN_FILE,), error=ConfigurationError, id="args-open-file"),
    case("add_task", *ADD, args=(threading.Lock(),), error=ConfigurationError, id="args-lock"),
    case("add_task", *ADD, kwargs={"_job_id": "x"}, error=ConfigurationError, id="kw-_job_id"),
    case(
        "add_task",
        *ADD,
        kwargs={"_stop_event": threading.Event()},
        error=ConfigurationError,
        id="kw-_stop_event",
    ),
    case(
        "add_task", *ADD, kwargs={"_progress_hook": noop}, error=ConfigurationError, id="kw-_hook"
    ),
    case("add_task", *ADD, kwargs={1: "x"}, error=ConfigurationError, id="kw-int-key"),
    case("add_task", *ADD, kwargs=[("a", 1)], error=ConfigurationError, id="kw-list"),
    case("add_task", *ADD, kwargs={"f": lambda: 1}, error=ConfigurationError, id="kw-lambda"),
    case("add_task", *ADD, kwargs={"f": OPEN_FILE}, error=ConfigurationError, id="kw-open-file"),
    case("add_task", *ADD, progress_callback=5, error=ConfigurationError, id="progress-int"),
    case("add_task", *ADD, progress_callback="cb", error=ConfigurationError, id="progress-str"),
    # -- unknown ids
    case("get_task", UNKNOWN_ID, error=TaskNotFoundError, id="get_task-unknown"),
    case("pause_task", UNKNOWN_ID, error=TaskNotFoundError, id="pause-unknown"),
    case("resume_task", UNKNOWN_ID, error=TaskNotFoundError, id="resume-unknown"),
    case("remove_task", UNKNOWN_ID, error=TaskNotFoundError, id="remove-unknown"),
    case("run_task_immediately", UNKNOWN_ID, error=HandlerNotRegisteredError, id="run-unknown"),
    case("get_job", UNKNOWN_ID, error=JobNotFoundError, id="get_job-unknown"),
    case("get_job", ACTIVE, error=JobNotFoundError, id="get_job-with-task-id"),
    case("get_task", REMOVED, error=TaskNotFoundError, id="get_task-removed"),
    case("pause_task", REMOVED, error=TaskNotFoundError, id="pause-removed"),
    case("resume_task", REMOVED, error=TaskNotFoundError, id="resume-removed"),
    case("remove_task", REMOVED, error=TaskNotFoundError, id="remove-removed"),
    case("run_task_immediately", REMOVED, error=HandlerNotRegisteredError, id="run-removed"),
    # -- ids of the wrong type
    *[
        case(method, bad, error=ConfigurationError, id=f"{method}-{label}")
        for method in (
            "get_task",
            "pause_task",
            "resume_task",
            "remove_task",
            "run_task_immediately",
            "get_job",
            "cancel_job",
        )
        for label, bad in (
            ("int", 5),
            ("None", None),
            ("bytes", UNKNOWN_ID.encode()),
            ("UUID", uuid.UUID(int=0)),
        )
    ],
    # -- resume delays
    case("resume_task", PAUSED, NAN, error=ConfigurationError, id="resume-delay-nan"),
    case("resume_task", PAUSED, INF, error=ConfigurationError, id="resume-delay-inf"),
    case("resume_task", PAUSED, -1, error=ConfigurationError, id="resume-delay-negative"),
    case("resume_task", PAUSED, True, error=ConfigurationError, id="resume-delay-True"),
    case("resume_task", PAUSED, "5", error=ConfigurationError, id="resume-delay-str"),
    case("resume_task", ACTIVE, NAN, error=ConfigurationError, id="resume-active-delay-nan"),
    case("resume_task", PAUSED, 10**400, error=ConfigurationError, id="resume-delay-10**400"),
    case("resume_task", PAUSED, BrokenReal(), error=ConfigurationError, id="resume-BrokenReal"),
    # -- job status filters
    case("get_all_jobs", "bogus", error=ConfigurationError, id="jobs-status-unknown"),
    case("get_all_jobs", 5, error=ConfigurationError, id="jobs-status-int"),
    # -- history filters (issue 11)
    *[
        case("get_all_jobs", error=ConfigurationError, id=f"jobs-{name}-{label}", **{name: bad})
        for name, label, bad in (
            ("task_id", "int", 5),
            ("since", "naive", datetime(2030, 1, 1)),
            ("since", "str", "2030-01-01"),
            ("until", "naive", datetime(2030, 1, 1)),
            ("limit", "negative", -1),
            ("limit", "str", "5"),
            ("limit", "True", True),
            ("limit", "float", 2.0),
            ("offset", "negative", -1),
            ("offset", "None", None),
            ("newest_first", "str", "yes"),
        )
    ],
    case("get_all_tasks", task_name=5, error=ConfigurationError, id="tasks-task_name-int"),
    # -- job policies (issue 11): add_task and update_task
    *[
        case(method, *args, error=ConfigurationError, id=f"{method}-{name}-{label}", **{name: bad})
        for method, args in (("add_task", ADD), ("update_task", (ACTIVE,)))
        for name, label, bad in (
            ("max_retries", "str", "2"),
            ("max_retries", "negative", -1),
            ("max_retries", "True", True),
            ("max_retries", "float", 2.0),
            ("max_retries", "None", None),
            ("retry_backoff", "negative", -1),
            ("retry_backoff", "nan", NAN),
            ("retry_backoff", "inf", INF),
            ("retry_backoff", "str", "1"),
            ("retry_backoff", "None", None),
            ("retry_backoff_max", "negative", -0.5),
            ("retry_backoff_max", "nan", NAN),
            ("retry_backoff_max", "inf", INF),
            ("retry_backoff_max", "True", True),
            ("timeout", "zero", 0),
            ("timeout", "negative", -1),
            ("timeout", "nan", NAN),
            ("timeout", "inf", INF),
            ("timeout", "str", "5"),
            ("timeout", "10**400", 10**400),
            ("timeout", "BrokenReal", BrokenReal()),
        )
    ],
    # -- force and waiting (issue 11)
    case("cancel_job", UNKNOWN_ID, force="yes", error=ConfigurationError, id="cancel-force-str"),
    case("cancel_job", UNKNOWN_ID, force=1, error=ConfigurationError, id="cancel-force-int"),
    *[
        case(method, ident, bad, error=ConfigurationError, id=f"{method}-timeout-{label}")
        for method, ident in (("wait_for_job", UNKNOWN_ID), ("wait_for_task", ACTIVE))
        for label, bad in (("negative", -1), ("nan", NAN), ("str", "1"), ("True", True))
    ],
    # -- listeners
    case("add_listener", "job_started", noop, error=ConfigurationError, id="listener-str-key"),
    case("add_listener", None, noop, error=ConfigurationError, id="listener-None-key"),
    case("add_listener", 5, noop, error=ConfigurationError, id="listener-int-key"),
    case("add_listener", Event.JOB_STARTED, None, error=ConfigurationError, id="listener-None"),
    case("add_listener", Event.JOB_STARTED, 5, error=ConfigurationError, id="listener-int"),
    case("remove_listener", "job_started", noop, error=ConfigurationError, id="rm-listener-str"),
]


@pytest.fixture
def collect_garbage() -> Iterator[None]:
    """Collect after the test, so resources a crashed scheduler left unclosed are
    reported against this test and not against whichever test happens to run next."""
    yield
    gc.collect()


class Env:
    """A running scheduler shared by the cases: two idle tasks (one paused), a removed id."""

    def __init__(self, scheduler: Any, log: EventLog, active: str, paused: str, removed: str):
        self.scheduler, self.log = scheduler, log
        self.active, self.paused, self.removed = active, paused, removed
        self.file = open(os.devnull)  # noqa: SIM115 - closed by the fixture

    def resolve(self, value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(self.resolve(v) for v in value)
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        return {
            id(ACTIVE): self.active,
            id(PAUSED): self.paused,
            id(REMOVED): self.removed,
            id(OPEN_FILE): self.file,
        }.get(id(value), value)


@pytest.fixture(scope="module")
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Module scope, so one AsyncQuiv can serve every case (a fresh one costs ~50 ms)."""
    return ("asyncio", {"debug": True})


@pytest.fixture(scope="module")
async def async_env() -> AsyncIterator[Env]:
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        active = await scheduler.add_task("active", noop, interval=3600, delay=3600)
        paused = await scheduler.add_task("paused", noop, interval=3600, delay=3600)
        removed = await scheduler.add_task("removed", noop, interval=3600, delay=3600)
        await scheduler.pause_task(paused)
        await scheduler.remove_task(removed)
        await eventually(lambda: len(log.entries) == 5)
        env = Env(scheduler, log, active, paused, removed)
        try:
            yield env
        finally:
            env.file.close()


@pytest.fixture(scope="module")
def sync_env() -> Iterator[Env]:
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)
        active = scheduler.add_task("active", noop, interval=3600, delay=3600)
        paused = scheduler.add_task("paused", noop, interval=3600, delay=3600)
        removed = scheduler.add_task("removed", noop, interval=3600, delay=3600)
        scheduler.pause_task(paused)
        scheduler.remove_task(removed)
        wait_until(lambda: len(log.entries) == 5)
        env = Env(scheduler, log, active, paused, removed)
        try:
            yield env
        finally:
            env.file.close()


def _refused(caught: BaseException | None, result: Any, method: str, error: type) -> None:
    if caught is None:
        pytest.fail(f"{method} accepted the input and returned {result!r}")
    assert isinstance(caught, error), f"expected {error.__name__}, got {caught!r}"
    assert isinstance(caught, QuivError)


@pytest.mark.parametrize(("method", "args", "kwargs", "error"), CASES)
async def test_async_core_refuses(
    async_env: Env,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[QuivError],
) -> None:
    env, scheduler = async_env, async_env.scheduler
    tasks = await scheduler.get_all_tasks(include_run_once=True)
    jobs = await scheduler.get_all_jobs()
    seen = len(env.log.entries)
    caught: BaseException | None = None
    result: Any = None
    try:
        result = await getattr(scheduler, method)(*env.resolve(args), **env.resolve(kwargs))
    except Exception as exc:
        caught = exc
    if caught is None and method == "add_task":
        await scheduler.remove_task(result)  # keep the shared scheduler clean for other cases
    _refused(caught, result, method, error)
    assert await scheduler.get_all_tasks(include_run_once=True) == tasks
    assert await scheduler.get_all_jobs() == jobs
    # Nothing half-registered: the next real changes produce exactly their own events.
    await scheduler.pause_task(env.active)
    await scheduler.resume_task(env.active, delay=3600)
    await eventually(lambda: len(env.log.entries) >= seen + 2)
    assert [e.event for e in env.log.entries[seen:]] == [Event.TASK_PAUSED, Event.TASK_RESUMED]


@pytest.mark.parametrize(("method", "args", "kwargs", "error"), CASES)
def test_sync_facade_refuses(
    sync_env: Env,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[QuivError],
) -> None:
    env, scheduler = sync_env, sync_env.scheduler
    tasks = scheduler.get_all_tasks(include_run_once=True)
    jobs = scheduler.get_all_jobs()
    seen = len(env.log.entries)
    caught: BaseException | None = None
    result: Any = None
    try:
        result = getattr(scheduler, method)(*env.resolve(args), **env.resolve(kwargs))
    except Exception as exc:
        caught = exc
    if caught is None and method == "add_task":
        scheduler.remove_task(result)
    _refused(caught, result, method, error)
    assert scheduler.get_all_tasks(include_run_once=True) == tasks
    assert scheduler.get_all_jobs() == jobs
    scheduler.pause_task(env.active)
    scheduler.resume_task(env.active, delay=3600)
    wait_until(lambda: len(env.log.entries) >= seen + 2)
    assert [e.event for e in env.log.entries[seen:]] == [Event.TASK_PAUSED, Event.TASK_RESUMED]


# -- arguments that pickle but cannot be unpickled ---------------------------------------------

POISON = [
    pytest.param({"args": (PicklesButNeverLoads(),)}, id="args"),
    pytest.param({"kwargs": {"x": PicklesButNeverLoads()}}, id="kwargs"),
]


@pytest.mark.parametrize("poison", POISON)
async def test_async_core_refuses_arguments_that_cannot_be_unpickled(
    poison: dict[str, Any],
) -> None:
    """quiv unpickles args for every read and every run; refuse what cannot round-trip.

    Accepted, such a task makes ``get_all_tasks`` (and ``add_task`` itself, when a
    listener wants the task) raise for everybody. Run on a fresh scheduler.
    """
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        await scheduler.add_task("idle", noop, interval=3600, delay=3600)
        await eventually(lambda: len(log.entries) == 1)
        tasks = await scheduler.get_all_tasks(include_run_once=True)
        with pytest.raises(ConfigurationError):
            await scheduler.add_task("poison", noop, interval=3600, delay=3600, **poison)
        assert await scheduler.get_all_tasks(include_run_once=True) == tasks


@pytest.mark.parametrize("poison", POISON)
def test_sync_facade_refuses_arguments_that_cannot_be_unpickled(poison: dict[str, Any]) -> None:
    with Quiv(shutdown_timeout=1) as scheduler:
        scheduler.add_task("idle", noop, interval=3600, delay=3600)
        tasks = scheduler.get_all_tasks(include_run_once=True)
        with pytest.raises(ConfigurationError):
            scheduler.add_task("poison", noop, interval=3600, delay=3600, **poison)
        assert scheduler.get_all_tasks(include_run_once=True) == tasks


# -- unknown ids that are not errors ------------------------------------------------------


async def test_cancel_job_unknown_or_finished_returns_false() -> None:
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        tid = await scheduler.add_task("once", noop, interval=60, run_once=True)
        await eventually(lambda: len(log.finals(tid)) == 1)
        finished = log.finals(tid)[0].id
        jobs = await scheduler.get_all_jobs()
        assert await scheduler.cancel_job(UNKNOWN_ID) is False
        assert await scheduler.cancel_job(finished) is False
        assert await scheduler.cancel_job(tid) is False  # a task id is not a job id
        assert await scheduler.get_all_jobs() == jobs


def test_remove_listener_never_added_is_ignored() -> None:
    """Removing an unknown callback changes nothing: the registered ones still hear events."""
    heard: list[str] = []
    started = threading.Event()

    def registered(event: Event, task: Any, job: Any) -> None:
        heard.append(task.task_name)
        started.set()

    with Quiv(shutdown_timeout=1) as scheduler:
        scheduler.add_listener(Event.JOB_STARTED, registered)
        scheduler.remove_listener(Event.JOB_STARTED, noop)  # never added
        scheduler.remove_listener(Event.JOB_COMPLETED, registered)  # added for another event
        scheduler.add_task("kept", noop, interval=3600)
        assert started.wait(DEADLINE)
        # One registration removed forgets exactly that one.
        scheduler.remove_listener(Event.JOB_STARTED, registered)
        done = threading.Event()
        scheduler.add_listener(Event.JOB_STARTED, lambda e, t, j: done.set())
        scheduler.add_task("after", noop, interval=3600)
        assert done.wait(DEADLINE)
    assert heard == ["kept"]


def test_run_task_immediately_on_consumed_run_once_task() -> None:
    """A run-once task whose run has begun cannot be queued again (documented error)."""
    from quiv import TaskNotScheduledError

    release = threading.Event()
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)
        tid = scheduler.add_task("once", lambda: release.wait(5), interval=60, run_once=True)
        wait_until(lambda: log.count(Event.JOB_STARTED, tid) == 1)
        tasks = scheduler.get_all_tasks(include_run_once=True)
        with pytest.raises(TaskNotScheduledError):
            scheduler.run_task_immediately(tid)
        with pytest.raises(TaskNotScheduledError):
            scheduler.resume_task(tid)
        assert scheduler.get_all_tasks(include_run_once=True) == tasks
        release.set()


# -- constructor options ---------------------------------------------------------------------

CONSTRUCTOR_CASES = [
    *[
        pytest.param({"pool_size": v}, ConfigurationError, id=f"pool_size-{label}")
        for label, v in (
            ("0", 0),
            ("negative", -1),
            ("True", True),
            ("False", False),
            ("float", 1.5),
            ("str", "3"),
            ("None", None),
        )
    ],
    *[
        pytest.param({"history_retention_seconds": v}, ConfigurationError, id=f"retention-{label}")
        for label, v in (
            ("negative", -1),
            ("nan", NAN),
            ("inf", INF),
            ("minus-inf", -INF),
            ("True", True),
            ("str", "60"),
            ("None", None),
            ("10**400", 10**400),
            ("BrokenReal", BrokenReal()),
        )
    ],
    *[
        pytest.param({"timezone": v}, InvalidTimezoneError, id=f"timezone-{label}")
        for label, v in (
            ("unknown", "Mars/Olympus_Mons"),
            ("empty", ""),
            ("blank", "   "),
            ("path", "../../etc/passwd"),
            ("nul", "UTC\x00"),
            ("int", 5),
            ("None", None),
            ("broken-tzinfo", BrokenZone()),
        )
    ],
    *[
        pytest.param({"shutdown_timeout": v}, ConfigurationError, id=f"shutdown_timeout-{label}")
        for label, v in (("negative", -1), ("nan", NAN), ("True", True), ("str", "1"))
    ],
    *[
        pytest.param({"cancel_grace": v}, ConfigurationError, id=f"cancel_grace-{label}")
        for label, v in (
            ("negative", -1),
            ("nan", NAN),
            ("inf", INF),
            ("True", True),
            ("str", "1"),
            ("None", None),
        )
    ],
    pytest.param({"config": {"pool_size": 3}}, ConfigurationError, id="config-dict"),
    pytest.param(
        {"config": QuivConfig(), "pool_size": 3}, ConfigurationError, id="config-and-pool_size"
    ),
    pytest.param(
        {"config": QuivConfig(), "history_retention_seconds": 5},
        ConfigurationError,
        id="config-and-retention",
    ),
    pytest.param(
        {"config": QuivConfig(), "timezone": "Europe/Paris"},
        ConfigurationError,
        id="config-and-timezone",
    ),
    pytest.param({"logger": "Quiv"}, ConfigurationError, id="logger-str"),
    pytest.param({"main_loop": "loop"}, ConfigurationError, id="main_loop-str"),
]


@pytest.mark.parametrize("facade", [AsyncQuiv, Quiv], ids=["AsyncQuiv", "Quiv"])
@pytest.mark.parametrize(("options", "error"), CONSTRUCTOR_CASES)
def test_constructor_refuses(
    facade: type[AsyncQuiv] | type[Quiv], options: dict[str, Any], error: type[QuivError]
) -> None:
    before = set(threading.enumerate())
    with pytest.raises(error):
        facade(**options)
    assert set(threading.enumerate()) <= before  # nothing was started


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"pool_size": 0}, id="pool_size-0"),
        pytest.param({"pool_size": True}, id="pool_size-True"),
        pytest.param({"history_retention_seconds": NAN}, id="retention-nan"),
        pytest.param({"history_retention_seconds": -1}, id="retention-negative"),
        pytest.param({"timezone": "Mars/Olympus_Mons"}, id="timezone-unknown"),
    ],
)
def test_quiv_config_refuses(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        QuivConfig(**options)


# -- the async core called from the wrong thread -----------------------------------------------


@pytest.mark.usefixtures("collect_garbage")
async def test_async_core_refuses_calls_from_another_thread() -> None:
    """``AsyncQuiv`` methods must be awaited on its own loop (the facade exists for the rest).

    A call from another thread, here through that thread's own ``asyncio.run``,
    would mutate the schedule without any synchronisation. It must be refused with
    ``SchedulerStateError`` ("cannot be served in the scheduler's current state or
    thread") and change nothing.
    """
    import asyncio

    from quiv import SchedulerStateError

    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await scheduler.add_task("idle", noop, interval=3600, delay=3600)
        tasks = await scheduler.get_all_tasks(include_run_once=True)
        outcome: dict[str, BaseException | object] = {}

        calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
            "add_task": lambda: scheduler.add_task("foreign", noop, interval=60),
            "pause_task": lambda: scheduler.pause_task(tasks[0].id),
            "get_all_tasks": lambda: scheduler.get_all_tasks(),
        }

        def foreign() -> None:
            for name, call in calls.items():
                try:
                    outcome[name] = asyncio.run(call())
                except BaseException as exc:
                    outcome[name] = exc

        thread = threading.Thread(target=foreign)
        thread.start()
        thread.join(DEADLINE)
        assert not thread.is_alive()
        after = await scheduler.get_all_tasks(include_run_once=True)
    wrong = {k: v for k, v in outcome.items() if not isinstance(v, SchedulerStateError)}
    assert wrong == {}, f"calls from another thread were served: {wrong}"
    assert after == tasks


# -- finite numbers too large for a date -------------------------------------------------------

#: Finite, positive and about 31 700 years: past ``datetime.max`` once added to now.
HUGE = 1e12

OUT_OF_RANGE = [
    pytest.param("add_task", {"interval": HUGE}, id="interval-huge"),
    pytest.param("add_task", {"delay": HUGE}, id="delay-huge"),
    pytest.param("resume_task", {"delay": HUGE}, id="resume-delay-huge"),
]


@pytest.mark.usefixtures("collect_garbage")
@pytest.mark.parametrize(("method", "options"), OUT_OF_RANGE)
async def test_async_core_refuses_seconds_beyond_the_calendar(
    method: str, options: dict[str, Any]
) -> None:
    """Such a value must be refused up front: accepted, it fails later, in the scheduler.

    (A huge interval is accepted today and its first run raises ``OverflowError``
    inside the scheduler loop, taking the whole scheduler down.) Fresh scheduler.
    """
    log = EventLog()
    async with AsyncQuiv(shutdown_timeout=1) as scheduler:
        await log.attach_async(scheduler)
        paused = await scheduler.add_task("paused", noop, interval=3600, delay=3600)
        await scheduler.pause_task(paused)
        tasks = await scheduler.get_all_tasks(include_run_once=True)
        if method == "add_task":
            with pytest.raises(ConfigurationError):
                await scheduler.add_task("huge", noop, **{"interval": 60, **options})
        else:
            with pytest.raises(ConfigurationError):
                await scheduler.resume_task(paused, **options)
        assert await scheduler.get_all_tasks(include_run_once=True) == tasks
        # Still scheduling: a one-off job runs to completion.
        probe = await scheduler.add_task("probe", noop, interval=60, run_once=True)
        await eventually(lambda: log.count(Event.JOB_COMPLETED, probe) == 1)


@pytest.mark.usefixtures("collect_garbage")
@pytest.mark.parametrize(("method", "options"), OUT_OF_RANGE)
def test_sync_facade_refuses_seconds_beyond_the_calendar(
    method: str, options: dict[str, Any]
) -> None:
    log = EventLog()
    with Quiv(shutdown_timeout=1) as scheduler:
        log.attach_sync(scheduler)
        paused = scheduler.add_task("paused", noop, interval=3600, delay=3600)
        scheduler.pause_task(paused)
        tasks = scheduler.get_all_tasks(include_run_once=True)
        if method == "add_task":
            with pytest.raises(ConfigurationError):
                scheduler.add_task("huge", noop, **{"interval": 60, **options})
        else:
            with pytest.raises(ConfigurationError):
                scheduler.resume_task(paused, **options)
        assert scheduler.get_all_tasks(include_run_once=True) == tasks
        probe = scheduler.add_task("probe", noop, interval=60, run_once=True)
        wait_until(lambda: log.count(Event.JOB_COMPLETED, probe) == 1)
