"""The dashboard's routes: pages, the JSON API they share, the actions and the websocket.

The dashboard has no authentication of its own: whoever reaches its mount
sees every task and, with ``allow_actions=True``, can act on them. Put it
behind the host app's own (see the docs' "Protecting it").
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from quiv import (
    AsyncQuiv,
    ConfigurationError,
    Job,
    JobStatus,
    Quiv,
    QuivError,
    SchedulerStateError,
    Task,
    __version__,
)

from ._backend import Backend
from ._csrf import COOKIE, HEADER, CsrfGuard
from ._live import Hub, Outbox, job_json, jsonable, task_json

__all__ = ["dashboard"]

#: Jobs per page when the request does not say, and the most it may ask for.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
TASK_ACTIONS = ("run", "pause", "resume", "remove")

_STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


class BadFilter(Exception):
    """A query parameter the dashboard cannot use: answered with 422."""


def _status_for(exc: QuivError) -> int:
    if isinstance(exc, LookupError):  # TaskNotFoundError, JobNotFoundError
        return 404
    if isinstance(exc, ConfigurationError):
        return 422
    if isinstance(exc, SchedulerStateError):  # closed, closing, or the wrong loop
        return 503
    return 409  # TaskNotScheduledError and the like: not possible in this state


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.2f} s"


def _arguments(task: Task) -> str:
    """A task's arguments as a call would show them: ``1, 'a', retries=3``."""
    parts = [_safe_repr(value) for value in task.args]
    parts += [f"{key}={_safe_repr(value)}" for key, value in task.kwargs.items()]
    return ", ".join(parts)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break the page
        return f"<{type(value).__name__}>"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("quiv.web", "templates"),
        autoescape=True,  # every page: names, arguments, payloads and errors are user data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["arguments"] = _arguments
    return env


