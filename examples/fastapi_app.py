"""A FastAPI app that starts jobs, lists them, cancels them and streams progress.

Run it with ``uvicorn examples.fastapi_app:app`` (uvicorn is not a quiv
dependency) and open http://127.0.0.1:8000/. The page connects to ``/ws`` and
shows every job event and progress message as it happens.

* ``POST /jobs`` adds a run-once task running :func:`crunch`; the job id
  arrives on the websocket with the ``job_started`` event.
* ``GET /tasks`` and ``GET /jobs`` return quiv's ``Task``/``Job`` models as JSON.
* ``POST /jobs/{job_id}/cancel`` sets the job's stop event.
* ``/quiv/`` is quiv's live dashboard (``quiv.web.dashboard``, the ``web``
  extra), with its actions on. It has no authentication of its own, so here it
  sits behind :class:`OperatorsOnly`: log in at ``/login`` with the token in
  ``QUIV_OPERATOR_TOKEN`` (or the one printed at start-up).

quiv's errors become HTTP errors in one exception handler (an unknown id is a
404, not a 500).

Several workers share one schedule when ``QUIV_STORE`` names a durable store::

    QUIV_STORE=sqlite:///$HOME/.local/state/myapp/quiv.db \\
        uvicorn examples.fastapi_app:app --workers 3

Every worker adds the recurring tasks with the same ``task_id``, so the store
keeps one of each and every due run happens in exactly one worker (the
``housekeeping`` task, every ``HOUSEKEEPING_SECONDS``, shows it: with
``HOUSEKEEPING_LOG`` set, each run appends a line with its worker's pid).
``GET /jobs`` answers from any worker with the jobs of all of them, including
each one's latest ``progress``; the websocket and the progress callbacks stay
with the worker that runs the job.

The scheduler is an ``AsyncQuiv`` on the app's own event loop, entered in the
lifespan, so handlers, listeners and progress callbacks all run on that loop.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from quiv import (
    AsyncQuiv,
    ConfigurationError,
    Event,
    Job,
    JobStatus,
    QuivError,
    SchedulerStateError,
    Stats,
    Task,
    TaskNotScheduledError,
)
from quiv.web import dashboard


# --8<-- [start:hub]
class ProgressHub:
    """The open websockets, and a way to send one message to all of them."""

    def __init__(self) -> None:
        self.sockets: set[WebSocket] = set()

    async def broadcast(self, message: dict[str, Any]) -> None:
        for socket in list(self.sockets):
            try:
                await socket.send_json(message)
            except (WebSocketDisconnect, RuntimeError):
                self.sockets.discard(socket)  # closed meanwhile

    async def on_job_event(self, event: Event, task: Task, job: Job) -> None:
        """A listener: runs on the app's loop, in the order things happened."""
        await self.broadcast(
            {"type": "job", "event": event.value, "task_id": task.id, "job_id": job.id}
        )

    async def on_progress(self, **payload: Any) -> None:
        """The progress callback of every crunch task."""
        await self.broadcast({"type": "progress", **payload})


# --8<-- [end:hub]


# --8<-- [start:handler]
async def crunch(
    steps: int,
    step_seconds: float,
    _job_id: str,
    _stop_event: threading.Event,
    _progress_hook: Callable[..., None],
) -> None:
    """An async handler: it shares the app's loop, so it must await, never block."""
    for step in range(1, steps + 1):
        if _stop_event.is_set():
            return  # cooperative cancellation: the job ends as "cancelled"
        await anyio.sleep(step_seconds)  # stands in for real async work
        _progress_hook(job_id=_job_id, step=step, steps=steps)


# --8<-- [end:handler]


# --8<-- [start:report]
async def build_report(
    sections: int,
    section_seconds: float,
    _stop_event: threading.Event,
    _progress_hook: Callable[..., None],
) -> None:
    """A recurring job whose progress, ``current`` of ``total``, the dashboard draws as a bar."""
    for section in range(1, sections + 1):
        if _stop_event.is_set():
            return
        await anyio.sleep(section_seconds)
        _progress_hook(current=section, total=sections, message=f"section {section}")


# --8<-- [end:report]


def housekeeping(log: str | None) -> None:
    """Recurring upkeep (a stand-in); with ``log``, one line per run says which worker ran it."""
    if log:
        with open(log, "a") as record:
            print(f"{time.time():.6f} pid={os.getpid()}", file=record)


# --8<-- [start:auth]
OPERATOR_COOKIE = "operator"


