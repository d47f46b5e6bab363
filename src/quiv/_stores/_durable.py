"""What every durable store shares: one background task doing rounds of database work.

No public method waits on the database: the engine notes changes and requests
(synchronously, on the loop), and :meth:`DurableStore.run` turns whatever has
gathered into one write transaction of the backend (``_commit``): adoptions
of tasks, the job rows written behind (first, so a finished job frees its
slot for the claims), claims of due occurrences, replans, cancel requests,
task rows, and, every ``POLL_SECONDS``, a look at what other processes changed.
The answers reach the engine only once that transaction has committed.

If the database cannot be reached, everything is put back, a warning names
the problem once, and the round is retried with a growing delay; a claim
retried is decided afresh, so an outage never makes a run happen twice.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeAlias

import anyio

from ._interface import Row
from ._options import StoreOptions
from ._requests import (
    Abandoned,
    Adoption,
    Cancel,
    Claim,
    ClaimResult,
    Poll,
    Replan,
    TaskState,
    Watched,
)
from ._rows import saved_task_row, task_row

__all__ = ["POLL_SECONDS", "Batch", "DurableStore"]

#: Seconds between looks at what other processes changed, when nothing tells.
POLL_SECONDS = 0.5
#: Seconds changes gather before a round that has nothing more urgent to do.
WRITE_DELAY = 0.005
RETRY_FIRST_SECONDS = 0.25
RETRY_MAX_SECONDS = 10.0

# A string: ``LoggerAdapter`` takes a type argument at run time only from Python 3.11.
AnyLogger: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"


@dataclass(slots=True)
class Batch:
    """One round's work, rendered on the loop, for one transaction."""

    adoptions: list[tuple[Adoption, tuple[Any, ...]]]
    claims: list[Claim]
    replans: list[Replan]
    cancels: list[Cancel]
    task_rows: list[tuple[Any, ...]]
    deleted: list[str]
    job_rows: list[tuple[Any, ...]]
    purge: datetime | None
    known: frozenset[str] | None  # poll this round: the ids this process knows
    watched: Watched  # what this process waits for in others (read with the poll)
    worker: str
    now_us: int
    lease_us: int


#: What a transaction answers: adopted states, claim results, and the poll if any.
Answers = tuple[list[TaskState], list[ClaimResult], Poll | None]


def _job_extra(job: Any, holder: str) -> tuple[Any, ...]:
    """The durable job columns beyond the private store's: worker and progress (JSON).

    A live job not started yet is held (its lease renewed) by this process, ``holder``.
    """
    progress = job.progress
    worker = job.worker or (None if job.status.is_final else holder)
    return worker, None if progress is None else json.dumps(progress, default=repr)


