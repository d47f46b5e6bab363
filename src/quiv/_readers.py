"""Read-only SQLite connections, one per thread, for the stores' synchronous reads.

Reads (``get_job``, ``get_all_jobs``) come from any thread: the caller's, the
sync facade's, a handler's worker thread, the loop's. A thread keeps its own
connection, so reads never queue behind each other or behind the writer (WAL
lets them look while it writes). Worker threads come and go, so a connection
must not outlive its thread: it is held by the thread's locals and closed when
they go. Closing the store, or replacing its file, closes every one of them at
once and makes each thread open a fresh one at its next read.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

__all__ = ["ThreadReaders"]


class _Reader:
    """One thread's connection; closed when the thread ends (its locals go)."""

    __slots__ = ("__weakref__", "connection", "generation")

    def __init__(self, connection: sqlite3.Connection, generation: int) -> None:
        self.connection = connection
        self.generation = generation

    def __del__(self) -> None:
        self.connection.close()


class ThreadReaders:
    """Each thread's read-only connection to one database file."""

    def __init__(self, timeout: float, cache_kib: int | None = None) -> None:
        self._timeout = timeout
        self._cache_kib = cache_kib
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[_Reader] = weakref.WeakSet()
        self._generation = 0  # bumped by close(): older connections are not used again

    def connection(self, path: Path) -> sqlite3.Connection:
        """This thread's connection to ``path``; raises ``sqlite3.Error`` if it cannot open."""
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is not None and reader.generation == self._generation:
            return reader.connection
        import sqlite3  # only once a read comes: not at ``import quiv``

        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=self._timeout,
            check_same_thread=False,  # closed by whichever thread closes the store
        )
        if self._cache_kib is not None:
            connection.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        with self._lock:
            reader = _Reader(connection, self._generation)
            self._open.add(reader)
        self._local.reader = reader  # replaces (and so closes) an outdated one
        return connection

    def close(self) -> None:
        """Close every thread's connection; the next read in each thread opens a new one."""
        with self._lock:
            self._generation += 1
            readers = list(self._open)
        for reader in readers:
            reader.connection.close()
