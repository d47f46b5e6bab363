"""The engine's side of a durable store: the schedule several processes share.

With a durable store the store, not this process, says when a task is next
due. Each process keeps every task on its own heap at the stored due time, as
usual; when one falls due, it does not create a job but asks the store to claim
the occurrence (``_stores._requests.Claim``). The one process whose claim holds
creates the job and runs it; the others move on to the next due time the
winner stored. So dispatch becomes claim-then-run, every process may win, and
load spreads.

Everything here runs on the loop, synchronously; the store answers through
callbacks once its transaction has committed. Tasks are in the store's terms
once adopted: ``add`` proposes a first due time, and the store keeps the one it
already holds for that id (a restart, or another process that added it first).
"""

from __future__ import annotations

import functools
import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ._foreign import foreign_task
from ._ids import new_id
from ._models import Event, JobStatus
from ._registry import TaskEntry, job_from_row
from ._stores._durable import DurableStore
from ._stores._requests import (
    Abandoned,
    Adoption,
    Cancel,
    Claim,
    ClaimResult,
    Outcome,
    Poll,
    Replan,
    TaskState,
    Watched,
)
from ._triggers import Every, Moment

if TYPE_CHECKING:
    from ._engine import Engine, Waiter

__all__ = ["SharedSchedule", "micros", "wall_of"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(wall: datetime) -> int:
    """An aware wall time as integer microseconds since the epoch (exact, for keys)."""
    delta = wall - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def wall_of(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def next_due(task: TaskEntry, due: int, now: int) -> int | None:
    """The due time after ``due`` once it is held at ``now`` (None: none, or not yet known).

    With ``coalesce`` the due times that already passed are folded into the run
    being claimed; without it, each comes due in turn. ``fixed_interval=False``
    waits for the run to end, which plans the next one.
    """
    trigger = task.trigger
    if task.run_once or not trigger.repeats:
        return None
    coalesce = task.policy.coalesce
    if isinstance(trigger, Every):
        if not trigger.fixed:
            return None
        step = max(1, round(trigger.seconds * 1_000_000))
        following = due + step
        if coalesce and following <= now:
            following += ((now - following) // step + 1) * step
        return following
    after = getattr(trigger, "next_after", None)
    if after is None:
        return None
    instant = after(wall_of(due))
    if instant is not None and coalesce and micros(instant) <= now:
        instant = after(wall_of(now))
    return None if instant is None else micros(instant)


def _repeats(row: tuple[Any, ...]) -> bool:
    """Whether a stored task row (``foreign`` order) is of a task that repeats."""
    fields = json.loads(row[6])
    return not fields["run_once"] and (
        fields["interval_seconds"] is not None or bool(fields["cron"])
    )


class SharedSchedule:
    """Adoption, claims and the periodic look at other processes' changes."""

    def __init__(self, engine: Engine, store: DurableStore) -> None:
        self._engine = engine
        self.store = store
        #: The stored next due time (µs) of every adopted task, as last seen.
        self._due: dict[str, int | None] = {}
        self._pending: set[str] = set()  # an adoption or a claim is in flight
        self._unrunnable: set[str] = set()  # foreign tasks this process cannot import
        #: Paused or resumed here since the poll under way began: its answer is older.
        self._changed: set[str] = set()
        self._removed: set[str] = set()  # removed here: not to be rebuilt from a stale poll
        #: ``wait_for_task`` waiters, with when each began (the history's text form):
        #: the task's next end may come in another process, seen at a poll.
        self._task_watches: dict[str, list[tuple[Waiter, str]]] = {}
        store.polled = self._polled
        store.abandoned = self._abandoned
        store.known = self._known
        store.watched = self._watched

    # -- from the engine ------------------------------------------------------

    def add(self, task: TaskEntry, now: Moment, delay: float) -> None:
        slot = task.timeline.start(now, delay)
        if slot is not None:
            task.next_run_at = slot.wall
        self._pending.add(task.id)
        proposed = None if slot is None else micros(slot.wall)
        self.store.adopt(Adoption(task, proposed, functools.partial(self._adopted, task)))

    def dispatch(self, task: TaskEntry, now: Moment) -> None:
        """``task`` fell due on its cadence: claim the occurrence before running it."""
        slot, task.slot = task.slot, None
        due = self._due.get(task.id)
        if slot is None or due is None or task.id in self._pending:
            return
        job_id = new_id()
        started = now.wall.isoformat(" ")
        row: tuple[object, ...] = (job_id, task.id, task.name, JobStatus.SCHEDULED.value)
        row += (started, None, None, None, None, 1, None)
        self._pending.add(task.id)
        self.store.claim(
            Claim(
                task.id,
                due,
                job_id,
                row,
                task.policy.max_instances,
                task.policy.misfire_grace,
                functools.partial(next_due, task),
                functools.partial(self._claimed, task, job_id, slot),
            )
        )

    def plan(self, task: TaskEntry, now: Moment, *, ended: bool) -> None:
        """Put ``task`` back on the heap at its stored due time (the engine's ``_plan``)."""
        if task.removed or task.paused or task.id in self._pending:
            return
        if task.rerun:  # run-now during a run: once more at once, off the cadence
            task.rerun = False
            self._engine.registry.schedule(task, now, on_cadence=False)
            return
        trigger = task.trigger
        unplanned = self._due.get(task.id) is None and not task.one_shot
        if ended and unplanned and isinstance(trigger, Every) and not trigger.fixed:
            # fixed_interval=False: the run that just ended plans the next one.
            following = micros(now.wall) + round(trigger.seconds * 1_000_000)
            self.store.replan(Replan(task.id, following, only_if_unplanned=True))
            self._due[task.id] = following
        if task.due is None:
            self._follow(task, self._due.get(task.id))

    def resume(self, task: TaskEntry, now: Moment, delay: float) -> None:
        slot = task.timeline.start(now, delay)
        due = None if slot is None else micros(slot.wall)
        self._changed.add(task.id)
        self.store.replan(Replan(task.id, due, paused=False))
        self._due[task.id] = due
        self._follow(task, due)

    def retimed(self, task: TaskEntry, now: Moment) -> None:
        """``update_task`` gave ``task`` a new trigger: plan it afresh, in the store."""
        slot = task.timeline.start(now, 0.0)
        due = None if slot is None else micros(slot.wall)
        self.store.replan(Replan(task.id, due))
        self._due[task.id] = due
        if not task.jobs:
            self._follow(task, due)

    # -- answers from the store -------------------------------------------------

    def _adopted(self, task: TaskEntry, state: TaskState) -> None:
        self._pending.discard(task.id)
        self._due[task.id] = state.next_due
        if task.removed:
            return
        if state.next_due is None and task.one_shot and not task.jobs:
            self._engine.remove(task, keep_row=True)  # it ran already (a restart)
            return
        if state.paused and not task.paused:
            self._engine.pause(task, announce=False)
            return
        self._follow(task, state.next_due)

    def _claimed(self, task: TaskEntry, job_id: str, slot: Moment, result: ClaimResult) -> None:
        engine = self._engine
        self._pending.discard(task.id)
        self._due[task.id] = result.state.next_due
        outcome = result.outcome
        if task.removed:
            return
        if outcome is Outcome.GONE:
            engine.remove(task)
            return
        if outcome is Outcome.PAUSED:
            if not task.paused:
                engine.pause(task, announce=False)
            return
        now = engine.now()
        if outcome is Outcome.RUN:
            engine.run_claimed(task, job_id, slot, now)
        elif outcome is Outcome.MISSED:
            engine.record_missed(task, slot, now)
        if task.one_shot and outcome is not Outcome.RUN and not task.jobs and not task.retries:
            engine.remove(task, keep_row=True)  # its one run was another process's
            return
        if task.due is None or task.due_is_slot:
            self._follow(task, result.state.next_due)

    def _abandoned(self, jobs: list[Abandoned]) -> None:
        """From the lease thread: jobs whose worker stopped; retried here, on the loop."""
        self._engine.inbox.submit(functools.partial(self._retry_abandoned, jobs))

    def _retry_abandoned(self, jobs: list[Abandoned]) -> None:
        engine = self._engine
        for job in jobs:
            task = engine.registry.tasks.get(job.task_id)
            mine = engine.registry.jobs.get(job.job_id)
            if task is None or (mine is not None and not mine.status.is_final):
                continue  # not a task of ours, or our own job still runs: never twice
            if job.attempt <= task.job_policy.max_retries:
                engine.retry_abandoned(task, job.job_id, job.attempt, job.retry_of)

    def forget(self, task_id: str) -> None:
        """``task_id`` was removed here."""
        self._due.pop(task_id, None)
        self._removed.add(task_id)

    def paused(self, task: TaskEntry) -> None:
        """``task`` was paused here: tell the store (and so the other processes)."""
        self._changed.add(task.id)
        self.store.replan(Replan(task.id, None, paused=True, set_due=False))

    def request_cancel(self, job_id: str, force: bool) -> None:
        """Ask the process running ``job_id`` (another one) to stop it."""
        self.store.cancel(Cancel(job_id, force))

    def _known(self) -> frozenset[str]:
        """The ids this process knows; asked as a poll begins, which it also marks."""
        self._changed.clear()
        return frozenset(self._engine.registry.tasks.keys() | self._removed | self._pending)

    def watch_task(self, task_id: str, waiter: Waiter) -> None:
        """``waiter`` (in ``task_waiters`` too) also hears of an end in another process."""
        began = self._engine.clock.now().isoformat(" ")
        self._task_watches.setdefault(task_id, []).append((waiter, began))

    def _watched(self) -> Watched:
        """What this process waits for in others; asked as a poll begins."""
        engine = self._engine
        jobs = tuple(job for job in engine.job_waiters if job not in engine.registry.jobs)
        for task_id in list(self._task_watches):  # forget the waiters told or gone
            waiting = engine.task_waiters.get(task_id, [])
            kept = [
                (waiter, began)
                for waiter, began in self._task_watches[task_id]
                if waiter in waiting
            ]
            if kept:
                self._task_watches[task_id] = kept
            else:
                del self._task_watches[task_id]
        if not self._task_watches:
            return Watched(jobs)
        since = min(began for watches in self._task_watches.values() for _, began in watches)
        return Watched(jobs, tuple(self._task_watches), since)

    def _tell_ended(self, rows: list[tuple[Any, ...]]) -> None:
        """Tell the waiters of jobs that ended in another process (earliest end first)."""
        engine = self._engine
        for row in sorted(rows, key=lambda row: row[5]):  # ended_at, in the history's text form
            job_id, task_id, ended = row[0], row[1], row[5]
            if job_id in engine.registry.jobs:
                continue  # this process's own: told when it ended here
            job = job_from_row(row)
            for waiter in engine.job_waiters.pop(job_id, ()):
                waiter(job)
            waiting = engine.task_waiters.get(task_id)
            watches = self._task_watches.get(task_id)
            if not waiting or not watches:
                continue
            for waiter, began in list(watches):
                if ended >= began and waiter in waiting:
                    waiting.remove(waiter)
                    watches.remove((waiter, began))
                    waiter(job)
            if not waiting:
                del engine.task_waiters[task_id]

    def _polled(self, poll: Poll) -> None:
        """Apply what other processes changed: tasks, pauses, resumes, due times, cancels,
        and the ends of jobs this process waits for."""
        engine = self._engine
        self._tell_ended(poll.ended)
        states = poll.states
        self._removed &= states.keys()  # gone from the store too: nothing left to guard
        for row in poll.foreign:
            if row is not None and row[0] not in self._removed:
                self._adopt_foreign(row, states[row[0]])
        for job_id, force in poll.cancels:
            job = engine.registry.jobs.get(job_id)
            if job is not None:
                engine.cancel(job, force)
        for task in list(engine.registry.tasks.values()):
            if task.id in self._pending or task.id in self._changed or task.id not in self._due:
                continue  # not adopted yet, an answer is on the way, or changed since
            state = states.get(task.id)
            if state is None:
                engine.remove(task)
                continue
            if state.paused != task.paused:
                if state.paused:
                    engine.pause(task, announce=False)
                    continue
                task.paused = False
                engine.registry.stale(task)
                engine.emit_task(Event.TASK_RESUMED, task)
                self._due[task.id] = state.next_due
                self._follow(task, state.next_due)
            elif state.next_due != self._due[task.id] and (task.due is None or task.due_is_slot):
                self._due[task.id] = state.next_due
                self._follow(task, state.next_due)

    def _adopt_foreign(self, row: tuple[Any, ...], state: TaskState) -> None:
        """Take on a task another process added, with the run state the store holds."""
        engine = self._engine
        if state.next_due is None and not _repeats(row):
            self._removed.add(row[0])  # a one-shot that ran already: nothing to take on
            return
        try:
            task = foreign_task(row, engine.config.tz, engine.clock.now(), self.store.allow_pickle)
        except Exception as exc:
            if row[0] not in self._unrunnable:
                self._unrunnable.add(row[0])
                engine.logger.warning(
                    "quiv cannot run task %r, added by another process: %s", row[0], exc
                )
            return
        self.store.mark_adopted(task.id)
        self._due[task.id] = state.next_due
        task.paused = state.paused
        engine.add_foreign(task)
        self._follow(task, state.next_due)

    def _follow(self, task: TaskEntry, due: int | None) -> None:
        """Put ``task`` on the heap at the stored due time ``due`` (off it if None)."""
        engine = self._engine
        if task.removed or task.paused:
            return
        if due is None:
            if task.due is not None:
                engine.registry.unschedule(task)
            return
        now = engine.now()
        engine.schedule_at(task, Moment.at_wall(wall_of(due), now))
