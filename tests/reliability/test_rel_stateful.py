"""A hypothesis state machine over the ``Quiv`` facade, checked against a simple model.

The model holds the ids of live tasks in the order they were added, whether
each is paused, and every id ever removed. Tasks are recurring and not due for
an hour, so they only run when a rule makes them (``run_task_immediately``, or
``resume_task`` with no delay); a running task shows ``running`` rather than
``active``, which the invariant allows. Operations on removed ids must raise
the documented errors and change nothing.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from rel_support import noop

from quiv import (
    HandlerNotRegisteredError,
    Quiv,
    TaskNotFoundError,
    TaskStatus,
)

HOUR = 3600


class QuivMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.scheduler = Quiv(pool_size=2, shutdown_timeout=2)
        self.scheduler.start()
        self.order: list[str] = []  # live task ids, in the order added
        self.paused: dict[str, bool] = {}
        self.removed: list[str] = []

    # -- helpers ----------------------------------------------------------------

    def _pick_live(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self.order), label="live task")

    def _pick_removed(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self.removed), label="removed task")

    # -- rules ------------------------------------------------------------------

    @rule(
        name=st.text(min_size=1, max_size=8).filter(lambda s: s.strip() != ""),
        fixed=st.booleans(),
        args=st.tuples(st.integers(), st.text(max_size=3)),
    )
    def add(self, name: str, fixed: bool, args: tuple[Any, ...]) -> None:
        task_id = self.scheduler.add_task(
            name, noop, interval=HOUR, delay=HOUR, fixed_interval=fixed, args=args
        )
        assert task_id not in self.paused and task_id not in self.removed
        self.order.append(task_id)
        self.paused[task_id] = False
        task = self.scheduler.get_task(task_id)
        assert (task.task_name, task.args, task.fixed_interval) == (name, args, fixed)

    @precondition(lambda self: bool(self.order))
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        task_id = self._pick_live(data)
        self.scheduler.pause_task(task_id)
        self.paused[task_id] = True

    @precondition(lambda self: bool(self.order))
    @rule(data=st.data(), delay=st.sampled_from([0, 1, HOUR]))
    def resume(self, data: st.DataObject, delay: int) -> None:
        task_id = self._pick_live(data)
        self.scheduler.resume_task(task_id, delay=delay)
        self.paused[task_id] = False

    @precondition(lambda self: bool(self.order))
    @rule(data=st.data())
    def run_now(self, data: st.DataObject) -> None:
        task_id = self._pick_live(data)
        assert self.scheduler.run_task_immediately(task_id) == 1

    @precondition(lambda self: bool(self.order))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        task_id = self._pick_live(data)
        self.scheduler.remove_task(task_id)
        self.order.remove(task_id)
        del self.paused[task_id]
        self.removed.append(task_id)

    @precondition(lambda self: bool(self.removed))
    @rule(
        data=st.data(),
        operation=st.sampled_from(["get", "pause", "resume", "remove", "run_now"]),
    )
    def operate_on_removed(self, data: st.DataObject, operation: str) -> None:
        task_id = self._pick_removed(data)
        before = self.scheduler.get_all_tasks(include_run_once=True)
        error: type[Exception] = (
            HandlerNotRegisteredError if operation == "run_now" else TaskNotFoundError
        )
        call = {
            "get": self.scheduler.get_task,
            "pause": self.scheduler.pause_task,
            "resume": self.scheduler.resume_task,
            "remove": self.scheduler.remove_task,
            "run_now": self.scheduler.run_task_immediately,
        }[operation]
        try:
            call(task_id)
        except error:
            pass
        else:
            raise AssertionError(f"{operation} on removed task {task_id} did not raise")
        after = self.scheduler.get_all_tasks(include_run_once=True)
        assert [t.id for t in after] == [t.id for t in before]

    # -- invariants ---------------------------------------------------------------

    @invariant()
    def tasks_match_the_model(self) -> None:
        tasks = self.scheduler.get_all_tasks(include_run_once=True)
        assert [t.id for t in tasks] == self.order
        for task in tasks:
            if self.paused[task.id]:
                assert task.status is TaskStatus.PAUSED, task
            else:
                assert task.status in (TaskStatus.ACTIVE, TaskStatus.RUNNING), task

    def teardown(self) -> None:
        self.scheduler.shutdown()


QuivMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQuivStateMachine = QuivMachine.TestCase
