"""Whole-process behaviour: exiting without shutdown, and faults that could kill a process.

Each scenario is a small script run with ``sys.executable -c``. They are all
queued when the module's first test asks for one and run a few at a time (they
spend most of their time importing; too many at once on a small CI machine
would slow down the very exits being timed), and each is killed if it outlives
its deadline. A script
prints ``READY <wall time>`` just before its last statement; the exit latency is
measured from there to the moment the process ended.

Callbacks raising ``KeyboardInterrupt``/``SystemExit``/``CancelledError`` are run
here rather than in-process because, if they escape, asyncio re-raises them out
of the event loop and would abort the test session itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Seconds a scenario may run in all, import time included (several start at once).
SCENARIO_TIMEOUT = 12.0
#: Seconds from READY to the end of the process that count as "exits promptly".
#: Measured on a 2-core container, three scenarios at a time: 0.15-0.85 s (up to
#: ~1.8 s when all twelve ran at once). A hang is forever, and a forgotten
#: stubborn job would cost the default 30 s shutdown_timeout, so this bound
#: still tells them apart on a slower machine.
PROMPT_EXIT = 3.0
#: Scenarios running at the same time.
PARALLEL = 3
_slots = threading.BoundedSemaphore(PARALLEL)
#: How long a test may wait for its scenario, queueing included.
ALL_SCENARIOS_TIMEOUT = 60.0

PRELUDE = """
import json, logging, sys, threading, time
import anyio, quiv
logging.basicConfig(level=logging.CRITICAL)

def ready():
    print("READY", time.time(), flush=True)

def result(**values):
    print("RESULT", json.dumps(values), flush=True)
"""

SCENARIOS: dict[str, str] = {}

SCENARIOS["quiv-never-shut-down"] = """
ran = threading.Event()
scheduler = quiv.Quiv()
scheduler.start()
scheduler.add_task("tick", ran.set, interval=0.05)
assert ran.wait(5)
ready()
"""

SCENARIOS["quiv-never-shut-down-cooperative-job-running"] = """
started = threading.Event()
def cooperative(_stop_event):
    started.set()
    _stop_event.wait(60)
scheduler = quiv.Quiv()  # default shutdown_timeout: the job honours its stop event
scheduler.start()
scheduler.add_task("coop", cooperative, interval=60)
assert started.wait(5)
ready()
"""

SCENARIOS["quiv-never-shut-down-stubborn-job-running"] = """
started = threading.Event()
def stubborn():
    started.set()
    try:
        threading.Event().wait(1.5)  # ignores its stop event, but does return eventually
    finally:
        print("FINALLY", time.time(), flush=True)
scheduler = quiv.Quiv(shutdown_timeout=0.2)
scheduler.start()
scheduler.add_task("stubborn", stubborn, interval=60)
assert started.wait(5)
ready()
"""

SCENARIOS["quiv-never-shut-down-database-removed"] = """
scheduler = quiv.Quiv()
scheduler.start()
scheduler.add_task("idle", lambda: None, interval=3600, delay=3600)
store = scheduler._core._store
deadline = time.monotonic() + 5
while not (store.path is not None and store.path.exists()) and time.monotonic() < deadline:
    time.sleep(0.01)
assert store.path is not None and store.path.exists()
result(path=str(store.path))
ready()
"""

SCENARIOS["asyncquiv-stubborn-sync-job-abandoned"] = """
started = threading.Event()
def stubborn():
    started.set()
    threading.Event().wait(1.5)  # ignores its stop event, but does return eventually
async def main():
    async with quiv.AsyncQuiv(shutdown_timeout=0.2) as scheduler:
        await scheduler.add_task("stubborn", stubborn, interval=60)
        while not started.is_set():
            await anyio.sleep(0.01)
