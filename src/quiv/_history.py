"""Which jobs of a history a ``get_all_jobs`` call returns, apart from where they come from.

:func:`select` is pure: it takes the jobs in creation order, whatever holds
them (the live registry, rows read back from the store), and a key that reads
the three fields the filters look at, so a caller converts to ``Job`` models
only what is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Reversible
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TypeVar

from ._exceptions import ConfigurationError
from ._models import JobStatus

__all__ = ["HistoryQuery", "select"]

T = TypeVar("T")

#: ``(status, task_id, started_at)`` of one job.
Key = Callable[[T], tuple[JobStatus, str, datetime]]


def _aware(value: object, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{what} must be a datetime or None, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(f"{what} must be timezone-aware, got {value!r}")
    return value


def _count(value: object, what: str, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what} must be an int, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"{what} must be 0 or more, got {value!r}")
    return value


@dataclass(frozen=True)
class HistoryQuery:
    """The filters of ``get_all_jobs``, validated.

    ``since`` is inclusive and ``until`` exclusive, both on ``started_at``;
    ``offset`` and ``limit`` apply after filtering, in the chosen order.

    Raises:
        ConfigurationError: for a value of the wrong type or out of range.
    """

    status: JobStatus | None = None
    task_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    offset: int = 0
    newest_first: bool = False

    @classmethod
    def of(
        cls,
        status: object = None,
        task_id: object = None,
        since: object = None,
        until: object = None,
        limit: object = None,
        offset: object = 0,
        newest_first: object = False,
    ) -> HistoryQuery:
        wanted: JobStatus | None = None
        if status is not None:
            try:
                wanted = JobStatus(status)
            except ValueError:
                raise ConfigurationError(
                    f"status must be one of {', '.join(s.value for s in JobStatus)}, got {status!r}"
                ) from None
        if task_id is not None and not isinstance(task_id, str):
            raise ConfigurationError(f"task_id must be a str or None, got {task_id!r}")
        if not isinstance(newest_first, bool):
            raise ConfigurationError(f"newest_first must be True or False, got {newest_first!r}")
        offset_count = _count(offset, "offset", allow_none=False)
        assert offset_count is not None
        return cls(
            wanted,
            task_id,
            _aware(since, "since"),
            _aware(until, "until"),
            _count(limit, "limit", allow_none=True),
            offset_count,
            newest_first,
        )

    def matches(self, status: JobStatus, task_id: str, started_at: datetime) -> bool:
        if self.status is not None and status is not self.status:
            return False
        if self.task_id is not None and task_id != self.task_id:
            return False
        if self.since is not None and started_at < self.since:
            return False
        return self.until is None or started_at < self.until


def select(jobs: Reversible[T], query: HistoryQuery, key: Key[T]) -> list[T]:
    """The jobs of ``jobs`` (in creation order) that ``query`` returns, in its order.

    Stops reading as soon as ``offset + limit`` matches are found, so the first
    page of a long history costs a page, not the history.
    """
    ordered: Iterable[T] = reversed(jobs) if query.newest_first else jobs
    matching = (job for job in ordered if query.matches(*key(job)))
    stop = None if query.limit is None else query.offset + query.limit
    return list(islice(matching, query.offset, stop))
