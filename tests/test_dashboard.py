"""quiv.web's routes through Starlette's test client: pages, JSON API, actions, live feed."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from quiv import AsyncQuiv, Job, JobStatus, Quiv
from quiv.web import dashboard
from quiv.web._live import OUTBOX_LIMIT, RESYNC, Outbox

EVIL = "<script>alert(1)</script>"
STATIC = Path(__file__).resolve().parent.parent / "src" / "quiv" / "web" / "static"


async def steps(count: int, _progress_hook: Callable[..., None]) -> None:
    for step in range(1, count + 1):
        await anyio.sleep(0.001)
        _progress_hook(current=step, total=count)


async def idle(_stop_event: threading.Event) -> None:
    while not _stop_event.is_set():  # noqa: ASYNC110 - a threading.Event cannot be awaited
        await anyio.sleep(0.005)


async def explode(**_: Any) -> None:
    raise ValueError("<b>boom</b>")


async def noop() -> None:
    pass


@contextmanager
def served(
    *, allow_actions: bool = True, scheduler: AsyncQuiv | None = None
) -> Iterator[tuple[TestClient, AsyncQuiv]]:
    scheduler = scheduler or AsyncQuiv(pool_size=4)
    app = Starlette(
        routes=[Mount("/quiv", dashboard(scheduler, allow_actions=allow_actions))],
        lifespan=scheduler.lifespan,
    )
    with TestClient(app, base_url="http://testserver") as client:
        yield client, scheduler


def call(client: TestClient, func: Callable[..., Any], *args: Any) -> Any:
    """Run a coroutine function of the scheduler on the app's loop."""
    assert client.portal is not None
    return client.portal.call(func, *args)


def token_of(client: TestClient) -> str:
    """The CSRF token a page carries (and the cookie it set)."""
    page = client.get("/quiv/")
    marker = 'data-csrf="'
    start = page.text.index(marker) + len(marker)
    return page.text[start : page.text.index('"', start)]


def add(client: TestClient, scheduler: AsyncQuiv, name: str, func: Any, **options: Any) -> str:
    async def adding() -> str:
        return await scheduler.add_task(name, func, **{"interval": 3600, "delay": 3600, **options})

    task_id: str = call(client, adding)
    return task_id


def run_and_wait(client: TestClient, scheduler: AsyncQuiv, task_id: str) -> Job:
    async def running() -> Job:
        await scheduler.run_task_immediately(task_id)
        return await scheduler.wait_for_task(task_id, 5)

    job: Job = call(client, running)
    return job


def wait_for_jobs(
    client: TestClient, scheduler: AsyncQuiv, task_id: str, status: JobStatus, count: int = 1
) -> list[Job]:
    """The task's jobs once ``count`` of them have ``status``."""

    async def waiting() -> list[Job]:
        with anyio.fail_after(5):
            # The history has no change notification to await: a short poll under a deadline.
            while len(jobs := await scheduler.get_all_jobs(status, task_id=task_id)) < count:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        return jobs

    found: list[Job] = call(client, waiting)
    return found


def until_end(socket: Any) -> list[dict[str, Any]]:
    """Messages up to the first final job event."""
    messages = [socket.receive_json()]
    while messages[-1].get("event") not in ("job_completed", "job_failed", "job_cancelled"):
        messages.append(socket.receive_json())
    return messages


def progress_values(messages: list[dict[str, Any]], key: str) -> list[Any]:
    return [m["payload"][key] for m in messages if m["type"] == "progress"]


# -- escaping -----------------------------------------------------------------


def test_names_arguments_and_errors_are_escaped_on_every_page() -> None:
    with served() as (client, scheduler):
        task_id = add(client, scheduler, EVIL, explode, kwargs={"note": "<img src=x onerror=1>"})
        job = run_and_wait(client, scheduler, task_id)
        assert job.status is JobStatus.FAILED
        pages = [
            client.get("/quiv/"),
            client.get("/quiv/jobs"),
            client.get(f"/quiv/jobs?task_id={task_id}"),
            client.get(f"/quiv/jobs/{job.id}"),
            client.get("/quiv/stats"),
            client.get("/quiv/jobs/" + EVIL),  # the unknown id is echoed in the error page
            client.get("/quiv/jobs?status=" + EVIL),
        ]
        assert [page.status_code for page in pages] == [200, 200, 200, 200, 200, 404, 422]
        for page in pages:
            assert "<script>alert" not in page.text
            assert "<img" not in page.text and "<b>boom" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].text
        assert "&lt;b&gt;boom&lt;/b&gt;" in pages[3].text
        assert "&lt;img src=x onerror=1&gt;" in pages[0].text
        # The JSON API carries the text as it is; the pages' script only ever writes it
        # with textContent (see the next test).
        [task] = client.get("/quiv/api/tasks").json()
        assert (task["task_name"], task["kwargs"]) == (EVIL, {"note": "<img src=x onerror=1>"})
        assert task["last_job"]["error_message"] == "<b>boom</b>"


