"""What the engine asks of a store, whichever database is behind it.

The engine only notes changes (synchronously, on the loop) and reads history
(synchronously, from any thread, or in a worker thread where a read may wait
on a network: ``reads_wait``); a background task of the store's own
(:meth:`StoreBackend.run`) does the database work. So no public method ever
waits on a database, and the default private store keeps its write-behind
fast path: nothing here adds an await or a round trip per job.

A durable store (:class:`SharedStore`) adds what several processes sharing one
database need: adopting a task's stored run state, claiming each due
occurrence once, and a periodic look at what the other processes changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Row", "StoreBackend"]


class Row(Protocol):
    """A live object a store persists: the registry's task and job entries."""

    id: str

    def to_row(self) -> tuple[Any, ...]: ...


class StoreBackend(Protocol):
    """The write-behind store: note changes now, commit them in the background."""

    failing: bool
    failed_batches: int
    #: Whether a read may wait on a network (for seconds, if the server is gone):
    #: then the async API makes it in a worker thread, never on the loop.
    reads_wait: bool
    snapshot: Callable[[], tuple[Iterable[Row], Iterable[Row]]] | None
    committed: Callable[[list[Any]], None] | None

    @property
    def path(self) -> Path | None: ...

    @property
    def backlog(self) -> int: ...

    def start(self) -> None: ...

    async def run(self) -> None: ...

    def save_task(self, task: Row) -> None: ...

    def delete_task(self, task_id: str) -> None: ...

    def save_job(self, job: Row) -> None: ...

    def purge_jobs(self, ended_before: datetime) -> None: ...

    async def flush(self) -> None: ...

    def close(self) -> None: ...

    async def read_rows(self, table: str) -> list[dict[str, Any]]: ...

    def read_job(self, job_id: str, ended_since: datetime) -> tuple[Any, ...] | None: ...

    def read_jobs(
        self, ended_since: datetime, status: str | None = None
    ) -> list[tuple[Any, ...]]: ...
