"""The smallest useful FastAPI integration: the blocking ``Quiv`` in a lifespan.

Run it with ``uvicorn examples.fastapi_quickstart:app`` (uvicorn is not a quiv
dependency) and ``POST /heartbeat``. The scheduler is created at import time,
before any event loop exists; ``start()`` called inside the lifespan makes the
app's loop the place where progress callbacks run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from quiv import Quiv

scheduler = Quiv()

#: What ``on_progress`` has seen, newest last; a real app would broadcast instead.
received: list[dict[str, Any]] = []


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    scheduler.start()  # callbacks will run on the loop running this lifespan
    try:
        yield
    finally:
        scheduler.shutdown()  # signals running jobs and waits for them


app = FastAPI(lifespan=lifespan)


def ping(rounds: int, _progress_hook: Any) -> None:
    """A sync handler: it runs in a worker thread, so blocking is fine here."""
    for done in range(1, rounds + 1):
        _progress_hook(message="ping", done=done, total=rounds)


async def on_progress(**payload: Any) -> None:
    """Runs on the app's event loop: await websocket sends, metrics, and so on here."""
    received.append(payload)


@app.post("/heartbeat")
def start_heartbeat(interval: float = 30.0, rounds: int = 3) -> dict[str, str]:
    # A sync endpoint runs in FastAPI's threadpool; Quiv's methods work from any thread.
    task_id = scheduler.add_task(
        "heartbeat",
        ping,
        interval=interval,
        kwargs={"rounds": rounds},
        progress_callback=on_progress,
    )
    return {"task_id": task_id}


@app.get("/progress")
def progress() -> list[dict[str, Any]]:
    return received
