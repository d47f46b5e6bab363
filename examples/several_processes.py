"""One schedule shared by every worker process of a FastAPI app.

Run it with several workers::

    QUIV_STORE=sqlite:///$HOME/.local/state/myapp/quiv.db \\
        uvicorn examples.several_processes:app --workers 3

Each worker process runs its own scheduler, and they all share the SQLite file
named by ``QUIV_STORE``: every worker adds the same tasks with the same
``task_id`` at start-up, and each due run of ``heartbeat`` is executed by
exactly one of them. ``GET /tasks`` and ``GET /jobs`` answer from whichever
worker gets the request, with the jobs of all of them.

The handler is a module-level function, so any worker can import it by name,
and its arguments are JSON. ``HEARTBEAT_FILE``, if set, gets one line per run
(the tests count them).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from quiv import AsyncQuiv, Job, Task


# --8<-- [start:handler]
def heartbeat(path: str | None) -> None:
    """Importable by ``examples.several_processes:heartbeat`` in every worker."""
    if path:
        with open(path, "a") as record:
            record.write(f"{time.time():.6f} {os.getpid()}\n")


# --8<-- [end:handler]


def default_store() -> str:
    """A file in a directory only this user can write to (the store checks)."""
    directory = Path.home() / ".local" / "state" / "quiv-example"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'quiv.db'}"


# --8<-- [start:app]
scheduler = AsyncQuiv(store=os.environ.get("QUIV_STORE") or default_store())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with scheduler:
        # Every worker adds the same task with the same id: the store keeps one,
        # with its next due time and history, across workers and restarts.
        await scheduler.add_task(
            "heartbeat",
            heartbeat,
            interval=float(os.environ.get("HEARTBEAT_SECONDS", "60")),
            args=(os.environ.get("HEARTBEAT_FILE"),),
            task_id="heartbeat",
        )
        yield


app = FastAPI(lifespan=lifespan)
# --8<-- [end:app]


@app.get("/tasks")
async def tasks() -> list[Task]:
    return await scheduler.get_all_tasks()


@app.get("/jobs")
async def jobs() -> list[Job]:
    return await scheduler.get_all_jobs()
