"""Attaching quiv to Starlette and FastAPI apps, through their real test client."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from _support import noop
from quiv import AsyncQuiv, Event, Job, Quiv, Task


def test_starlette_lifespan_runs_the_async_core() -> None:
    scheduler = AsyncQuiv()
    completed = threading.Event()

    def on_done(event: Event, task: Task, job: Job) -> None:
        completed.set()

    async def schedule(request: Request) -> JSONResponse:
        await scheduler.add_listener(Event.JOB_COMPLETED, on_done)
        task_id = await scheduler.add_task("web", noop, interval=60, run_once=True)
        return JSONResponse({"task_id": task_id})

    async def jobs(request: Request) -> JSONResponse:
        return JSONResponse([job.model_dump(mode="json") for job in await scheduler.get_all_jobs()])

    app = Starlette(
        routes=[Route("/schedule", schedule, methods=["POST"]), Route("/jobs", jobs)],
        lifespan=scheduler.lifespan,
    )
    states = [scheduler._state.value]
    with TestClient(app) as client:
        states.append(scheduler._state.value)
        task_id = client.post("/schedule").json()["task_id"]
        assert completed.wait(5)
        (job,) = client.get("/jobs").json()
        assert job["task_id"] == task_id
        assert job["status"] == "completed"
        assert job["started_at"].endswith("Z")
    states.append(scheduler._state.value)
    assert states == ["unopened", "open", "closed"]


def test_async_with_composes_inside_a_users_lifespan() -> None:
    scheduler = AsyncQuiv()
    order: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        order.append("app-startup")
        async with scheduler:
            order.append("scheduler-open")
            yield
        order.append("scheduler-closed")

    app = FastAPI(lifespan=lifespan)

    @app.get("/tasks")
    async def tasks() -> list[Task]:
        return await scheduler.get_all_tasks()

    with TestClient(app) as client:
        assert client.portal is not None  # Starlette types it optional: set inside the block
        app_task = client.portal.call(scheduler.add_task, "nightly", noop, 86400, 86400)
        (listed,) = client.get("/tasks").json()
        assert listed["id"] == app_task
        assert listed["next_run_at"].endswith("Z")
    assert order == ["app-startup", "scheduler-open", "scheduler-closed"]


def test_seed_readme_fastapi_example_verbatim(capsys: Any) -> None:
    # --- the seed README's example, unchanged -----------------------------
    from fastapi import FastAPI

    from quiv import Quiv

    # Create the Quiv scheduler
    scheduler = Quiv(timezone="UTC")

    # Wire it up in FastAPI's lifespan so that it starts and dies with your app
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        # Startup
        scheduler.start()
        yield
        # Shutdown
        scheduler.shutdown()

    # Create FastAPI app
    app = FastAPI(lifespan=lifespan)

    # Create a test function that we can later schedule to broadcast progress
    # sync/async - doesn't matter; quiv handles them all
    def ping(_progress_hook=None):  # type: ignore[no-untyped-def]
        for i in range(30):
            # do some work
            if _progress_hook:
                _progress_hook(message="ping", progress=i, total=30)

    # Now the actual progress callback function that we want to run on the main asyncio loop
    async def on_progress(**payload):  # type: ignore[no-untyped-def]
        # Replace with websocket broadcast, logging, metrics, etc.
        print("progress", payload)

    # Create the endpoint function that will schedule the task when triggered
    @app.post("/start-heartbeat")
    def start_heartbeat():  # type: ignore[no-untyped-def]
        task_id = scheduler.add_task(
            task_name="heartbeat",
            func=ping,
            interval=30,
            progress_callback=on_progress,
        )
        return {"task_id": task_id}

    # --- end of the example ----------------------------------------------
    finished = threading.Event()
    loops: list[Any] = []

    async def on_done(event: Event, task: Task, job: Job) -> None:
        import asyncio

        loops.append(asyncio.get_running_loop())
        finished.set()

    with TestClient(app) as client:
        scheduler.add_listener(Event.JOB_COMPLETED, on_done)
        task_id = client.post("/start-heartbeat").json()["task_id"]
        assert finished.wait(5)
        assert client.portal is not None
        app_loop = client.portal.call(_running_loop)
        assert scheduler.get_task(task_id).task_name == "heartbeat"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress")]
    assert lines == [
        f"progress {{'message': 'ping', 'progress': {i}, 'total': 30}}" for i in range(30)
    ]
    assert loops == [app_loop]  # callbacks ran on the app's own loop


async def _running_loop() -> Any:
    import asyncio

    return asyncio.get_running_loop()


def test_sync_facade_lifespan_method() -> None:
    scheduler = Quiv()
    app = FastAPI(lifespan=scheduler.lifespan)
    done = threading.Event()

    @app.post("/run")
    def run() -> dict[str, str]:
        scheduler.add_listener(Event.JOB_COMPLETED, lambda *a: done.set())
        return {"task_id": scheduler.add_task("r", noop, 60, run_once=True)}

    with TestClient(app) as client:
        client.post("/run")
        assert done.wait(5)
    assert scheduler._state.value == "closed"
