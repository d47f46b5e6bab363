"""Leases on running jobs in the durable SQLite store: renewed, and taken back from the dead.

A process holds a lease on each job it has claimed or is running (the job
row's ``lease_until``). A thread of its own renews them every ``lease_renewal``
seconds, with its own connection, so a busy event loop does not starve the
renewal. The same thread looks every ``REAP_SECONDS`` for jobs whose lease ran
out (their process was killed or frozen): it records them ``failed``
("abandoned: worker <host/pid> stopped") and moves their ``generation`` on.
Every write of a job row by its holder requires the first generation, so a
holder that comes back after losing its lease cannot overwrite the record
(fencing). The engine is told of each abandoned job, to retry it here if its
task has retries left.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._requests import Abandoned

__all__ = ["LeaseKeeper"]

#: Seconds between looks for expired leases: a dead worker's job is recorded
#: abandoned at most this long after its lease ran out.
REAP_SECONDS = 0.5
_LIVE = "status IN ('scheduled', 'running')"


def _utc_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(" ")


class LeaseKeeper:
    """The renewing and reaping thread of one store."""

    def __init__(
        self,
        path: Path,
        worker: Callable[[], str],
        lease_seconds: float,
        renewal_seconds: float,
        busy_timeout: float,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self._path = path
        self._worker = worker
        self._lease = lease_seconds
        self._renewal = renewal_seconds
        self._busy_timeout = busy_timeout
        self._logger = logger
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Called from this thread with the jobs just recorded abandoned.
        self.abandoned: Callable[[list[Abandoned]], None] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="quiv-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self._busy_timeout + 1)

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            next_renewal = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                try:
                    if now >= next_renewal:
                        self.renew(connection)
                        next_renewal = now + self._renewal
                    self.reap(connection)
                except sqlite3.Error as exc:
                    self._logger.warning(
                        "quiv could not renew or check job leases in %s: %s", self._path, exc
                    )
                self._stop.wait(REAP_SECONDS)
        finally:
            connection.close()

    def renew(self, connection: sqlite3.Connection) -> int:
        """Extend the lease of every live job this process holds; how many there were."""
        until = int((time.time() + self._lease) * 1_000_000)
        cursor = connection.execute(
            f"UPDATE quiv_jobs SET lease_until = ? WHERE worker = ? AND {_LIVE} AND generation = 1",
            (until, self._worker()),
        )
        return cursor.rowcount

    def reap(self, connection: sqlite3.Connection) -> list[Abandoned]:
        """Record every job whose lease ran out as abandoned; return them."""
        now = time.time()
        now_us = int(now * 1_000_000)
        expired = f"{_LIVE} AND lease_until < ?"
        if (
            connection.execute(
                f"SELECT 1 FROM quiv_jobs WHERE {expired} LIMIT 1", (now_us,)
            ).fetchone()
            is None
        ):
            return []
        connection.execute("BEGIN IMMEDIATE")
        try:
            rows = connection.execute(
                f"SELECT id, task_id, attempt, retry_of, worker, started_at FROM quiv_jobs "
                f"WHERE {expired}",
                (now_us,),
            ).fetchall()
            ended = _utc_text(now)
            for job_id, _task, _attempt, _retry_of, worker, started in rows:
                try:
                    duration = max(0.0, now - datetime.fromisoformat(started).timestamp())
                except (TypeError, ValueError):
                    duration = 0.0
                connection.execute(
                    "UPDATE quiv_jobs SET status = 'failed', ended_at = ?, duration_seconds = ?, "
                    "error_message = ?, error_type = 'WorkerLost', lease_until = NULL, "
                    "generation = generation + 1 WHERE id = ?",
                    (ended, duration, f"abandoned: worker {worker} stopped", job_id),
                )
                # fixed_interval=False waits for the end of a run that will never end.
                connection.execute(
                    "UPDATE quiv_tasks SET next_due = ? WHERE id = ? AND next_due IS NULL "
                    "AND repeats = 1",
                    (now_us, _task),
                )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        abandoned = [Abandoned(row[0], row[1], row[2], row[3], row[4]) for row in rows]
        if abandoned:
            self._logger.warning(
                "quiv recorded %d job(s) abandoned: their worker stopped renewing its lease (%s)",
                len(abandoned),
                ", ".join(sorted({str(job.worker) for job in abandoned})),
            )
            if self.abandoned is not None:
                self.abandoned(abandoned)
        return abandoned
