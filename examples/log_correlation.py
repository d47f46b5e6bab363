"""Per-job log correlation: every log line a job writes carries that job's id.

The handler puts its injected ``_job_id`` in a ``ContextVar`` for the length of
the run; a logging filter copies it onto each record. Helpers deep in the call
stack log as usual and never see the id. Each job runs in its own context (an
asyncio task, or a worker thread started with a copy of the context), so two
jobs running at once never see each other's id::

    python examples/log_correlation.py
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import anyio

from quiv import AsyncQuiv, Event, Job, Task

# --8<-- [start:correlation]
current_job_id: ContextVar[str] = ContextVar("current_job_id", default="-")


class JobIdFilter(logging.Filter):
    """Adds ``job_id`` to every record, so formats can use ``%(job_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__["job_id"] = current_job_id.get()
        return True


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    token = current_job_id.set(job_id)
    try:
        yield
    finally:
        current_job_id.reset(token)


logger = logging.getLogger("shop.catalog")


def parse_rows(source: str) -> int:
    """A helper that knows nothing about jobs, yet its lines are stamped too."""
    logger.info("parsing %s", source)
    return len(source)


async def import_catalog(source: str, _job_id: str) -> None:
    with job_context(_job_id):
        logger.info("import of %s started", source)
        await anyio.sleep(0.01)  # both jobs are in flight at once here
        rows = parse_rows(source)
        logger.info("import of %s stored %d rows", source, rows)


def export_catalog(target: str, _job_id: str) -> None:
    """The same pattern in a sync handler, which runs in a worker thread."""
    with job_context(_job_id):
        logger.info("export to %s started", target)
        parse_rows(target)


# --8<-- [end:correlation]


async def main() -> list[tuple[str, str]]:
    """Run two imports and one export at once; return ``(job_id, message)`` per line."""
    records: list[tuple[str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.__dict__["job_id"], record.getMessage()))
            print(self.format(record), flush=True)

    handler = Keep()
    handler.addFilter(JobIdFilter())
    handler.setFormatter(logging.Formatter("%(job_id).8s  %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        done = anyio.Event()
        finished: list[str] = []

        async def on_completed(event: Event, task: Task, job: Job) -> None:
            finished.append(job.id)
            if len(finished) == 3:
                done.set()

        async with AsyncQuiv() as scheduler:
            await scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
            for source in ("books.csv", "games.csv"):
                await scheduler.add_task(
                    "import", import_catalog, interval=1, run_once=True, args=(source,)
                )
            await scheduler.add_task(
                "export", export_catalog, interval=1, run_once=True, args=("all.json",)
            )
            with anyio.fail_after(10):
                await done.wait()
    finally:
        logger.removeHandler(handler)
    return records


if __name__ == "__main__":
    anyio.run(main)
