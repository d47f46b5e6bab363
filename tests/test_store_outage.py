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
from quiv._stores import _postgres

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
        self._stalled: anyio.Event | None = None  # set: traffic flows again

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

    async def _pump(self, source: SocketStream, sink: SocketStream) -> None:
        async for chunk in source:
            while self._stalled is not None:
                await self._stalled.wait()
            await sink.send(chunk)
        await sink.send_eof()

    def cut(self) -> None:
        self._up = False
        for scope in list(self._scopes):
            scope.cancel()

    def stall(self) -> None:
        """Keep connections open but carry nothing: a server that stopped answering."""
        self._stalled = anyio.Event()

    def restore(self) -> None:
        self._up = True
        stalled, self._stalled = self._stalled, None
        if stalled is not None:
            stalled.set()


def _through(proxy_port: int, url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    user = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy_port}"))


def _proxy_for(url: str) -> Proxy:
    parts = urlsplit(url)
    return Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)


async def test_postgresql_unreachable_holds_claims_back_and_none_runs_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = store_url("postgresql", tmp_path)  # skipped without a server
    proxy = _proxy_for(url)
    runs.clear()
    # The proxy runs on a loop of its own, as a server would: the scheduler's loop
    # may block on a read for a moment, and must not be what forwards that read.
    with start_blocking_portal() as portal:
        proxied, port = portal.start_task(proxy.serve)
        through_proxy = _through(port, url)
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


async def test_a_silent_server_never_stalls_the_loop_on_a_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read the server does not answer waits in a worker thread, not on the loop;
    once one has timed out, the next ones fail at once until the server is back.
    A round of the store that the server does not answer fails, with a warning."""
    url = store_url("postgresql", tmp_path)  # skipped without a server
    monkeypatch.setattr(_postgres, "STATEMENT_TIMEOUT", 1.0)
    proxy = _proxy_for(url)
    runs.clear()
    with start_blocking_portal() as portal:
        proxied, port = portal.start_task(proxy.serve)
        async with AsyncQuiv(store=_through(port, url)) as scheduler:
            await scheduler.add_task("once", remember, interval=60, run_once=True, args=("x",))
            await _wait_for(lambda: runs == [("x", None)])
            portal.call(proxy.stall)
            answered = anyio.Event()
            found: list[int] = []

            async def read() -> None:
                found.append(len(await scheduler.get_all_jobs()))
                answered.set()

            async with anyio.create_task_group() as group:
                group.start_soon(read)
                await anyio.sleep(0.3)  # the loop runs while the read waits for the server
                assert not answered.is_set()
                with anyio.fail_after(DEADLINE):
                    await answered.wait()  # READ_TIMEOUT later, from memory, with a warning
            assert found == [1]
            assert "could not read its job history" in caplog.text
            began = anyio.current_time()
            assert len(await scheduler.get_all_jobs()) == 1
            assert anyio.current_time() - began < 1.0  # not READ_TIMEOUT again: at once
            # The store's poll round got no answer either: it failed, and said so.
            await _wait_for(lambda: "could not reach its database" in caplog.text)
            portal.call(proxy.restore)
            await scheduler._store.flush()
        proxied.cancel()
