"""The PostgreSQL store's tables: the SQLite store's, in PostgreSQL's types."""

from __future__ import annotations

from ._sqlite_schema import schema

__all__ = ["SCHEMA", "SCHEMA_LOCK"]

#: Key of the advisory lock that serialises creating (or checking) the schema.
SCHEMA_LOCK = 0x71756976  # "quiv"

SCHEMA = schema(
    blob="BYTEA",
    big="BIGINT",
    job_head="seq BIGSERIAL,\n        ",  # creation order, for reading the history back
    job_columns=""",
        """.join(
        (
            "task_id TEXT NOT NULL",
            "task_name TEXT NOT NULL",
            "status TEXT NOT NULL",
            "started_at TEXT NOT NULL",
            "ended_at TEXT",
            "duration_seconds DOUBLE PRECISION",
            "error_message TEXT",
            "error_type TEXT",
            "attempt INTEGER NOT NULL",
            "retry_of TEXT",
        )
    ),
)