anyio.run(main)
ready()
"""

SCENARIOS["asyncquiv-shutdown-while-database-locked"] = """
import asyncio, sqlite3
async def main():
    before = asyncio.all_tasks()
    async with quiv.AsyncQuiv(pool_size=1, shutdown_timeout=0.2) as scheduler:
        store = scheduler._store
        await scheduler.add_task("first", lambda: None, interval=3600, delay=3600)
        await store.flush()
        locker = sqlite3.connect(store.path, timeout=0, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        await scheduler.add_task("tick", lambda: None, interval=0.01)
        await anyio.sleep(0.3)  # a write is now blocked on the lock
        began = time.monotonic()
    took = time.monotonic() - began
    leftover = sorted(t.get_coro().__qualname__ for t in asyncio.all_tasks() - before)
    locker.rollback()
    locker.close()
    result(shutdown_seconds=took, leftover_tasks=leftover)
anyio.run(main)
ready()
"""

_CALLBACK_TEMPLATE = """
import asyncio
EXC = {exc}
state = {{"completed": 0, "bad_calls": 0, "progress": 0, "escaped": None}}

def bad_listener(event, task, job):
    state["bad_calls"] += 1
    raise EXC("from a listener")

def good_listener(event, task, job):
    state["completed"] += 1

def bad_progress(**payload):
    state["progress"] += 1
    raise EXC("from a progress callback")

def handler(_progress_hook):
    _progress_hook(step=1)

def enough():
    return state["completed"] >= 3 and state["progress"] >= 3

async def run_async():
    async with quiv.AsyncQuiv(shutdown_timeout=1) as scheduler:
        await scheduler.add_listener(quiv.Event.JOB_COMPLETED, bad_listener)
        await scheduler.add_listener(quiv.Event.JOB_COMPLETED, good_listener)
        await scheduler.add_task("t", handler, interval=0.02, progress_callback=bad_progress)
        with anyio.move_on_after(5):
            while not enough():
                await anyio.sleep(0.01)
        state["alive_after"] = len(await scheduler.get_all_tasks())

def run_sync():
    with quiv.Quiv(shutdown_timeout=1) as scheduler:
        scheduler.add_listener(quiv.Event.JOB_COMPLETED, bad_listener)
        scheduler.add_listener(quiv.Event.JOB_COMPLETED, good_listener)
        scheduler.add_task("t", handler, interval=0.02, progress_callback=bad_progress)
        deadline = time.monotonic() + 5
        while not enough() and time.monotonic() < deadline:
            time.sleep(0.01)
        state["alive_after"] = len(scheduler.get_all_tasks())

thread_errors = []
threading.excepthook = lambda args: thread_errors.append(repr(args.exc_value))
try:
    if {is_async}:
        anyio.run(run_async)
    else:
        run_sync()
except BaseException as exc:
    state["escaped"] = repr(exc)
state["thread_errors"] = thread_errors
result(**state)
ready()
"""

CALLBACK_EXCEPTIONS = {
    "KeyboardInterrupt": "KeyboardInterrupt",
    "SystemExit": "SystemExit",
    "CancelledError": "asyncio.CancelledError",
}
for _name, _exc in CALLBACK_EXCEPTIONS.items():
    for _is_async in (True, False):
        _facade = "asyncquiv" if _is_async else "quiv"
        SCENARIOS[f"{_facade}-callbacks-raise-{_name}"] = _CALLBACK_TEMPLATE.format(
            exc=_exc, is_async=_is_async
        )


@dataclass
class Outcome:
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    ended_at: float = 0.0
    timed_out: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def ready_at(self) -> float | None:
        for line in self.stdout.splitlines():
            if line.startswith("READY "):
                return float(line.split()[1])
        return None

    @property
    def result(self) -> dict[str, object]:
        for line in self.stdout.splitlines():
            if line.startswith("RESULT "):
                value: dict[str, object] = json.loads(line[len("RESULT ") :])
                return value
        raise AssertionError(f"no RESULT line\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}")

    def describe(self) -> str:
        return (
            f"returncode={self.returncode} timed_out={self.timed_out}\n"
            f"stdout:\n{self.stdout}\nstderr (tail):\n{self.stderr[-3000:]}"
        )


def _launch(script: str) -> Outcome:
    """Queue ``script``; a thread runs it when a slot is free and fills in the outcome."""
    outcome = Outcome()
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")

    def run() -> None:
        with _slots:
            process = subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(script)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            try:
                stdout, stderr = process.communicate(timeout=SCENARIO_TIMEOUT)
            except subprocess.TimeoutExpired:
                outcome.timed_out = True
                process.kill()
                stdout, stderr = process.communicate()
            outcome.ended_at = time.time()
        outcome.returncode = process.returncode
        outcome.stdout, outcome.stderr = stdout, stderr
        outcome.done.set()

    threading.Thread(target=run, daemon=True).start()
    return outcome


@pytest.fixture(scope="module")
def scenarios() -> Iterator[dict[str, Outcome]]:
    launched = {name: _launch(script) for name, script in SCENARIOS.items()}
    yield launched
    for outcome in launched.values():
        outcome.done.wait(ALL_SCENARIOS_TIMEOUT)


def _finished(scenarios: dict[str, Outcome], name: str) -> Outcome:
    outcome = scenarios[name]
    assert outcome.done.wait(ALL_SCENARIOS_TIMEOUT), f"{name} never ran"
    return outcome


def _assert_exits_promptly(outcome: Outcome) -> None:
    assert not outcome.timed_out, f"the process hung at exit\n{outcome.describe()}"
    assert outcome.returncode == 0, outcome.describe()
    ready_at = outcome.ready_at
    assert ready_at is not None, outcome.describe()
    latency = outcome.ended_at - ready_at
    assert latency < PROMPT_EXIT, f"exit took {latency:.2f}s after READY\n{outcome.describe()}"


# -- exiting without shutdown ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "quiv-never-shut-down",
        "quiv-never-shut-down-cooperative-job-running",
    ],
)
def test_script_without_shutdown_exits_promptly(scenarios: dict[str, Outcome], name: str) -> None:
    _assert_exits_promptly(_finished(scenarios, name))


def test_script_without_shutdown_waits_for_running_sync_handler(
    scenarios: dict[str, Outcome],
) -> None:
    """The exit hook shuts the forgotten scheduler down (0.2 s grace), then waits for
    the handler still running in its (daemon) worker thread: its finally runs, as
    it would in a plain thread, and the process ends right after it."""
    outcome = _finished(scenarios, "quiv-never-shut-down-stubborn-job-running")
    _assert_exits_promptly(outcome)
    ready_at = outcome.ready_at
    lines = outcome.stdout.splitlines()
    finally_at = [float(line.split()[1]) for line in lines if line.startswith("FINALLY")]
    assert ready_at is not None and len(finally_at) == 1, outcome.describe()
    assert finally_at[0] - ready_at > 1.2, outcome.describe()
    assert outcome.ended_at >= finally_at[0], outcome.describe()


def test_script_without_shutdown_removes_its_database(scenarios: dict[str, Outcome]) -> None:
    """The database holds pickled arguments; it must not outlive the process."""
    outcome = _finished(scenarios, "quiv-never-shut-down-database-removed")
    _assert_exits_promptly(outcome)
    path = Path(str(outcome.result["path"]))
    assert not path.parent.exists(), f"{path.parent} left behind after exit"


def test_async_core_abandoned_sync_job_delays_exit_only_until_it_returns(
    scenarios: dict[str, Outcome],
) -> None:
    """Exit waits for an abandoned sync handler to return, and for nothing else.

    Python cannot stop a thread, and the worker threads ``anyio.to_thread`` starts
    are not daemons, so a handler that ignores its stop event keeps the
    interpreter alive until it returns (documented in docs/handlers.md). Shutdown
    itself has already returned by then, and quiv holds nothing else open.
    """
    _assert_exits_promptly(_finished(scenarios, "asyncquiv-stubborn-sync-job-abandoned"))


def test_async_core_shutdown_while_database_locked(scenarios: dict[str, Outcome]) -> None:
    """Shutdown with a write stuck on a locked database: bounded, and leaves nothing behind.

    No task of quiv's (or of its database driver's) may outlive the scheduler on
    the host loop; one that does can keep ``asyncio.run`` from ever returning.
    """
    outcome = _finished(scenarios, "asyncquiv-shutdown-while-database-locked")
    assert "RESULT" in outcome.stdout, outcome.describe()
    values = outcome.result
    assert values["leftover_tasks"] == [], values
    assert float(str(values["shutdown_seconds"])) < 0.2 + 1.5, values
    _assert_exits_promptly(outcome)


# -- callbacks raising BaseException -------------------------------------------------------


@pytest.mark.parametrize("facade", ["asyncquiv", "quiv"])
@pytest.mark.parametrize("exception", list(CALLBACK_EXCEPTIONS))
def test_callbacks_raising_base_exceptions_are_contained(
    scenarios: dict[str, Outcome], facade: str, exception: str
) -> None:
    """A listener or progress callback raising KeyboardInterrupt, SystemExit or
    CancelledError is logged like any other failure: delivery goes on, the
    scheduler keeps running, and nothing escapes into the host program."""
    outcome = _finished(scenarios, f"{facade}-callbacks-raise-{exception}")
    assert not outcome.timed_out, outcome.describe()
    values = outcome.result
    assert values["escaped"] is None, values
    assert values["thread_errors"] == [], values
    assert int(str(values["completed"])) >= 3, values
    assert int(str(values["progress"])) >= 3, values
    assert values.get("alive_after") == 1, values
    _assert_exits_promptly(outcome)
