"""A Starlette app whose lifespan is the scheduler's own: ``lifespan=scheduler.lifespan``.

Run it with ``uvicorn examples.starlette_app:app`` (uvicorn is not a quiv
dependency). It exposes a small task-management API:

* ``POST /tasks`` with ``{"name": ..., "interval": ..., "delay": ...}`` adds a
  recurring task running :func:`refresh_cache`;
* ``GET /tasks``, ``GET /tasks/{id}``, ``DELETE /tasks/{id}``;
* ``POST /tasks/{id}/run``, ``/pause`` and ``/resume?delay=N``;
* ``GET /jobs?status=...``.

quiv's errors become HTTP errors in one exception handler, keyed on the
builtin each error class also derives from.
"""

from __future__ import annotations

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quiv import (
    AsyncQuiv,
    ConfigurationError,
    QuivError,
    SchedulerStateError,
    TaskNotScheduledError,
)


async def refresh_cache(name: str) -> None:
    """The work each task does; async, so it runs on the app's loop."""
    await anyio.sleep(0.01)  # stands in for fetching and storing something


# --8<-- [start:errors]
def quiv_error_response(request: Request, exc: Exception) -> Response:
    """Map quiv's errors to status codes; every class derives from a builtin too."""
    if isinstance(exc, LookupError):  # TaskNotFoundError, JobNotFoundError, ...
        status = 404
    elif isinstance(exc, ConfigurationError):  # a ValueError: the request was wrong
        status = 400
    elif isinstance(exc, TaskNotScheduledError):  # a run-once task already ran
        status = 409
    elif isinstance(exc, SchedulerStateError):  # shutting down or shut down
        status = 503
    else:
        status = 500
    return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status_code=status)


# --8<-- [end:errors]


def create_app(scheduler: AsyncQuiv | None = None) -> Starlette:
    """Build the app around ``scheduler`` (a new ``AsyncQuiv`` if none is given)."""
    # --8<-- [start:app]
    scheduler = scheduler if scheduler is not None else AsyncQuiv()

    async def add_task(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:  # not JSON at all
            body = None
        if not isinstance(body, dict) or "name" not in body or "interval" not in body:
            raise HTTPException(400, 'send {"name": str, "interval": seconds, "delay": seconds}')
        task_id = await scheduler.add_task(
            body["name"],
            refresh_cache,
            interval=body["interval"],
            delay=body.get("delay", 0),
            args=(body["name"],),
        )
        return JSONResponse({"task_id": task_id}, status_code=201)

    async def list_tasks(request: Request) -> Response:
        tasks = await scheduler.get_all_tasks()
        return JSONResponse([task.model_dump(mode="json") for task in tasks])

    async def get_task(request: Request) -> Response:
        task = await scheduler.get_task(request.path_params["task_id"])
        return JSONResponse(task.model_dump(mode="json"))

    async def delete_task(request: Request) -> Response:
        await scheduler.remove_task(request.path_params["task_id"])
        return Response(status_code=204)

    async def run_now(request: Request) -> Response:
        queued = await scheduler.run_task_immediately(request.path_params["task_id"])
        return JSONResponse({"queued": queued})

    async def pause(request: Request) -> Response:
        await scheduler.pause_task(request.path_params["task_id"])
        return JSONResponse({"status": "paused"})

    async def resume(request: Request) -> Response:
        try:
            delay = float(request.query_params.get("delay", "0"))
        except ValueError:
            raise HTTPException(400, "delay must be a number of seconds") from None
        await scheduler.resume_task(request.path_params["task_id"], delay)
        return JSONResponse({"status": "active"})

    async def list_jobs(request: Request) -> Response:
        jobs = await scheduler.get_all_jobs(request.query_params.get("status"))
        return JSONResponse([job.model_dump(mode="json") for job in jobs])

    app = Starlette(
        routes=[
            Route("/tasks", list_tasks, methods=["GET"]),
            Route("/tasks", add_task, methods=["POST"]),
            Route("/tasks/{task_id}", get_task, methods=["GET"]),
            Route("/tasks/{task_id}", delete_task, methods=["DELETE"]),
            Route("/tasks/{task_id}/run", run_now, methods=["POST"]),
            Route("/tasks/{task_id}/pause", pause, methods=["POST"]),
            Route("/tasks/{task_id}/resume", resume, methods=["POST"]),
            Route("/jobs", list_jobs, methods=["GET"]),
        ],
        exception_handlers={QuivError: quiv_error_response},
        lifespan=scheduler.lifespan,  # the scheduler runs exactly as long as the app
    )
    app.state.scheduler = scheduler
    return app
    # --8<-- [end:app]


app = create_app()