class OperatorsOnly:
    """ASGI middleware: only requests with the operator's cookie reach the wrapped app.

    Stands in for your app's own authentication (sessions, OAuth, a proxy):
    the dashboard has none, so whatever guards your admin pages must wrap it.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            sent = HTTPConnection(scope).cookies.get(OPERATOR_COOKIE, "")
            if not hmac.compare_digest(sent.encode(), self.token.encode()):
                if scope["type"] == "websocket":
                    await WebSocketClose(code=1008)(scope, receive, send)
                else:
                    await PlainTextResponse("log in at /login", 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# --8<-- [end:auth]


class CrunchRequest(BaseModel):
    steps: int = Field(default=20, ge=1, le=10_000)
    step_seconds: float = Field(default=0.5, gt=0, le=60)


# --8<-- [start:app]
def create_app(
    pool_size: int = 4, operator_token: str | None = None, store: str | None = None
) -> FastAPI:
    """Build the app; each call gets its own scheduler (handy in tests).

    ``store``: None keeps the schedule private to this process; a durable
    store's URL shares it with every other process using that store.
    """
    scheduler = AsyncQuiv(pool_size=pool_size, store=store)
    hub = ProgressHub()
    token = operator_token or os.environ.get("QUIV_OPERATOR_TOKEN") or secrets.token_urlsafe()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for event in Event:
            if event.is_job_event:
                await scheduler.add_listener(event, hub.on_job_event)
        # Two recurring reports, run at night or from the dashboard's "Run now".
        # Stable ids: with a shared store, every worker names the same task.
        for name, sections in (("nightly-report", 10), ("full-reindex", 600)):
            await scheduler.add_task(
                name,
                build_report,
                cron="0 3 * * *",
                kwargs={"sections": sections, "section_seconds": 0.2},
                task_id=name,
            )
        period = float(os.environ.get("HOUSEKEEPING_SECONDS", "300"))
        await scheduler.add_task(
            "housekeeping",
            housekeeping,
            interval=period,
            delay=period,  # first run one period after start-up
            args=(os.environ.get("HOUSEKEEPING_LOG"),),
            task_id="housekeeping",
        )
        if operator_token is None and "QUIV_OPERATOR_TOKEN" not in os.environ:
            logging.getLogger("uvicorn.error").warning("dashboard login token: %s", token)
        async with scheduler:  # starts with the app, shuts down gracefully with it
            yield

    app = FastAPI(title="quiv example", lifespan=lifespan)
    # --8<-- [start:mount]
    app.mount("/quiv", OperatorsOnly(dashboard(scheduler, allow_actions=True), token))
    # --8<-- [end:mount]

    @app.get("/login", response_class=HTMLResponse)
    async def login_form() -> str:
        return LOGIN_PAGE

    @app.post("/login")
    async def login(request: Request) -> RedirectResponse:
        form = parse_qs((await request.body()).decode())
        sent = form.get("token", [""])[0]
        if not hmac.compare_digest(sent.encode(), token.encode()):
            return RedirectResponse("/login", status_code=303)
        reply = RedirectResponse("/quiv/", status_code=303)
        reply.set_cookie(OPERATOR_COOKIE, token, httponly=True, samesite="strict", path="/quiv")
        return reply

    @app.exception_handler(QuivError)
    async def quiv_error(request: Request, exc: QuivError) -> JSONResponse:
        """quiv's errors as HTTP errors; each class also derives from a builtin."""
        if isinstance(exc, LookupError):  # TaskNotFoundError, JobNotFoundError
            status = 404
        elif isinstance(exc, ConfigurationError):  # bad input; nothing changed
            status = 422
        elif isinstance(exc, TaskNotScheduledError):  # a run-once task already ran
            status = 409
        elif isinstance(exc, SchedulerStateError):  # shutting down
            status = 503
        else:
            status = 500
        return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status)

    @app.post("/jobs")
    async def start_job(request: CrunchRequest) -> dict[str, str]:
        task_id = await scheduler.add_task(
            "crunch",
            crunch,
            interval=1,  # required, but a run-once task never repeats
            run_once=True,
            kwargs={"steps": request.steps, "step_seconds": request.step_seconds},
            progress_callback=hub.on_progress,
        )
        return {"task_id": task_id}

    @app.get("/tasks")
    async def list_tasks() -> list[Task]:
        return await scheduler.get_all_tasks(include_run_once=True)

    @app.get("/jobs")
    async def list_jobs(
        status: JobStatus | None = None,  # FastAPI answers 422 to a bad status
        limit: int | None = Query(None, ge=1, le=500),
        offset: int = Query(0, ge=0),
        newest_first: bool = False,
    ) -> list[Job]:
        return await scheduler.get_all_jobs(
            status, limit=limit, offset=offset, newest_first=newest_first
        )

    @app.get("/stats")
    async def stats() -> Stats:
        return await scheduler.stats()

    @app.post("/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str, force: bool = False) -> dict[str, Any]:
        await scheduler.get_job(job_id)  # an unknown id raises JobNotFoundError: 404
        return {"job_id": job_id, "cancelled": await scheduler.cancel_job(job_id, force=force)}

    @app.get("/jobs/page", response_class=HTMLResponse)
    async def job_page() -> str:
        return JOB_PAGE

    @app.websocket("/ws")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        hub.sockets.add(websocket)
        try:
            await websocket.send_json({"type": "hello"})  # from here on, nothing is missed
            while True:
                await websocket.receive_text()  # we only listen for the disconnect
        except WebSocketDisconnect:
            pass
        finally:
            hub.sockets.discard(websocket)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    return app


app = create_app(store=os.environ.get("QUIV_STORE"))
# --8<-- [end:app]

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>quiv jobs</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 48rem; }
  #log { font-family: monospace; white-space: pre-wrap; border: 1px solid #ccc;
         padding: .5rem; height: 24rem; overflow-y: auto; }
