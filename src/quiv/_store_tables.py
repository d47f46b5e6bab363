"""The store's tables as SQLModel definitions: the database layer, loaded when first needed.

Importing SQLModel and SQLAlchemy costs more than the rest of quiv together, so
nothing imports this module at ``import quiv`` time: the store's writer loads it
in a worker thread when it is about to create its database (see ``_store``).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.dialects.sqlite.aiosqlite  # the driver, loaded here rather than on the loop
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel

from ._registry import JOB_COLUMNS, TASK_COLUMNS

__all__ = ["JOBS", "TASKS", "JobRecord", "TaskRecord", "create_async_engine", "metadata", "sa"]


class TaskRecord(SQLModel, table=True):
    """A task as persisted; ``args``/``kwargs`` are pickled."""

    __tablename__ = "quiv_tasks"

    id: str = Field(primary_key=True)
    task_name: str
    args: bytes
    kwargs: bytes
    interval_seconds: float | None = None
    fixed_interval: bool
    run_once: bool
    status: str
    next_run_at: datetime
    trigger: str
    cron: str | None = None
    run_at: datetime | None = None
    timezone: str
    jitter: float
    misfire_grace: float | None = None
    coalesce: bool
    max_instances: int
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    timeout: float | None = None


class JobRecord(SQLModel, table=True):
    """A job as persisted."""

    __tablename__ = "quiv_jobs"

    id: str = Field(primary_key=True)
    task_id: str
    task_name: str
    status: str
    started_at: datetime
    ended_at: datetime | None = Field(default=None, index=True)
    duration_seconds: float | None = None
    error_message: str | None = None
    error_type: str | None = None
    attempt: int
    retry_of: str | None = None


TASKS: sa.Table = TaskRecord.__table__  # type: ignore[attr-defined]
JOBS: sa.Table = JobRecord.__table__  # type: ignore[attr-defined]
metadata = SQLModel.metadata

# The store renders rows itself, in the registry's column order: both must agree.
for _table, _columns in ((TASKS, TASK_COLUMNS), (JOBS, JOB_COLUMNS)):
    _declared = tuple(column.name for column in _table.columns)
    if set(_declared) != set(_columns):
        raise RuntimeError(f"{_table.name}: row columns {_columns} do not match {_declared}")
