"""Compatibility with quiv 0.x: its import paths, error names and behaviours.

Code written for 0.x must run unchanged; each test pins one thing such code
relies on. docs/migrating.md lists what still differs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

import quiv
from _support import AsyncRecorder, SyncRecorder, noop
from quiv import AsyncQuiv, Event, Job, JobStatus, Quiv, Task

# -- import paths -------------------------------------------------------------

EXCEPTIONS_0X = [
    "ConfigurationError",
    "DatabaseInitializationError",
    "HandlerNotRegisteredError",
    "HandlerRegistrationError",
    "InvalidTimezoneError",
    "JobNotFoundError",
    "QuivError",
    "TaskNotFoundError",
    "TaskNotScheduledError",
]


def test_0x_modules_export_the_same_objects_as_the_package() -> None:
    from quiv import config, exceptions, models

    for name in EXCEPTIONS_0X:
        assert getattr(exceptions, name) is getattr(quiv, name), name
        assert issubclass(getattr(exceptions, name), quiv.QuivError)
    assert config.QuivConfig is quiv.QuivConfig
    assert config.resolve_timezone is quiv.resolve_timezone
    for name in ("Event", "Job", "JobStatus", "Task", "TaskStatus"):
        assert getattr(models, name) is getattr(quiv, name), name
    for module in (config, exceptions, models):
        assert set(module.__all__) <= set(quiv.__all__), module.__name__
        assert all(hasattr(module, name) for name in module.__all__)


def test_0x_from_imports_work() -> None:
    # The statements of 0.x code, as written there.
    from quiv.config import QuivConfig, resolve_timezone
    from quiv.exceptions import (
        DatabaseInitializationError,
        HandlerRegistrationError,
        TaskNotFoundError,
    )
    from quiv.models import Job, JobStatus, Task

    assert QuivConfig(pool_size=2).pool_size == 2
    assert resolve_timezone("UTC") is timezone.utc
    assert TaskNotFoundError("x").task_id == "x"
    assert DatabaseInitializationError.__name__ == "DatabaseInitializationError"
    assert issubclass(HandlerRegistrationError, quiv.ConfigurationError)
    assert "error_type" in Job.model_fields and JobStatus.CANCELLED.value == "cancelled"
    assert "task_name" in Task.model_fields


# -- the error tree ---------------------------------------------------------------


def test_new_errors_sit_where_existing_except_clauses_catch_them() -> None:
    assert issubclass(quiv.HandlerRegistrationError, quiv.ConfigurationError)
    assert issubclass(quiv.HandlerRegistrationError, ValueError)
    assert issubclass(quiv.DatabaseInitializationError, RuntimeError)
    assert not issubclass(quiv.DatabaseInitializationError, quiv.SchedulerStateError)


def _generator_handler() -> Iterator[None]:  # pragma: no cover - never called
    yield None


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"func": None}, id="func-none"),
        pytest.param({"func": "not callable"}, id="func-str"),
        pytest.param({"func": _generator_handler}, id="func-generator"),
        pytest.param({"func": print, "progress_callback": 42}, id="progress-callback-int"),
    ],
)
async def test_unusable_handler_raises_handler_registration_error(kwargs: dict[str, Any]) -> None:
    scheduler = AsyncQuiv()
    with pytest.raises(quiv.HandlerRegistrationError) as caught:
        await scheduler.add_task("t", interval=60, **kwargs)
    assert isinstance(caught.value, quiv.ConfigurationError)
    assert await scheduler.get_all_tasks(include_run_once=True) == []


async def test_database_that_cannot_be_created_is_logged_as_database_initialization_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tempfile

    blocker = tmp_path / "a-file"
    blocker.write_text("nothing can be created under a file")
    monkeypatch.setattr(tempfile, "tempdir", str(blocker))
    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("t", lambda: None, interval=60, run_once=True)
        await scheduler._store.flush()
        # Scheduling goes on from memory.
        await recorder.wait_for(Event.JOB_COMPLETED)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert errors
    exc_type = errors[0].exc_info[0] if errors[0].exc_info else None
    assert exc_type is quiv.DatabaseInitializationError


# -- resolve_timezone -------------------------------------------------------------


@pytest.mark.parametrize("name", ["UTC", "utc", " Z ", "z", "GMT", "gmt"])
def test_resolve_timezone_reads_utc_aliases(name: str) -> None:
    assert quiv.resolve_timezone(name) is timezone.utc
    assert quiv.QuivConfig(timezone=name).tz is timezone.utc


def test_resolve_timezone_reads_iana_names_and_passes_tzinfo_through() -> None:
    assert quiv.resolve_timezone("Europe/Paris") == ZoneInfo("Europe/Paris")
    fixed: tzinfo = timezone.utc
    assert quiv.resolve_timezone(fixed) is fixed


@pytest.mark.parametrize("value", ["Europe/Pari", "", "   ", 123, None])
def test_resolve_timezone_refuses_unknown_zones(value: Any) -> None:
    with pytest.raises(quiv.InvalidTimezoneError):
        quiv.resolve_timezone(value)


# -- error_message and error_type -----------------------------------------------------


def _boom() -> None:
    raise RuntimeError("boom")


async def _boom_async() -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize("handler", [_boom, _boom_async], ids=["sync", "async"])
async def test_error_message_is_the_message_and_error_type_the_class(handler: Any) -> None:
    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("t", handler, interval=60, run_once=True)
        await recorder.wait_for(Event.JOB_FAILED)
        (job,) = await scheduler.get_all_jobs("failed")
        (row,) = await scheduler._store.read_rows("jobs")
    assert (job.error_message, job.error_type) == ("boom", "RuntimeError")
    assert recorder.jobs[-1] == job
    assert (row["error_message"], row["error_type"]) == ("boom", "RuntimeError")
    # 0.x's fields keep their order; error_type follows them, newer fields come after.
    fields = list(Job.model_fields)
    assert fields[fields.index("error_message") + 1] == "error_type"


async def test_completed_and_cancelled_jobs_have_no_error_type() -> None:
    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("ok", lambda: None, interval=60, run_once=True)
        await recorder.wait_for(Event.JOB_COMPLETED)
        (job,) = await scheduler.get_all_jobs()
    assert (job.status, job.error_message, job.error_type) == (JobStatus.COMPLETED, None, None)


def test_error_type_through_the_sync_facade() -> None:
    with Quiv() as scheduler:
        recorder = SyncRecorder()
        recorder.attach(scheduler)
        scheduler.add_task("t", _boom, interval=60, run_once=True)
        recorder.wait_for(Event.JOB_FAILED)
        (job,) = scheduler.get_all_jobs("failed")
    assert (job.error_message, job.error_type) == ("boom", "RuntimeError")


# -- a handler that sets its own stop event -------------------------------------------------


def _stops_itself(_stop_event: threading.Event) -> None:
    _stop_event.set()


async def _stops_itself_async(_stop_event: threading.Event) -> None:
    _stop_event.set()


@pytest.mark.parametrize("handler", [_stops_itself, _stops_itself_async], ids=["sync", "async"])
async def test_handler_that_sets_its_own_stop_event_is_cancelled(handler: Any) -> None:
    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task("t", handler, interval=60, run_once=True)
        await recorder.wait_for(Event.JOB_CANCELLED)
        (job,) = await scheduler.get_all_jobs()
    assert (job.status, job.error_message, job.error_type) == (JobStatus.CANCELLED, None, None)
    assert [r[0] for r in recorder.records] == [
        "task_added",
        "job_started",
        "job_cancelled",
        "task_removed",
    ]


# -- progress with positional arguments ------------------------------------------------------


def _reports_positionally(_progress_hook: Any) -> None:
    _progress_hook(1, 3, stage="copy")


async def test_progress_hook_passes_positional_arguments_on() -> None:
    heard: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def on_progress(*args: Any, **payload: Any) -> None:
        heard.append((args, payload))

    async with AsyncQuiv() as scheduler:
        recorder = AsyncRecorder()
        await recorder.attach(scheduler)
        await scheduler.add_task(
            "t", _reports_positionally, interval=60, run_once=True, progress_callback=on_progress
        )
        await scheduler.add_task("quiet", _reports_positionally, interval=60, run_once=True)
        await recorder.wait_for(Event.JOB_COMPLETED, 2)
    assert heard == [((1, 3), {"stage": "copy"})]
    finals = [job.status for job in recorder.jobs if job.status.is_final]
    assert finals == [JobStatus.COMPLETED] * 2  # no TypeError, with or without a callback


# -- listeners registered before start with an explicit main_loop --------------------------


@pytest.fixture
def host_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in a thread of its own, like an app's main loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="host-loop")
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_sync_facade_listeners_hear_events_before_start(
    host_loop: asyncio.AbstractEventLoop,
) -> None:
    heard: list[tuple[str, str, str | None]] = []
    changed = threading.Condition()

    def listener(event: Event, task: Task, job: Job | None = None) -> None:
        with changed:
            heard.append((event.value, threading.current_thread().name, task.task_name))
            changed.notify_all()

    scheduler = Quiv(main_loop=host_loop)
    try:
        for event in (Event.TASK_ADDED, Event.TASK_PAUSED, Event.JOB_STARTED):
            scheduler.add_listener(event, listener)
        task_id = scheduler.add_task("early", lambda: None, interval=60)
        scheduler.pause_task(task_id)
        with changed:  # heard at once, on the main loop, without start()
            assert changed.wait_for(lambda: len(heard) == 2, 5), heard
        assert heard == [
            ("task_added", "host-loop", "early"),
            ("task_paused", "host-loop", "early"),
        ]
        scheduler.start()
        scheduler.resume_task(task_id)
        with changed:  # and in order with what happens after start
            assert changed.wait_for(lambda: len(heard) == 3, 5), heard
        assert heard[2] == ("job_started", "host-loop", "early")
    finally:
        scheduler.shutdown()


async def test_async_core_listeners_hear_events_before_it_is_entered() -> None:
    scheduler = AsyncQuiv(main_loop=asyncio.get_running_loop())
    recorder = AsyncRecorder()
    await recorder.attach(scheduler)
    await scheduler.add_task("early", lambda: None, interval=60, run_once=True)
    await recorder.wait_for(Event.TASK_ADDED)  # before the scheduler runs
    assert recorder.records == [("task_added", "early", None)]
    async with scheduler:
        await recorder.wait_for(Event.TASK_REMOVED)
    assert [r[0] for r in recorder.records] == [
        "task_added",
        "job_started",
        "job_completed",
        "task_removed",
    ]


async def test_early_deliveries_run_before_later_ones_on_the_same_loop() -> None:
    """A slow early listener still hears its event before anything after start."""
    order: list[str] = []
    all_heard = anyio.Event()

    async def slow_listener(event: Event, task: Task) -> None:
        await anyio.sleep(0.05)
        order.append(f"{event.value}:{task.task_name}")

    def fast_listener(event: Event, task: Task, job: Job) -> None:
        order.append(f"{event.value}:{task.task_name}")
        if len(order) == 4:
            all_heard.set()

    scheduler = AsyncQuiv(main_loop=asyncio.get_running_loop())
    await scheduler.add_listener(Event.TASK_ADDED, slow_listener)
    await scheduler.add_listener(Event.JOB_STARTED, fast_listener)
    await scheduler.add_task("a", lambda: None, interval=60)
    await scheduler.add_task("b", lambda: None, interval=60)
    async with scheduler:
        with anyio.fail_after(5):
            await all_heard.wait()
    assert order == ["task_added:a", "task_added:b", "job_started:a", "job_started:b"]


async def test_snapshots_behave_as_validated_models_when_copied_and_dumped() -> None:
    """Snapshots are built without validation and share their "fields set";
    copying one with changes must neither fail nor touch any other snapshot."""
    async with AsyncQuiv() as scheduler:
        first = await scheduler.add_task("a", noop, interval=60, delay=60)
        second = await scheduler.add_task("b", noop, interval=60, delay=60)
        one, other = await scheduler.get_task(first), await scheduler.get_task(second)
    renamed = one.model_copy(update={"task_name": "renamed"})
    assert (renamed.task_name, one.task_name) == ("renamed", "a")
    assert one.model_fields_set == other.model_fields_set == set(Task.model_fields)
    assert renamed.model_fields_set == set(Task.model_fields)
    assert Task.model_validate(one.model_dump()) == one
    assert Task(**one.model_dump()).model_dump_json() == one.model_dump_json()
