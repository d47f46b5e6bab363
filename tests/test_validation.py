"""The argument checks of ``add_task`` and the id checks, as pure functions.

Fast on purpose: ``make mutation`` runs this file against every mutant of
``_validation.py``, so each refusal and each accepted value is pinned here.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from quiv import ConfigurationError, Every
from quiv._validation import check_id, new_task_entry

WALL = datetime(2030, 1, 1, tzinfo=timezone.utc)


def handler(a: int = 0, _job_id: str = "", **_kwargs: Any) -> None:
    """A plain handler that takes every injected name (through ``**kwargs``)."""


def plain(a: int = 0) -> None:
    """A handler that takes none of the injected names."""


async def async_handler() -> None:
    """An async handler."""


def sync_generator() -> Iterator[None]:  # pragma: no cover - never called
    yield


async def async_generator() -> AsyncIterator[None]:  # pragma: no cover - never called
    yield


def progress(**payload: Any) -> None:
    """A progress callback."""


def _entry(**overrides: Any) -> tuple[Any, float]:
    arguments: dict[str, Any] = {
        "task_name": "t",
        "func": handler,
        "interval": 60,
        "delay": 0,
        "run_once": False,
        "fixed_interval": True,
        "args": None,
        "kwargs": None,
        "progress_callback": None,
        "wall": WALL,
    }
    arguments.update(overrides)
    return new_task_entry(**arguments)


def test_check_id_returns_a_str_and_refuses_anything_else() -> None:
    assert check_id("abc", "task_id") == "abc"
    with pytest.raises(ConfigurationError, match=r"^task_id must be a str, got int$"):
        check_id(5, "task_id")


def test_a_valid_call_builds_the_task_and_its_delay() -> None:
    task, wait = _entry(
        task_name="nightly",
        interval=2.5,
        delay=1.5,
        run_once=True,
        fixed_interval=False,
        args=(1,),
        kwargs={"a": 2},
        progress_callback=progress,
    )
    assert wait == 1.5
    assert (task.name, task.func, task.trigger, task.fixed_interval, task.run_once) == (
        "nightly",
        handler,
        Every(2.5, fixed=False),
        False,
        True,
    )
    assert (task.args_copy, task.kwargs_copy) == ((1,), {"a": 2})
    assert task.progress_callback is progress
    assert task.next_run_at == WALL
    assert task.is_async is False
    assert task.injected == {"_job_id", "_stop_event", "_progress_hook"}
    assert len(task.id) == 36


def test_defaults_give_empty_arguments_and_traits_of_the_handler() -> None:
    task, wait = _entry(func=async_handler)
    assert wait == 0.0
    assert (task.args_copy, task.kwargs_copy) == ((), {})
    assert task.is_async is True
    assert task.injected == frozenset()
    assert task.progress_callback is None
    plain_task, _ = _entry(func=plain, args=(), kwargs={})
    assert plain_task.injected == frozenset()


def test_each_task_gets_its_own_id() -> None:
    assert _entry()[0].id != _entry()[0].id


def test_arguments_are_copies_that_survived_pickling() -> None:
    items = [1, 2]
    task, _ = _entry(args=(items,), kwargs={"items": items})
    assert task.args_copy == ([1, 2],)
    assert task.args_copy[0] is not items
    assert task.kwargs_copy["items"] is not items


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task_name": ""}, "task_name must be a non-empty string"),
        ({"task_name": "  "}, "task_name must be a non-empty string"),
        ({"task_name": 5}, "task_name must be a non-empty string"),
        ({"func": 5}, "func must be callable"),
        ({"func": sync_generator}, "not a generator function"),
        ({"func": async_generator}, "not a generator function"),
        ({"interval": 0}, "interval must be at least"),
        ({"delay": -1}, "delay must be 0 or more"),
        ({"run_once": 1}, "run_once must be a bool"),
        ({"fixed_interval": "yes"}, "fixed_interval must be a bool"),
        # A cron task ignores fixed_interval, yet a non-bool is still refused.
        (
            {"interval": None, "cron": "* * * * *", "fixed_interval": "yes"},
            "fixed_interval must be a bool",
        ),
        ({"args": [1]}, "args must be a tuple or None, got list"),
        ({"args": []}, "args must be a tuple or None, got list"),  # empty, yet not a tuple
        ({"kwargs": [("a", 1)]}, "kwargs must be a dict with str keys"),
        ({"kwargs": []}, "kwargs must be a dict with str keys"),
        ({"kwargs": {1: "a"}}, "kwargs must be a dict with str keys"),
        ({"kwargs": {"a": 1, 2: "b"}}, "kwargs must be a dict with str keys"),
        ({"kwargs": {"_job_id": "x"}}, "kwargs may not set _job_id: quiv injects"),
        (
            {"kwargs": {"_stop_event": 1, "_progress_hook": 2}},
            "kwargs may not set _progress_hook, _stop_event:",
        ),
        ({"progress_callback": 5}, "progress_callback must be callable"),
        ({"args": (threading.Lock(),)}, "args must survive pickling"),
        ({"kwargs": {"lock": threading.Lock()}}, "kwargs must survive pickling"),
    ],
)
def test_each_bad_argument_is_refused_by_name(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _entry(**overrides)


def test_a_func_that_cannot_be_inspected_is_refused() -> None:
    class Uninspectable:
        def __call__(self) -> None:  # pragma: no cover - never runs
            pass

        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(f"no {name}")

    with pytest.raises(ConfigurationError, match="func cannot be inspected: RuntimeError") as e:
        _entry(func=Uninspectable())
    assert isinstance(e.value.__cause__, RuntimeError)


def _explode() -> None:
    raise RuntimeError("cannot be rebuilt")


class LoadsBadly:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_explode, ())


def test_a_value_that_pickles_but_cannot_be_loaded_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="RuntimeError: cannot be rebuilt") as e:
        _entry(args=(LoadsBadly(),))
    assert isinstance(e.value.__cause__, RuntimeError)
