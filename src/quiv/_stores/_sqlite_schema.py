"""The durable SQLite store's tables and its schema version.

Due times and leases are integers (microseconds since the epoch, UTC), so a
due time read back by another process compares equal to the one written; the
job columns the history shows are those of the private store, plus the worker
that ran the job, its latest progress, its lease and the lease's generation.
"""

from __future__ import annotations

from quiv._registry import JOB_COLUMNS

__all__ = ["JOB_EXTRA", "SCHEMA", "SCHEMA_VERSION", "SELECT_JOBS", "TASK_STORED"]

#: Raised whenever the tables change in a way older code could not read.
SCHEMA_VERSION = 1

#: The task columns the store writes from code (the definition); ``next_due`` and
#: ``paused`` are run state, written by claims, pause and resume only.
TASK_STORED = (
    "id",
    "task_name",
    "handler",
    "serializer",
    "args",
    "kwargs",
    "definition",
    "repeats",
    "max_instances",
    "max_retries",
)
JOB_EXTRA = ("worker", "progress")
#: The job columns history reads return (``job_from_row`` reads them back).
SELECT_JOBS = f"SELECT {', '.join((*JOB_COLUMNS, *JOB_EXTRA))} FROM quiv_jobs"


def schema(*, blob: str, big: str, job_head: str, job_columns: str) -> tuple[str, ...]:
    """The durable stores' tables, in a database's own type names (one list for both)."""
    return (
        "CREATE TABLE IF NOT EXISTS quiv_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS quiv_tasks (
        id TEXT PRIMARY KEY,
        task_name TEXT NOT NULL,
        handler TEXT NOT NULL,
        serializer TEXT NOT NULL,
        args {blob} NOT NULL,
        kwargs {blob} NOT NULL,
        definition TEXT NOT NULL,
        repeats INTEGER NOT NULL,
        max_instances INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        next_due {big},
        paused INTEGER NOT NULL DEFAULT 0
    )""",
        f"""CREATE TABLE IF NOT EXISTS quiv_claims (
        task_id TEXT NOT NULL,
        due {big} NOT NULL,
        job_id TEXT,
        outcome TEXT NOT NULL,
        worker TEXT NOT NULL,
        PRIMARY KEY (task_id, due)
    )""",
        f"""CREATE TABLE IF NOT EXISTS quiv_jobs (
        {job_head}id TEXT PRIMARY KEY,
        {job_columns},
        worker TEXT,
        progress TEXT,
        lease_until {big},
        generation INTEGER NOT NULL DEFAULT 1,
        cancel INTEGER NOT NULL DEFAULT 0
    )""",
        "CREATE INDEX IF NOT EXISTS quiv_jobs_live ON quiv_jobs (task_id, status, lease_until)",
        "CREATE INDEX IF NOT EXISTS quiv_jobs_ended ON quiv_jobs (ended_at)",
        "CREATE INDEX IF NOT EXISTS quiv_jobs_leases ON quiv_jobs (status, lease_until)",
    )


#: SQLite's columns take any type: the job columns are listed bare.
SCHEMA = schema(
    blob="BLOB",
    big="INTEGER",
    job_head="",
    job_columns=", ".join(name for name in JOB_COLUMNS if name != "id"),
)