def _page_filters(request: Request) -> tuple[JobStatus | None, str | None, int, int]:
    """``status``, ``task_id``, ``limit`` and ``offset`` from the query string.

    Raises:
        BadFilter: for an unknown status or a count out of range.
    """
    query = request.query_params
    status: JobStatus | None = None
    if query.get("status"):
        try:
            status = JobStatus(query["status"])
        except ValueError:
            names = ", ".join(s.value for s in JobStatus)
            raise BadFilter(f"status must be one of {names}, got {query['status']!r}") from None
    task_id = query.get("task_id") or None
    limit = _count(query.get("limit"), "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    offset = _count(query.get("offset"), "offset", 0, 0, None)
    return status, task_id, limit, offset


def _count(raw: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadFilter(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        top = "" if high is None else f" and at most {high}"
        raise BadFilter(f"{name} must be at least {low}{top}, got {value}")
    return value


Endpoint = Callable[[Request], Awaitable[Response]]


class _Dashboard:
    """The state behind one mounted dashboard: the scheduler, the live hub, the tokens."""

    def __init__(self, scheduler: AsyncQuiv | Quiv, allow_actions: bool, title: str) -> None:
        self.backend = Backend(scheduler)
        self.hub = Hub(self.backend)
        self.csrf = CsrfGuard()
        self.allow_actions = allow_actions
        self.title = title
        self.templates = _environment()
        self.static = {
            name: (resources.files("quiv.web").joinpath("static").joinpath(name).read_bytes(), kind)
            for name, kind in _STATIC.items()
        }

    # -- plumbing ---------------------------------------------------------------

    def _base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def _render(self, request: Request, template: str, code: int = 200, **context: Any) -> Response:
        cookie = request.cookies.get(COOKIE)
        token = cookie if cookie is not None and self.csrf.genuine(cookie) else self.csrf.issue()
        context.setdefault("page", "")
        context.setdefault("job_id", "")
        html = self.templates.get_template(template).render(
            title=self.title,
            base=self._base(request),
            csrf=token,
            allow_actions=self.allow_actions,
            version=__version__,
            statuses=[s.value for s in JobStatus],
            **context,
        )
        response = HTMLResponse(html, status_code=code)
        if token != cookie:
            response.set_cookie(
                COOKIE,
                token,
                path=self._base(request) + "/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        # The pages change with every event; a cached one would show stale state.
        response.headers["Cache-Control"] = "no-store"
        return response

    def page(self, handler: Callable[[Request], Awaitable[Response]]) -> Endpoint:
        """An HTML endpoint whose quiv errors and bad filters become error pages."""

        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except BadFilter as exc:
                return self._render(
                    request, "error.html", 422, heading="Bad filter", detail=str(exc)
                )
            except QuivError as exc:
                status = _status_for(exc)
                return self._render(
                    request, "error.html", status, heading=type(exc).__name__, detail=str(exc)
                )

        return endpoint

    def api(self, handler: Callable[[Request], Awaitable[Response]]) -> Endpoint:
        """A JSON endpoint whose quiv errors and bad filters become JSON errors."""

        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except BadFilter as exc:
                return _error(422, "BadFilter", str(exc))
            except QuivError as exc:
                return _error(_status_for(exc), type(exc).__name__, str(exc))

        return endpoint

    def action(self, handler: Callable[[Request], Awaitable[Response]]) -> Endpoint:
        """A POST endpoint: refused unless actions are allowed and the CSRF token matches."""

        async def guarded(request: Request) -> Response:
            if not self.allow_actions:
                return _error(403, "ActionsDisabled", "this dashboard was mounted read-only")
            if not self.csrf.matches(request.headers.get(HEADER), request.cookies.get(COOKIE)):
                return _error(403, "CsrfFailed", "missing or wrong CSRF token")
            return await handler(request)

        return self.api(functools.wraps(handler)(guarded))

    # -- pages ------------------------------------------------------------------

    async def tasks_page(self, request: Request) -> Response:
        rows = await self.backend.tasks_with_last_job()
        return self._render(request, "tasks.html", page="tasks", rows=rows, job_id="")

    async def jobs_page(self, request: Request) -> Response:
        status, task_id, limit, offset = _page_filters(request)
        jobs = await self.backend.jobs(status, task_id, limit + 1, offset)
        tasks = await self.backend.tasks_with_last_job()
        return self._render(
            request,
            "jobs.html",
            page="jobs",
            job_id="",
            jobs=jobs[:limit],
            more=len(jobs) > limit,
            tasks=[task for task, _ in tasks],
            status=status.value if status is not None else "",
            task_id=task_id or "",
            limit=limit,
            offset=offset,
        )

    async def job_page(self, request: Request) -> Response:
        job: Job = await self.backend.job(request.path_params["job_id"])
        return self._render(request, "job.html", page="job", job=job, job_id=job.id)

    async def stats_page(self, request: Request) -> Response:
        stats = await self.backend.stats()
        return self._render(request, "stats.html", page="stats", stats=stats, job_id="")

    async def static_file(self, request: Request) -> Response:
        found = self.static.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        body, kind = found
        return Response(body, media_type=kind, headers={"Cache-Control": "public, max-age=3600"})

    # -- the JSON API -----------------------------------------------------------

    async def api_tasks(self, request: Request) -> Response:
        rows = await self.backend.tasks_with_last_job()
        return JSONResponse(
            [
                {**task_json(task), "last_job": None if job is None else job_json(job)}
                for task, job in rows
            ]
        )

    async def api_jobs(self, request: Request) -> Response:
        status, task_id, limit, offset = _page_filters(request)
        jobs = await self.backend.jobs(status, task_id, limit, offset)
        return JSONResponse([job_json(job) for job in jobs])

    async def api_job(self, request: Request) -> Response:
        return JSONResponse(job_json(await self.backend.job(request.path_params["job_id"])))

    async def api_stats(self, request: Request) -> Response:
        stats = await self.backend.stats()
        return JSONResponse(jsonable(stats.model_dump(mode="json")))

    async def api_task_action(self, request: Request) -> Response:
        task_id, name = request.path_params["task_id"], request.path_params["action"]
        if name not in TASK_ACTIONS:
            return _error(
                404, "UnknownAction", f"no action {name!r}; try {', '.join(TASK_ACTIONS)}"
            )
        run = {
            "run": self.backend.run_now,
            "pause": self.backend.pause,
            "resume": self.backend.resume,
            "remove": self.backend.remove,
        }[name]
        await run(task_id)
        return JSONResponse({"task_id": task_id, "action": name})

    async def api_cancel(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        await self.backend.job(job_id)  # an unknown id is a 404, not "not cancelled"
        return JSONResponse({"job_id": job_id, "cancelled": await self.backend.cancel(job_id)})

    # -- live updates -------------------------------------------------------------

    async def live(self, websocket: WebSocket) -> None:
        """One page's live feed: every event and progress payload, or one job's."""
        token = websocket.query_params.get("token")
        if not self.csrf.matches(token, websocket.cookies.get(COOKIE)):
            # Browsers open websockets to any origin with the user's cookies; only a
            # page of ours knows the token.
            await websocket.close(code=1008)
            return
        outbox = Outbox(asyncio.get_running_loop(), websocket.query_params.get("job_id") or None)
        try:
            await self.hub.open(outbox)
        except QuivError:
            await websocket.close(code=1013)  # the scheduler has shut down: try again later
            return
        try:
            await websocket.accept()
            await websocket.send_json({"type": "hello"})
            async with anyio.create_task_group() as group:
                group.start_soon(self._send_all, websocket, outbox)
                # Nothing is expected from the page; this only notices that it left.
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass
                group.cancel_scope.cancel()
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the page went away mid-send
        finally:
            with anyio.CancelScope(shield=True):
                await self.hub.close(outbox)

    @staticmethod
    async def _send_all(websocket: WebSocket, outbox: Outbox) -> None:
        while True:
            for text in await outbox.take():
                await websocket.send_text(text)

    def routes(self) -> list[Route | WebSocketRoute]:
        page, api, action = self.page, self.api, self.action
        return [
            Route("/", page(self.tasks_page), name="tasks"),
            Route("/jobs", page(self.jobs_page), name="jobs"),
            Route("/jobs/{job_id}", page(self.job_page), name="job"),
            Route("/stats", page(self.stats_page), name="stats"),
            Route("/static/{name}", self.static_file, name="static"),
            Route("/api/tasks", api(self.api_tasks)),
            Route("/api/jobs", api(self.api_jobs)),
            Route("/api/jobs/{job_id}", api(self.api_job)),
            Route("/api/stats", api(self.api_stats)),
            Route("/api/tasks/{task_id}/{action}", action(self.api_task_action), methods=["POST"]),
            Route("/api/jobs/{job_id}/cancel", action(self.api_cancel), methods=["POST"]),
            WebSocketRoute("/ws", self.live),
        ]


def dashboard(
    scheduler: AsyncQuiv | Quiv, *, allow_actions: bool = False, title: str = "quiv"
) -> Starlette:
    """A Starlette app showing ``scheduler`` live; mount it in your app.

    ``app.mount("/quiv", dashboard(scheduler))`` serves the tasks, the job
    history, each job with its progress as it arrives, and the stats, plus a
    JSON API under ``/api``. Pages open one websocket each; the scheduler is
    only listened to while a page is open.

    The dashboard has **no authentication of its own**: protect the mount with
    the host app's (a middleware around it). With ``allow_actions=True`` its
    pages can run, pause, resume and remove tasks and cancel jobs, by POST
    requests that must carry the page's CSRF token.

    Args:
        scheduler: the ``AsyncQuiv`` (served on the loop it runs on) or ``Quiv``.
        allow_actions: offer and accept the actions; read-only when False.
        title: shown in the page titles and header.

    Raises:
        TypeError: if ``scheduler`` is neither, or ``allow_actions`` is not a bool.
    """
    if not isinstance(allow_actions, bool):
        raise TypeError(f"allow_actions must be True or False, got {allow_actions!r}")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {title!r}")
    state = _Dashboard(scheduler, allow_actions, title)
    app = Starlette(routes=state.routes())
    app.state.dashboard = state
    return app
