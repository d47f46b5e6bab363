"""The store writes a batch as a few many-row statements: every row once, in order."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quiv import _store
from quiv._store import BATCH_LIMIT, _Table


def _rows(count: int, width: int) -> list[tuple[Any, ...]]:
    return [tuple(f"r{i}c{j}" for j in range(width)) for i in range(count)]


@pytest.mark.parametrize("limit", [999, 32766])
@given(count=st.integers(0, 3 * BATCH_LIMIT + 7), width=st.integers(1, 40))
def test_batches_cover_every_row_once_in_order_within_the_limit(
    limit: int, count: int, width: int
) -> None:
    original = _store._parameter_limit
    _store._parameter_limit = lambda: limit  # type: ignore[assignment]
    try:
        table = _Table("t", tuple(f"c{j}" if j else "id" for j in range(width)))
        rows = _rows(count, width)
        flat: list[Any] = []
        for statement, parameters in table.batches(rows):
            assert len(parameters) <= limit
            assert statement.count("?") == len(parameters)
            size = len(parameters) // width
            assert size == BATCH_LIMIT or size & (size - 1) == 0, size
            flat.extend(parameters)
    finally:
        _store._parameter_limit = original
    assert flat == [value for row in rows for value in row]


def test_many_row_upsert_inserts_and_updates_like_one_row_at_a_time() -> None:
    table = _Table("jobs", ("id", "status", "note"))
    with closing(sqlite3.connect(":memory:")) as connection:
        connection.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT, note TEXT)")
        first: list[tuple[str, str, str | None]] = [(f"j{i}", "running", None) for i in range(700)]
        for statement, parameters in table.batches(first):
            connection.execute(statement, parameters)
        second: list[tuple[str, str, str | None]] = [
            (f"j{i}", "completed", f"n{i}") for i in range(0, 700, 3)
        ]
        second.append(("new", "scheduled", None))
        for statement, parameters in table.batches(second):
            connection.execute(statement, parameters)
        stored = {row[0]: row for row in connection.execute("SELECT id, status, note FROM jobs")}
        order = [row[0] for row in connection.execute("SELECT id FROM jobs ORDER BY rowid")]
    expected = {row[0]: row for row in first}
    expected.update((row[0], row) for row in second)
    assert stored == expected
    assert order == [row[0] for row in first] + ["new"]  # an update keeps its row's place
