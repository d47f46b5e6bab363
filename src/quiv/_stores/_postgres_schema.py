"""The PostgreSQL store's tables: the SQLite store's, in PostgreSQL's types."""

from __future__ import annotations

__all__ = ["SCHEMA", "SCHEMA_LOCK"]

#: Key of the advisory lock that serialises creating (or checking) the schema.
SCHEMA_LOCK = 0x71756976  # "quiv"

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS quiv_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS quiv_tasks (
        id TEXT PRIMARY KEY,
        task_name TEXT NOT NULL,
        handler TEXT NOT NULL,
        serializer TEXT NOT NULL,
        args BYTEA NOT NULL,
        kwargs BYTEA NOT NULL,
        definition TEXT NOT NULL,
        repeats INTEGER NOT NULL,
        max_instances INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        next_due BIGINT,
        paused INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS quiv_claims (
        task_id TEXT NOT NULL,
        due BIGINT NOT NULL,
        job_id TEXT,
        outcome TEXT NOT NULL,
        worker TEXT NOT NULL,
        PRIMARY KEY (task_id, due)
    )""",
    """CREATE TABLE IF NOT EXISTS quiv_jobs (
        seq BIGSERIAL,
        id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        task_name TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        duration_seconds DOUBLE PRECISION,
        error_message TEXT,
        error_type TEXT,
        attempt INTEGER NOT NULL,
        retry_of TEXT,
        worker TEXT,
        progress TEXT,
        lease_until BIGINT,
        generation INTEGER NOT NULL DEFAULT 1,
        cancel INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS quiv_jobs_live ON quiv_jobs (task_id, status, lease_until)",
    "CREATE INDEX IF NOT EXISTS quiv_jobs_ended ON quiv_jobs (ended_at)",
    "CREATE INDEX IF NOT EXISTS quiv_jobs_leases ON quiv_jobs (status, lease_until)",
)