def test_the_script_never_parses_data_as_html() -> None:
    script = (STATIC / "dashboard.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    assert "textContent" in script


# -- actions and CSRF -----------------------------------------------------------


def test_actions_need_the_pages_csrf_token_whatever_the_origin() -> None:
    with served() as (client, scheduler):
        task_id = add(client, scheduler, "t", noop)
        url = f"/quiv/api/tasks/{task_id}/pause"
        token = token_of(client)
        forged = token.split(".")[0] + "." + "0" * 64
        same_origin = {"Origin": "http://testserver"}
        refused = [
            client.post(url),
            client.post(url, headers=same_origin),
            client.post(url, headers={**same_origin, "X-CSRF-Token": "nonsense"}),
            client.post(url, headers={"X-CSRF-Token": forged}),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403, 403]
        assert {r.json()["error"] for r in refused} == {"CsrfFailed"}
        assert call(client, scheduler.get_task, task_id).status.value == "active"
        # Without the cookie the right header is not enough either.
        cookies = dict(client.cookies)
        client.cookies.clear()
        assert client.post(url, headers={"X-CSRF-Token": token}).status_code == 403
        client.cookies.update(cookies)

        ok = client.post(url, headers={"X-CSRF-Token": token})
        assert (ok.status_code, ok.json()) == (200, {"task_id": task_id, "action": "pause"})
        assert call(client, scheduler.get_task, task_id).status.value == "paused"
        assert client.post(
            url.replace("pause", "resume"), headers={"X-CSRF-Token": token}
        ).is_success
        # Resumed with no delay, the task runs at once: it may be caught mid-run.
        assert call(client, scheduler.get_task, task_id).status.value in ("active", "running")


def test_every_action_works_through_the_api() -> None:
    with served() as (client, scheduler):
        headers = {"X-CSRF-Token": token_of(client)}
        quick = add(client, scheduler, "quick", noop)
        slow = add(client, scheduler, "slow", idle)
        assert client.post(f"/quiv/api/tasks/{quick}/run", headers=headers).is_success
        wait_for_jobs(client, scheduler, quick, JobStatus.COMPLETED)
        assert client.post(f"/quiv/api/tasks/{slow}/run", headers=headers).is_success

        async def running_job() -> str:
            with anyio.fail_after(5):
                while not (jobs := await scheduler.get_all_jobs("running", task_id=slow)):  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            return jobs[0].id

        job_id = call(client, running_job)
        reply = client.post(f"/quiv/api/jobs/{job_id}/cancel", headers=headers)
        assert reply.json() == {"job_id": job_id, "cancelled": True}
        assert call(client, scheduler.wait_for_job, job_id, 5).status is JobStatus.CANCELLED
        again = client.post(f"/quiv/api/jobs/{job_id}/cancel", headers=headers)
        assert again.json() == {"job_id": job_id, "cancelled": False}
        assert client.post(f"/quiv/api/tasks/{slow}/remove", headers=headers).is_success
        assert [t["id"] for t in client.get("/quiv/api/tasks").json()] == [quick]


def test_actions_are_refused_and_not_offered_when_not_allowed() -> None:
    with served(allow_actions=False) as (client, scheduler):
        task_id = add(client, scheduler, "t", noop)
        page = client.get("/quiv/")
        assert 'data-actions="off"' in page.text and "data-action=" not in page.text
        headers = {"X-CSRF-Token": token_of(client)}
        for url in [f"/quiv/api/tasks/{task_id}/{a}" for a in ("run", "pause", "resume", "remove")]:
            reply = client.post(url, headers=headers)
            assert (reply.status_code, reply.json()["error"]) == (403, "ActionsDisabled")
        reply = client.post("/quiv/api/jobs/whatever/cancel", headers=headers)
        assert reply.status_code == 403
        assert [t["status"] for t in client.get("/quiv/api/tasks").json()] == ["active"]
        assert call(client, scheduler.get_all_jobs) == []


# -- the JSON API and paging --------------------------------------------------------


def test_jobs_are_paged_newest_first_and_filtered() -> None:
    with served() as (client, scheduler):
        first = add(client, scheduler, "first", noop)
        second = add(client, scheduler, "second", explode)
        for _ in range(4):
            run_and_wait(client, scheduler, first)
            run_and_wait(client, scheduler, second)
        everything = [job.id for job in call(client, scheduler.get_all_jobs)][::-1]
        assert len(everything) == 8
        pages = [
            [job["id"] for job in client.get(f"/quiv/api/jobs?limit=3&offset={o}").json()]
            for o in (0, 3, 6)
        ]
        assert pages == [everything[0:3], everything[3:6], everything[6:8]]
        failed = client.get("/quiv/api/jobs", params={"status": "failed"}).json()
        assert [job["task_id"] for job in failed] == [second] * 4
        of_first = client.get("/quiv/api/jobs", params={"task_id": first, "limit": 2}).json()
        assert [job["id"] for job in of_first] == everything[1:4:2]
        one = client.get(f"/quiv/api/jobs/{everything[0]}").json()
        assert (one["id"], one["status"], one["error_type"]) == (
            everything[0],
            "failed",
            "ValueError",
        )

        page = client.get("/quiv/jobs?limit=3&offset=3")
        assert page.text.count("<tr data-job-id=") == 3
        assert 'rel="prev"' in page.text and 'rel="next"' in page.text
        last = client.get("/quiv/jobs?limit=3&offset=6")
        assert last.text.count("<tr data-job-id=") == 2 and 'rel="next"' not in last.text

        stats = client.get("/quiv/api/stats").json()
        assert stats["jobs_ended"] == {"completed": 4, "cancelled": 0, "failed": 4, "missed": 0}
        assert "4 / 4" not in client.get("/quiv/stats").text  # nothing in use now
        assert "0 / 4 in use" in client.get("/quiv/stats").text


@pytest.mark.parametrize(
    "query",
    ["status=bogus", "limit=0", "limit=501", "limit=x", "offset=-1", "offset=1.5"],
)
def test_bad_filters_are_422_on_the_api_and_the_page(query: str) -> None:
    with served() as (client, _):
        api = client.get(f"/quiv/api/jobs?{query}")
        assert (api.status_code, api.json()["error"]) == (422, "BadFilter")
        assert client.get(f"/quiv/jobs?{query}").status_code == 422


def test_unknown_ids_are_404() -> None:
    with served() as (client, _):
        headers = {"X-CSRF-Token": token_of(client)}
        replies = [
            client.get("/quiv/api/jobs/nope"),
            client.get("/quiv/jobs/nope"),
            client.post("/quiv/api/jobs/nope/cancel", headers=headers),
            *(
                client.post(f"/quiv/api/tasks/nope/{action}", headers=headers)
                for action in ("run", "pause", "resume", "remove", "explode")
            ),
        ]
        assert [reply.status_code for reply in replies] == [404] * 8


def test_a_closed_scheduler_is_503_never_500() -> None:
    scheduler = AsyncQuiv()
    app = Starlette(routes=[Mount("/quiv", dashboard(scheduler, allow_actions=True))])
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = {"X-CSRF-Token": token_of(client)}

        async def open_and_close() -> str:
            async with scheduler:
                return await scheduler.add_task("t", noop, interval=60, delay=60)

        task_id = call(client, open_and_close)
        replies = [
            client.get("/quiv/"),
            client.get("/quiv/jobs"),
            client.get("/quiv/stats"),
            client.get("/quiv/jobs/x"),
            client.get("/quiv/api/tasks"),
            client.get("/quiv/api/jobs"),
            client.get("/quiv/api/jobs/x"),
            client.get("/quiv/api/stats"),
            client.post(f"/quiv/api/tasks/{task_id}/run", headers=headers),
            client.post("/quiv/api/jobs/x/cancel", headers=headers),
        ]
        assert [reply.status_code for reply in replies] == [503] * len(replies)
        assert replies[4].json()["error"] == "SchedulerClosedError"
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect(f"/quiv/ws?token={headers['X-CSRF-Token']}") as socket,
        ):
            socket.receive_json()
        assert closed.value.code == 1013


