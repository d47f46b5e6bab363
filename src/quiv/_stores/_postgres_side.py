"""The PostgreSQL store's side thread: leases, wake-ups and synchronous reads.

asyncpg is asynchronous only, and the store must be read synchronously from
any thread (the history reads, as with SQLite) and must renew leases even
while the scheduler's loop is busy. So one daemon thread runs an event loop
of its own with three connections: one renews this process's leases every
``lease_renewal`` seconds and records the jobs of dead workers abandoned (as
the SQLite store's lease keeper does), one ``LISTEN``s for other processes'
changes and wakes the store, and one serves reads handed over from other
threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import asyncpg

from ._requests import Abandoned

__all__ = ["PostgresSide"]

REAP_SECONDS = 0.5
#: After losing the server: first wait before reconnecting, doubling up to the maximum.
RECONNECT_FIRST_SECONDS = 0.25
RECONNECT_MAX_SECONDS = 2.0
#: What a lost or restarted server raises (TimeoutError is an OSError).
_CONNECTION_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)
#: Seconds a read waits for the server before the caller is answered from memory
#: (a read may come from the scheduler's own loop, which must not stall for long).
READ_TIMEOUT = 2.0
#: Seconds a (re)connection attempt, or a statement of the lease keeper, may take:
#: a server that stops answering (a network cut) is noticed, not waited for.
CONNECT_TIMEOUT = 5.0
_LIVE = "status IN ('scheduled', 'running')"


class PostgresSide:
    """A thread with its own loop and connections to the database."""

    def __init__(
        self,
        dsn: str,
        worker: Callable[[], str],
        lease_seconds: float,
        renewal_seconds: float,
        channel: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self._dsn = dsn
        self._worker = worker
        self._lease = lease_seconds
        self._renewal = renewal_seconds
        self._channel = channel
        self._logger = logger
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leases: Any = None
        self._listener: Any = None
        self._reader: Any = None
        self._read_lock: asyncio.Lock | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        #: Until this monotonic time reads fail at once: the server did not answer the
        #: last one, or the lease keeper lost it (set from any thread; a float is atomic).
        self._unreachable_until = 0.0
        #: Called from this thread when another process announced a change.
        self.changed: Callable[[], None] | None = None
        #: Called from this thread with the jobs it recorded abandoned.
        self.abandoned: Callable[[list[Abandoned]], None] | None = None

    def start(self) -> None:
        """Start the thread and wait until its connections are open (raise if not)."""
        self._thread = threading.Thread(target=self._main, name="quiv-postgres", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def read(self, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
        """Run a read on this thread's connection and wait for its rows (any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopping is None or self._stopping.is_set():
            return []
        if time.monotonic() < self._unreachable_until:
            raise ConnectionError("the database did not answer lately; it is being reconnected")
        future = asyncio.run_coroutine_threadsafe(self._read(sql, parameters), loop)
        try:
            return future.result(READ_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            # Reads wait no more for a while: each would take READ_TIMEOUT again.
            self._unreachable_until = time.monotonic() + RECONNECT_MAX_SECONDS
            raise

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._read_lock is not None
        async with self._read_lock:
            try:
                if self._reader is None:
                    raise ConnectionError("not connected")
                rows = await self._reader.fetch(sql, *parameters)
            except _CONNECTION_ERRORS:  # the server came back since: one new connection
                if self._reader is not None:
                    self._reader.terminate()
                self._reader = None
                self._reader = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
                rows = await self._reader.fetch(sql, *parameters)
            return [tuple(row) for row in rows]

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._read_lock = asyncio.Lock()
        try:
            await self._connect()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            await self._close()
            return
        self._ready.set()
        try:
            await self._keep_leases()
        finally:
            await self._close()

    async def _connect(self) -> None:
        """Open the three connections (after an outage: afresh)."""
        self._leases = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        self._listener = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        await self._listener.add_listener(self._channel, self._notified)
        self._reader = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)

    async def _close(self) -> None:
        connections = (self._leases, self._listener, self._reader)
        self._leases = self._listener = self._reader = None
        for connection in connections:
            if connection is None:
                continue
            try:
                await connection.close(timeout=2)
            except Exception:
                connection.terminate()

    def _notified(self, *_args: Any) -> None:
        if self.changed is not None:
            self.changed()

    async def _keep_leases(self) -> None:
        """Renew leases and reap expired ones until stopped; reconnect after an outage.

        A lost server (a restart, a network cut) breaks the connections, not
        this thread: it says so once, reconnects with backoff, and then looks
        for the changes it may have missed while it could not listen.
        """
        assert self._stopping is not None
        next_renewal = 0.0
        broken_since: float | None = None
        retry = RECONNECT_FIRST_SECONDS
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                if broken_since is not None:
                    await self._close()
                    await self._connect()
                    self._logger.warning("quiv's lease keeper reaches its database again")
                    broken_since, retry = None, RECONNECT_FIRST_SECONDS
                    self._unreachable_until = 0.0
                    self._notified()  # changes announced meanwhile went unheard
                if now >= next_renewal:
                    await self._renew(self._leases)
                    next_renewal = now + self._renewal
                await self._reap(self._leases)
            except _CONNECTION_ERRORS as exc:
                if broken_since is None:
                    self._logger.warning(
                        "quiv could not renew or check job leases (%s: %s); it will reconnect",
                        type(exc).__name__,
                        exc,
                    )
                    broken_since = now
                else:
                    retry = min(retry * 2, RECONNECT_MAX_SECONDS)
                self._unreachable_until = math.inf  # until reconnected: reads fail at once
            wait = REAP_SECONDS if broken_since is None else retry
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def _renew(self, connection: Any) -> None:
        until = int((time.time() + self._lease) * 1_000_000)
        await connection.execute(
            f"UPDATE quiv_jobs SET lease_until = $1 WHERE worker = $2 AND {_LIVE} "
            "AND generation = 1",
            until,
            self._worker(),
            timeout=CONNECT_TIMEOUT,
        )

    async def _reap(self, connection: Any) -> None:
        now = time.time()
        now_us = int(now * 1_000_000)
        expired = f"{_LIVE} AND lease_until < $1"
        probe = f"SELECT 1 FROM quiv_jobs WHERE {expired} LIMIT 1"
        if await connection.fetchval(probe, now_us, timeout=CONNECT_TIMEOUT) is None:
            return
        ended = datetime.fromtimestamp(now, timezone.utc).isoformat(" ")
        async with connection.transaction():
            rows = await connection.fetch(
                f"SELECT id, task_id, attempt, retry_of, worker, started_at FROM quiv_jobs "
                f"WHERE {expired} FOR UPDATE SKIP LOCKED",
                now_us,
                timeout=CONNECT_TIMEOUT,
            )
            for row in rows:
                try:
                    duration = max(0.0, now - datetime.fromisoformat(row["started_at"]).timestamp())
                except (TypeError, ValueError):
                    duration = 0.0
                await connection.execute(
                    "UPDATE quiv_jobs SET status = 'failed', ended_at = $1, duration_seconds = $2, "
                    "error_message = $3, error_type = 'WorkerLost', lease_until = NULL, "
                    "generation = generation + 1 WHERE id = $4",
                    ended,
                    duration,
                    f"abandoned: worker {row['worker']} stopped",
                    row["id"],
                    timeout=CONNECT_TIMEOUT,
                )
                await connection.execute(
                    "UPDATE quiv_tasks SET next_due = $1 WHERE id = $2 AND next_due IS NULL "
                    "AND repeats = 1",
                    now_us,
                    row["task_id"],
                    timeout=CONNECT_TIMEOUT,
                )
        abandoned = [
            Abandoned(row["id"], row["task_id"], row["attempt"], row["retry_of"], row["worker"])
            for row in rows
        ]
        if abandoned:
            self._logger.warning(
                "quiv recorded %d job(s) abandoned: their worker stopped renewing its lease (%s)",
                len(abandoned),
                ", ".join(sorted({str(job.worker) for job in abandoned})),
            )
            if self.abandoned is not None:
                self.abandoned(abandoned)