class DurableStore(ABC):
    """The producers and the round loop; a backend supplies the transaction and reads."""

    reads_wait = False  # a backend whose reads cross a network says so

    def __init__(self, options: StoreOptions, logger: AnyLogger, worker: Callable[[], str]) -> None:
        self._options = options
        self._logger = logger
        self._worker = worker
        #: Whether stored pickles may be loaded here (``serializer="pickle"``).
        self.allow_pickle = options.serializer == "pickle"
        self._tasks: dict[str, Row | None] = {}
        self._jobs: dict[str, Row] = {}
        self._adoptions: list[Adoption] = []
        self._claims: list[Claim] = []
        self._replans: list[Replan] = []
        self._cancels: list[Cancel] = []
        self._purge_before: datetime | None = None
        self._flushes: list[anyio.Event] = []
        self._adopted: set[str] = set()
        self._kick: anyio.Event | None = None
        self._closed = False
        self._next_poll = 0.0
        self._retry = RETRY_FIRST_SECONDS
        self.failing = False
        self.failed_batches = 0
        self.snapshot: Callable[[], tuple[Iterable[Row], Iterable[Row]]] | None = None
        self.committed: Callable[[list[Any]], None] | None = None
        #: Called on the loop with what other processes changed, each poll.
        self.polled: Callable[[Poll], None] | None = None
        #: The ids of the tasks this process knows (read on the loop, each poll).
        self.known: Callable[[], frozenset[str]] = frozenset
        #: What this process waits for in other processes (read on the loop, each poll).
        self.watched: Callable[[], Watched] = Watched
        #: Called from the lease keeper's thread with jobs it recorded abandoned.
        self.abandoned: Callable[[list[Abandoned]], None] | None = None

    # -- what a backend supplies ---------------------------------------------

    @property
    @abstractmethod
    def path(self) -> Path | None: ...

    @property
    @abstractmethod
    def where(self) -> str:
        """The database, as named in messages (no password)."""

    @abstractmethod
    async def open(self) -> None:
        """Create or check the database; raise a clear error if it cannot be used."""

    @abstractmethod
    async def _commit(self, batch: Batch) -> Answers:
        """Apply ``batch`` in one write transaction; raise if it did not commit."""

    @abstractmethod
    async def _dispose(self) -> None:
        """Close every connection (called once, at the end of :meth:`run`)."""

    @abstractmethod
    def read_job(self, job_id: str, ended_since: datetime) -> tuple[Any, ...] | None: ...

    @abstractmethod
    def read_jobs(
        self, ended_since: datetime, status: str | None = None
    ) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def read_rows(self, table: str) -> list[dict[str, Any]]: ...

    def _tell_abandoned(self, jobs: list[Abandoned]) -> None:
        if self.abandoned is not None:
            self.abandoned(jobs)

    def poll_now(self) -> None:
        """Look at other processes' changes at the next round (a notification came)."""
        self._next_poll = 0.0
        self._wake()

    # -- producers: synchronous, on the loop ---------------------------------

    @property
    def backlog(self) -> int:
        return len(self._tasks) + len(self._jobs)

    def start(self) -> None:
        self._kick = anyio.Event()
        self._kick.set()

    def _wake(self) -> None:
        if self._kick is not None:
            self._kick.set()

    def save_task(self, task: Row) -> None:
        if not self._closed and task.id in self._adopted:
            self._tasks[task.id] = task
            self._wake()

    def delete_task(self, task_id: str) -> None:
        if not self._closed:
            self._adopted.discard(task_id)
            self._tasks[task_id] = None
            self._wake()

    def save_job(self, job: Row) -> None:
        if not self._closed:
            self._jobs[job.id] = job
            self._wake()

    def purge_jobs(self, ended_before: datetime) -> None:
        if not self._closed:
            self._purge_before = ended_before
            self._wake()

    def adopt(self, request: Adoption) -> None:
        if not self._closed:
            self._adoptions.append(request)
            self._wake()

    def mark_adopted(self, task_id: str) -> None:
        """``task_id`` is stored already (another process added it): save its changes."""
        self._adopted.add(task_id)

    def claim(self, request: Claim) -> None:
        if not self._closed:
            self._claims.append(request)
            self._wake()

    def cancel(self, request: Cancel) -> None:
        if not self._closed:
            self._cancels.append(request)
            self._wake()

    def replan(self, request: Replan) -> None:
        if not self._closed:
            self._replans.append(request)
            self._wake()

    async def flush(self) -> None:
        done = anyio.Event()
        self._flushes.append(done)
        self._wake()
        await done.wait()

    def close(self) -> None:
        self._closed = True
        self._wake()

    # -- the background task -------------------------------------------------

    def _urgent(self) -> bool:
        return bool(self._adoptions or self._claims or self._replans or self._cancels) or bool(
            self._flushes
        )

    async def run(self) -> None:
        assert self._kick is not None, "start() first"
        try:
            while True:
                if not self._urgent() and not self._closed:
                    wait = max(0.0, self._next_poll - time.monotonic())
                    with anyio.move_on_after(wait):
                        await self._kick.wait()
                    if not (self._claims or self._adoptions or self._flushes or self._closed):
                        await anyio.sleep(WRITE_DELAY)
                self._kick = anyio.Event()
                ok = await self._round()
                if self._closed and not (self.backlog or self._claims or self._replans):
                    return
                if ok:
                    self._retry = RETRY_FIRST_SECONDS
                else:
                    await anyio.sleep(self._retry)
                    self._retry = min(self._retry * 2, RETRY_MAX_SECONDS)
                    if self._closed:
                        return  # the database refuses: what is noted is lost, said so
        finally:
            with anyio.CancelScope(shield=True):
                await self._dispose()

    def _take(self) -> tuple[Batch, dict[str, Row | None], dict[str, Row], list[anyio.Event]]:
        """Everything gathered since the last round, as one batch (rendered now)."""
        adoptions, self._adoptions = self._adoptions, []
        tasks, self._tasks = self._tasks, {}
        jobs, self._jobs = self._jobs, {}
        flushes, self._flushes = self._flushes, []
        poll = self.polled is not None and time.monotonic() >= self._next_poll
        if poll:  # set now: a wake-up (poll_now) during this round asks for another
            self._next_poll = time.monotonic() + POLL_SECONDS
        worker = self._worker()
        now_us = int(time.time() * 1_000_000)
        lease_us = now_us + int(self._options.lease_seconds * 1_000_000)
        batch = Batch(
            adoptions=[(request, task_row(request.task)) for request in adoptions],
            claims=self._claims,
            replans=self._replans,
            cancels=self._cancels,
            task_rows=[saved_task_row(entry) for entry in tasks.values() if entry is not None],
            deleted=[task_id for task_id, entry in tasks.items() if entry is None],
            job_rows=[(*job.to_row(), *_job_extra(job, worker), lease_us) for job in jobs.values()],
            purge=self._purge_before,
            known=self.known() if poll else None,
            watched=self.watched() if poll else Watched(),
            worker=worker,
            now_us=now_us,
            lease_us=lease_us,
        )
        self._claims, self._replans, self._cancels = [], [], []
        self._purge_before = None
        return batch, tasks, jobs, flushes

    async def _round(self) -> bool:
        batch, tasks, jobs, flushes = self._take()
        try:
            adopted, results, polled = await self._commit(batch)
        except Exception as exc:
            self.failed_batches += 1
            if not self.failing:
                self._logger.warning(
                    "quiv could not reach its database %s (%s: %s); scheduling goes on from "
                    "memory, and claims and records are retried",
                    self.where,
                    type(exc).__name__,
                    exc,
                )
            self.failing = True
            # Put everything back, older first; a claim retried is decided afresh.
            self._adoptions[:0] = [request for request, _ in batch.adoptions]
            self._claims[:0] = batch.claims
            self._replans[:0] = batch.replans
            self._cancels[:0] = batch.cancels
            self._tasks = {**tasks, **self._tasks}
            self._jobs = {**jobs, **self._jobs}
            if self._purge_before is None:
                self._purge_before = batch.purge
            for event in flushes:
                event.set()
            if self.committed is not None:
                self.committed([])
            return False
        if self.failing:
            self._logger.warning("quiv reaches its database %s again", self.where)
        self.failing = False
        for (request, _), state in zip(batch.adoptions, adopted, strict=True):
            self._adopted.add(request.task.id)
            request.done(state)
        for asked, result in zip(batch.claims, results, strict=True):
            asked.done(result)
        if self.committed is not None:
            self.committed(list(jobs.values()))
        if polled is not None:
            assert self.polled is not None
            self.polled(polled)
        for event in flushes:
            event.set()
        return True