</style></head>
<body>
<h1>quiv jobs</h1>
<p>
  <button id="start">Start a job</button>
  <button id="cancel" disabled>Cancel the last job</button>
  <span id="status">connecting to the WebSocket...</span>
</p>
<div id="log"></div>
<script>
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const cancel = document.getElementById("cancel");
  let lastJob = null;
  const write = (text) => { log.textContent += text + "\\n"; log.scrollTop = log.scrollHeight; };
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.onopen = () => { status.textContent = "connected"; };
  socket.onclose = () => { status.textContent = "disconnected"; };
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "job") {
      write(`${data.event}  job ${data.job_id.slice(0, 8)}`);
      if (data.event === "job_started") { lastJob = data.job_id; cancel.disabled = false; }
    } else if (data.type === "progress") {
      write(`  step ${data.step}/${data.steps}  job ${data.job_id.slice(0, 8)}`);
    }
  };
  document.getElementById("start").onclick = () =>
    fetch("/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
                     body: JSON.stringify({ steps: 20, step_seconds: 0.5 }) });
  cancel.onclick = () => { if (lastJob) fetch(`/jobs/${lastJob}/cancel`, { method: "POST" }); };
</script>
</body>
</html>
"""

LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>quiv dashboard login</title></head>
<body style="font-family: system-ui, sans-serif; margin: 2rem">
<form method="post" action="/login">
  <label>Operator token <input name="token" type="password" autofocus></label>
  <button type="submit">Open the dashboard</button>
</form>
</body>
</html>
"""

# The job page: history ten at a time, newest first, the stats, a cancel button per live job.
JOB_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>quiv job history</title></head>
<body style="font-family: system-ui, sans-serif; margin: 2rem">
<h1>Jobs</h1>
<pre id="stats"></pre>
<table id="jobs"></table>
<p><button id="newer">newer</button> <button id="older">older</button></p>
<script>
  let offset = 0;
  const esc = (t) => String(t ?? "").replace(/[&<>]/g, (c) => `&#${c.charCodeAt(0)};`);
  async function load() {
    const stats = await (await fetch("/stats")).json();
    document.getElementById("stats").textContent =
      `pool ${stats.pool_in_use}/${stats.pool_size}, queued ${stats.jobs_queued}, ` +
      `lag p99 ${stats.start_lag_p99 ?? "-"} s, ended ${JSON.stringify(stats.jobs_ended)}`;
    const jobs = await (await fetch(`/jobs?limit=10&offset=${offset}&newest_first=true`)).json();
    document.getElementById("jobs").innerHTML = jobs.map((j) =>
      `<tr><td>${esc(j.task_name)}</td><td>${esc(j.status)}</td><td>${esc(j.started_at)}</td>` +
      `<td>${esc(j.error_message)}</td><td>${["scheduled", "running"].includes(j.status)
        ? `<button onclick="stop('${esc(j.id)}')">cancel</button>` : ""}</td></tr>`).join("");
  }
  async function stop(id) {
    await fetch(`/jobs/${id}/cancel?force=true`, { method: "POST" });
    load();
  }
  document.getElementById("newer").onclick = () => { offset = Math.max(0, offset - 10); load(); };
  document.getElementById("older").onclick = () => { offset += 10; load(); };
  load();
  setInterval(load, 2000);
</script>
</body>
</html>
"""
