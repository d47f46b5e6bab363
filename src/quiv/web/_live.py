"""Live updates: scheduler events and progress, fanned out to the open pages.

One :class:`Hub` per dashboard listens to the scheduler while at least one page
is open (and not at all otherwise). Listeners may run on the app's loop
(``AsyncQuiv``, or a ``Quiv`` started inside the app) or on another thread (a
``Quiv`` delivering on its private loop), so each page's :class:`Outbox` is a
small lock-guarded buffer that wakes its sender on the app's loop.

Nothing here ever waits for a browser. Each outbox is bounded: a job's
progress payloads replace one another while they wait (only the latest one
matters), and if a slow page still falls :data:`OUTBOX_LIMIT` messages behind,
its backlog is dropped and the page is told to reload what it shows.
"""

from __future__ import annotations

import asyncio
import enum
import json
import threading
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from quiv import Event, Job, QuivError, Task

from ._backend import Backend

__all__ = ["OUTBOX_LIMIT", "RESYNC", "Hub", "Outbox", "job_json", "task_json"]

#: Messages one page may fall behind by before its backlog is dropped.
OUTBOX_LIMIT = 256
#: Progress payloads remembered for pages that open while a job runs.
LATEST_LIMIT = 1024
#: Sent in place of a dropped backlog: the page reloads what it shows.
RESYNC = json.dumps({"type": "resync"})


def _fallback(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def jsonable(value: Any) -> Any:
    """``value`` as JSON-ready data; anything JSON cannot hold becomes its repr."""
    try:
        return json.loads(json.dumps(value, default=_fallback))
    except Exception:  # a repr that raises, a cycle, odd dict keys: show that something is there
        return f"<{type(value).__name__}>"


def task_json(task: Task) -> dict[str, Any]:
    data = task.model_dump(mode="json", exclude={"args", "kwargs"})
    data["args"] = jsonable(task.args)
    data["kwargs"] = jsonable(task.kwargs)
    return data


def job_json(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json")


class Outbox:
    """What one page has yet to receive, in order, bounded and coalesced.

    Keys keep the order: an event gets a fresh number, a job's progress the
    key ``("progress", job_id)``, so a newer payload replaces a waiting one in
    its place, still before that job's final event.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, job_id: str | None = None) -> None:
        self.job_id = job_id  # only this job's messages (the job page), or all
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._pending: dict[object, str] = {}
        self._seq = 0
        self._overflowed = False
        self._ready = asyncio.Event()

    def offer(self, job_id: str | None, text: str, *, progress: bool = False) -> None:
        """Queue ``text``; from any thread, never waits."""
        if self.job_id is not None and job_id != self.job_id:
            return
        with self._lock:
            was_empty = not self._pending and not self._overflowed
            if progress:
                self._pending[("progress", job_id)] = text
            else:
                self._seq += 1
                self._pending[self._seq] = text
            if len(self._pending) > OUTBOX_LIMIT:
                self._pending.clear()
                self._overflowed = True
        if was_empty:
            if threading.get_ident() == self._loop_thread:
                self._ready.set()
            else:
                try:
                    self._loop.call_soon_threadsafe(self._ready.set)
                except RuntimeError:  # the app's loop is closed: nobody is reading
                    pass

    async def take(self) -> list[str]:
        """Wait for messages and return them all, oldest first."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            with self._lock:
                if self._overflowed:
                    self._overflowed = False
                    self._pending.clear()
                    return [RESYNC]
                if self._pending:
                    batch = list(self._pending.values())
                    self._pending.clear()
                    return batch


class Hub:
    """The open pages of one dashboard, and the listeners that feed them."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._outboxes: set[Outbox] = set()
        self._lock = threading.Lock()  # guards _outboxes and _latest
        self._latest: dict[str, tuple[str, str]] = {}  # job id -> (task id, message)
        self._listening = False
        self._switch: asyncio.Lock | None = None

    @property
    def pages(self) -> int:
        with self._lock:
            return len(self._outboxes)

    async def open(self, outbox: Outbox) -> None:
        """Start feeding ``outbox``; the first page makes the hub listen.

        Raises:
            QuivError: if the scheduler refuses listeners (it has shut down).
        """
        async with self._lock_switch():
            if not self._listening:
                await self._backend.listen(self.on_event, self.on_progress)
                self._listening = True
            with self._lock:
                self._outboxes.add(outbox)
                latest = list(self._latest.items())
        for job_id, (_task_id, text) in latest:
            outbox.offer(job_id, text, progress=True)

    async def close(self, outbox: Outbox) -> None:
        """Stop feeding ``outbox``; the last page makes the hub stop listening."""
        async with self._lock_switch():
            with self._lock:
                self._outboxes.discard(outbox)
                idle = not self._outboxes
                if idle:
                    self._latest.clear()
            if idle and self._listening:
                self._listening = False
                try:
                    await self._backend.unlisten(self.on_event, self.on_progress)
                except QuivError:
                    pass  # shut down meanwhile: its listeners are gone with it

    def _lock_switch(self) -> asyncio.Lock:
        if self._switch is None:
            self._switch = asyncio.Lock()
        return self._switch

    def _fan_out(self, job_id: str | None, text: str, *, progress: bool = False) -> None:
        with self._lock:
            outboxes = list(self._outboxes)
        for outbox in outboxes:
            outbox.offer(job_id, text, progress=progress)

    # The listeners: called by the scheduler's dispatcher, on whichever loop it delivers.

    def on_event(self, event: Event, task: Task, job: Job | None = None) -> None:
        message: dict[str, Any] = {"type": "task", "event": event.value, "task": task_json(task)}
        if job is not None:
            message.update(type="job", job=job_json(job))
            if job.status.is_final:
                with self._lock:
                    self._latest.pop(job.id, None)
        self._fan_out(None if job is None else job.id, json.dumps(message))

    def on_progress(self, task: Task, job: Job, payload: dict[str, Any]) -> None:
        text = json.dumps(
            {"type": "progress", "task_id": task.id, "job_id": job.id, "payload": jsonable(payload)}
        )
        with self._lock:
            if job.id in self._latest or len(self._latest) < LATEST_LIMIT:
                self._latest[job.id] = (task.id, text)
        self._fan_out(job.id, text, progress=True)