# -- the live feed ------------------------------------------------------------------


def test_the_websocket_needs_the_token() -> None:
    with served() as (client, _):
        token_of(client)
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/quiv/ws?token=wrong") as socket,
        ):
            socket.receive_json()
        assert refused.value.code == 1008


def test_a_page_hears_start_progress_and_end_in_order_and_listening_stops_after() -> None:
    with served() as (client, scheduler):
        token = token_of(client)
        task_id = add(client, scheduler, "steps", steps, kwargs={"count": 3})
        engine = scheduler._engine
        assert engine.progress_listeners == []  # nobody watching: nothing registered
        with client.websocket_connect(f"/quiv/ws?token={token}") as socket:
            assert socket.receive_json() == {"type": "hello"}
            call(client, scheduler.run_task_immediately, task_id)
            messages = until_end(socket)
            assert len(engine.progress_listeners) == 1
        # In order; payloads a page has not yet taken may be replaced by newer ones,
        # but the last one always arrives, before the job's end.
        assert (messages[0]["event"], messages[-1]["event"]) == ("job_started", "job_completed")
        assert {m["type"] for m in messages[1:-1]} == {"progress"}
        counts = progress_values(messages, "current")
        assert counts == sorted(set(counts)) and counts[-1] == 3
        assert {m["payload"]["total"] for m in messages[1:-1]} == {3}
        job_id = messages[0]["job"]["id"]
        assert {m.get("job_id", m.get("job", {}).get("id")) for m in messages} == {job_id}
        assert messages[-1]["job"]["status"] == "completed"
        assert messages[0]["task"]["id"] == task_id

        async def listeners_gone() -> None:
            with anyio.fail_after(5):
                while engine.progress_listeners or any(engine.listeners.values()):  # noqa: ASYNC110
                    await anyio.sleep(0.005)

        call(client, listeners_gone)


