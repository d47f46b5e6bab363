"""A PostgreSQL store that becomes unreachable, and comes back.

The scheduler talks to the server through a TCP proxy in this test, which can
cut every connection and refuse new ones (the server unreachable) and then
let them through again. Claims must wait for the server, a warning must name
the problem, nothing may run twice because of the outage, the records of jobs
that ended meanwhile must reach the database once it is back, and the store's
side thread (leases, LISTEN, reads) must reconnect rather than die.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from anyio.abc import SocketStream, TaskStatus
from anyio.from_thread import start_blocking_portal

from _stores_support import query, store_url
from quiv import AsyncQuiv

DEADLINE = 15.0
runs: list[tuple[str, Any]] = []


def remember(label: str) -> None:
    """A module-level handler: importable by its name."""
    runs.append((label, None))


def _beats() -> int:
    return sum(1 for name, _ in runs if name == "beat")


async def _wait_for(condition: Any) -> None:
    with anyio.fail_after(DEADLINE):
        while not condition():  # noqa: ASYNC110 - the database and a log, not events of ours
            await anyio.sleep(0.01)


class Proxy:
    """Forwards TCP connections to the server until told to cut them."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._up = True
        self._scopes: set[anyio.CancelScope] = set()

    async def serve(self, *, task_status: TaskStatus[int]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
            await listener.serve(self._forward)

    async def _forward(self, client: SocketStream) -> None:
        async with client:
            if not self._up:
                return  # refused: the connection closes at once
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    server = await anyio.connect_tcp(*self._target)
                    async with server, anyio.create_task_group() as group:
                        group.start_soon(self._pump, client, server)
                        group.start_soon(self._pump, server, client)
                finally:
                    self._scopes.discard(scope)

    @staticmethod
    async def _pump(source: SocketStream, sink: SocketStream) -> None:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()

    def cut(self) -> None:
        self._up = False
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self._up = True


async def test_postgresql_unreachable_holds_claims_back_and_none_runs_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = store_url("postgresql", tmp_path)  # skipped without a server
    parts = urlsplit(url)
    target = (parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy = Proxy(*target)
    runs.clear()
    # The proxy runs on a loop of its own, as a server would: the scheduler's loop
    # may block on a read for a moment, and must not be what forwards that read.
    with start_blocking_portal() as portal:
        proxied, port = portal.start_task(proxy.serve)
        netloc = parts.netloc.rsplit("@", 1)
        user = f"{netloc[0]}@" if len(netloc) == 2 else ""
        through_proxy = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))
        async with AsyncQuiv(store=through_proxy, lease_seconds=5, lease_renewal=1) as scheduler:
            await scheduler.add_task("beat", remember, interval=0.1, args=("beat",), task_id="beat")
            await _wait_for(lambda: _beats() >= 2)
            portal.call(proxy.cut)
            await _wait_for(lambda: "could not reach its database" in caplog.text)
            during = _beats()
            await anyio.sleep(0.5)  # five due times: none can be claimed, so none runs
            assert _beats() <= during + 1  # at most a job claimed just before the cut
            held_back = _beats()
            portal.call(proxy.restore)
            await _wait_for(lambda: _beats() >= held_back + 2)
            await _wait_for(lambda: "reaches its database" in caplog.text)
            # The side thread (leases, LISTEN, reads) reconnected too, rather than dying.
            await _wait_for(lambda: "lease keeper reaches its database again" in caplog.text)
            assert len(await scheduler.get_all_jobs("completed")) >= held_back
            assert "could not read its job history" not in caplog.text
            await scheduler.pause_task("beat")
            await scheduler._store.flush()
            total = _beats()
        proxied.cancel()
    claimed_and_completed = query(
        url,
        "SELECT COUNT(*) FROM quiv_claims JOIN quiv_jobs ON quiv_jobs.id = quiv_claims.job_id "
        "WHERE quiv_jobs.status = 'completed'",
    )
    # Every run had a claim of its own (none ran twice) and its final record arrived.
    assert claimed_and_completed == [(total,)]