def test_the_job_page_feed_carries_only_its_job() -> None:
    with served() as (client, scheduler):
        token = token_of(client)
        slow = add(client, scheduler, "slow", idle)
        other = add(client, scheduler, "other", steps, kwargs={"count": 2})
        call(client, scheduler.run_task_immediately, slow)

        async def first_job() -> str:
            with anyio.fail_after(5):
                while not (jobs := await scheduler.get_all_jobs(task_id=slow)):  # noqa: ASYNC110
                    await anyio.sleep(0.005)
            return jobs[0].id

        job_id = call(client, first_job)
        with client.websocket_connect(f"/quiv/ws?token={token}&job_id={job_id}") as socket:
            assert socket.receive_json() == {"type": "hello"}
            run_and_wait(client, scheduler, other)  # none of this reaches the socket
            call(client, scheduler.cancel_job, job_id)
            message = socket.receive_json()
        assert (message["event"], message["job"]["id"]) == ("job_cancelled", job_id)


def test_the_dashboard_works_with_the_sync_facade() -> None:
    with Quiv(pool_size=2) as scheduler:
        task_id = scheduler.add_task("sync-steps", sync_steps, interval=3600, delay=3600)
        app = Starlette(routes=[Mount("/quiv", dashboard(scheduler, allow_actions=True))])
        with TestClient(app) as client:
            token = token_of(client)
            assert "sync-steps" in client.get("/quiv/").text
            with client.websocket_connect(f"/quiv/ws?token={token}") as socket:
                socket.receive_json()
                reply = client.post(
                    f"/quiv/api/tasks/{task_id}/run", headers={"X-CSRF-Token": token}
                )
                assert reply.is_success
                messages = until_end(socket)
            assert (messages[0]["event"], messages[-1]["event"]) == ("job_started", "job_completed")
            assert progress_values(messages, "percent") in ([50, 100], [100])
            [job] = client.get("/quiv/api/jobs").json()
            assert job["status"] == "completed"


def sync_steps(_progress_hook: Callable[..., None]) -> None:
    _progress_hook(percent=50)
    _progress_hook(percent=100)


# -- the per-page buffer ------------------------------------------------------------------


async def test_a_slow_page_gets_the_latest_progress_and_a_resync_not_a_growing_buffer() -> None:
    outbox = Outbox(asyncio_loop())
    outbox.offer("a", "started-a")
    for step in range(10_000):
        outbox.offer("a", json.dumps(step), progress=True)
    outbox.offer("b", "started-b")
    outbox.offer("a", "ended-a")
    assert await outbox.take() == ["started-a", "9999", "started-b", "ended-a"]
    for number in range(OUTBOX_LIMIT + 1):
        outbox.offer(str(number), "event")
    assert await outbox.take() == [RESYNC]
    outbox.offer("c", "after")
    assert await outbox.take() == ["after"]


def asyncio_loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()


def test_import_quiv_does_not_import_the_web_stack() -> None:
    code = (
        "import sys, quiv; "
        "assert not {'starlette', 'jinja2', 'quiv.web'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dashboard_rejects_what_it_cannot_serve() -> None:
    with pytest.raises(TypeError, match="AsyncQuiv or a Quiv"):
        dashboard(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="allow_actions"):
        dashboard(AsyncQuiv(), allow_actions="yes")  # type: ignore[arg-type]
