"""Exiting with sync handlers still running, and Ctrl-C, in real processes.

Both facades must treat a running sync handler like a plain Python thread: the
interpreter never kills it mid-run at exit (its ``finally`` runs), and a
second Ctrl-C ends a program held up by one that never returns. A second
Ctrl-C while shutdown waits out its grace period stops the wait at once; the
jobs it abandons are recorded ``cancelled`` with a message that says so.

Each scenario is a script run with ``sys.executable -c``; real SIGINTs are sent
with ``os.kill`` at fixed offsets after the script prints ``READY``. The
scenarios run a few at a time, started when the module's first test asks.
Time bounds are loose: each one only has to tell "waited for the handler" from
"did not", or "stopped waiting" from "waited out a 30 s grace period".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PARALLEL = 3
_slots = threading.BoundedSemaphore(PARALLEL)
#: Seconds a scenario may take after READY before it counts as hung (and is killed).
HANG = 20.0
#: Seconds a scenario may take to print READY (imports, several at once).
STARTUP = 20.0

PRELUDE = """
import json, logging, sys, threading, time
import anyio, quiv
logging.basicConfig(level=logging.WARNING, format="LOG %(message)s")

def ready():
    print("READY", flush=True)

def record(event, task, job):
    print("RECORD", json.dumps([job.status.value, job.error_message]), flush=True)

def handler(seconds):
    started.set()
    try:
        if seconds is None:
            threading.Event().wait()  # never returns, ignores its stop event
        else:
            time.sleep(seconds)  # ignores its stop event, returns eventually
    finally:
        print("FINALLY", flush=True)

started = threading.Event()

def run_quiv(seconds, grace):
    with quiv.Quiv(shutdown_timeout=grace) as scheduler:
        scheduler.add_listener(quiv.Event.JOB_CANCELLED, record)
        scheduler.add_task("stubborn", handler, interval=60, args=(seconds,))
        assert started.wait(5)
        ready()
        while True:
            time.sleep(0.05)

def run_async_quiv(seconds, grace):
    holder = {}
    async def main():
        async with quiv.AsyncQuiv(shutdown_timeout=grace) as scheduler:
            holder["scheduler"] = scheduler
            await scheduler.add_listener(quiv.Event.JOB_CANCELLED, record)
            await scheduler.add_task("stubborn", handler, interval=60, args=(seconds,))
            while not started.is_set():
                await anyio.sleep(0.01)
            ready()
            await anyio.sleep_forever()
    try:
        anyio.run(main)
    finally:
        # A forced teardown cancels the dispatcher too: read the record from memory.
        for job in holder["scheduler"]._engine.registry.jobs.values():
            print("MEMORY", json.dumps([job.status.value, job.error]), flush=True)
"""


@dataclass
class Scenario:
    script: str
    sigints: tuple[float, ...]  # seconds after READY
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    exit_after_ready: float | None = None
    hung: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def lines(self, prefix: str) -> list[str]:
        lines = self.stdout.splitlines()
        return [line[len(prefix) + 1 :] for line in lines if line.startswith(prefix)]

    def describe(self) -> str:
        return (
            f"returncode={self.returncode} hung={self.hung} "
            f"exit_after_ready={self.exit_after_ready}\n"
            f"stdout:\n{self.stdout}\nstderr (tail):\n{self.stderr[-3000:]}"
        )


SCENARIOS: dict[str, Scenario] = {
    # One Ctrl-C: shutdown waits 0.5 s, leaves the handler running; exit waits for it.
    "quiv-exit-waits-for-handler": Scenario("run_quiv(3.0, 0.5)", (0.3,)),
    "asyncquiv-exit-waits-for-handler": Scenario("run_async_quiv(3.0, 0.5)", (0.3,)),
    # A second Ctrl-C during a 30 s grace period: stop waiting at once.
    "quiv-second-ctrl-c-during-grace": Scenario("run_quiv(None, 30)", (0.3, 1.3)),
    "asyncquiv-second-ctrl-c-during-grace": Scenario("run_async_quiv(4.0, 30)", (0.3, 1.3)),
    # A handler that never returns holds the exit up until a second Ctrl-C.
    "quiv-second-ctrl-c-at-exit": Scenario("run_quiv(None, 0.3)", (0.3, 2.0)),
    "asyncquiv-second-ctrl-c-at-exit": Scenario("run_async_quiv(None, 0.3)", (0.3, 2.0)),
}


def _run(scenario: Scenario) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    source = textwrap.dedent(PRELUDE) + scenario.script + "\n"
    with _slots:
        process = subprocess.Popen(
            [sys.executable, "-c", source],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        out: list[str] = []
        ready_at: float | None = None
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("READY"):
                ready_at = time.monotonic()
                break
        if ready_at is not None:
            for offset in scenario.sigints:
                time.sleep(max(0.0, ready_at + offset - time.monotonic()))
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGINT)
        try:  # stderr is short until then: a full pipe cannot block the script
            rest, err = process.communicate(timeout=HANG)
        except subprocess.TimeoutExpired:
            scenario.hung = True
            process.kill()
            rest, err = process.communicate()
        if ready_at is not None:
            scenario.exit_after_ready = time.monotonic() - ready_at
    scenario.stdout = "".join(out) + rest
    scenario.stderr = err
    scenario.returncode = process.returncode
    scenario.done.set()


@pytest.fixture(scope="module")
def scenarios() -> Iterator[dict[str, Scenario]]:
    for scenario in SCENARIOS.values():
        threading.Thread(target=_run, args=(scenario,), daemon=True).start()
    yield SCENARIOS
    for scenario in SCENARIOS.values():
        scenario.done.wait(HANG + STARTUP + 10)


def _finished(scenarios: dict[str, Scenario], name: str) -> Scenario:
    scenario = scenarios[name]
    assert scenario.done.wait(2 * (HANG + STARTUP)), f"{name} never ran"
    assert scenario.exit_after_ready is not None, scenario.describe()
    assert not scenario.hung, scenario.describe()
    if name.startswith("asyncquiv"):
        if sys.version_info < (3, 11):
            # anyio.run on 3.10 reports a Ctrl-C as CancelledError (exit status 1) unless
            # a second one lands while its loop still runs, quiv or not: its backported
            # runner cannot uncancel the main task.
            assert scenario.returncode in (1, -signal.SIGINT), scenario.describe()
            ended_by = ("CancelledError", "KeyboardInterrupt")
            assert any(name in scenario.stderr for name in ended_by), scenario.describe()
        else:
            assert scenario.returncode == -signal.SIGINT, scenario.describe()
        return scenario  # asyncio and the interpreter print their own tracebacks there
    # Ended by the (first) KeyboardInterrupt, with one traceback under Quiv: nothing
    # chained from inside the facade's __exit__ or the exit hook.
    assert scenario.returncode == -signal.SIGINT, scenario.describe()
    assert scenario.stderr.count("Traceback (most recent call last)") <= 1, scenario.describe()
    assert "During handling of the above exception" not in scenario.stderr, scenario.describe()
    return scenario


GRACE_ENDED = "still running when the 0.5s shutdown grace period ended"
LEFT_RUNNING = "its thread was left running"


@pytest.mark.parametrize("facade", ["quiv", "asyncquiv"])
def test_exit_waits_for_running_sync_handler(scenarios: dict[str, Scenario], facade: str) -> None:
    """One Ctrl-C: shutdown gives up on the handler after 0.5 s and records so, but
    the process lives on until the handler returns (3 s), and its finally runs."""
    scenario = _finished(scenarios, f"{facade}-exit-waits-for-handler")
    assert scenario.lines("FINALLY") == [""], scenario.describe()
    assert scenario.exit_after_ready is not None and 2.9 <= scenario.exit_after_ready < 10
    assert scenario.lines("RECORD") == [
        f'["cancelled", "abandoned by shutdown: {GRACE_ENDED}; {LEFT_RUNNING}"]'
    ], scenario.describe()
    assert f"LOG quiv shutdown: 1 job(s) {GRACE_ENDED}: 'stubborn'" in scenario.stderr


def test_sync_facade_second_ctrl_c_stops_the_grace_wait(scenarios: dict[str, Scenario]) -> None:
    """Ctrl-C, then Ctrl-C again 1 s into a 30 s grace period: the job is abandoned
    and recorded at once, and the process exits without waiting for the handler
    (which never returns), with the first KeyboardInterrupt's traceback only."""
    scenario = _finished(scenarios, "quiv-second-ctrl-c-during-grace")
    assert scenario.exit_after_ready is not None and scenario.exit_after_ready < 1.3 + 3.0
    interrupted = "still running when shutdown was interrupted"
    assert scenario.lines("RECORD") == [
        f'["cancelled", "abandoned by shutdown: {interrupted}; {LEFT_RUNNING}"]'
    ], scenario.describe()
    assert f"LOG quiv shutdown: 1 job(s) {interrupted}: 'stubborn'" in scenario.stderr
    assert scenario.lines("FINALLY") == []  # left behind: it never returned


def test_async_core_second_ctrl_c_stops_the_grace_wait(scenarios: dict[str, Scenario]) -> None:
    """The same under ``anyio.run``: asyncio's second Ctrl-C cancels the shielded
    shutdown, which abandons and records the job instead of waiting 30 s; the
    interpreter still waits for the worker thread, an ordinary one, to return (4 s)."""
    scenario = _finished(scenarios, "asyncquiv-second-ctrl-c-during-grace")
    assert scenario.exit_after_ready is not None and 3.9 <= scenario.exit_after_ready < 10
    interrupted = "still running when shutdown was interrupted"
    assert scenario.lines("MEMORY") == [
        f'["cancelled", "abandoned by shutdown: {interrupted}; {LEFT_RUNNING}"]'
    ], scenario.describe()
    assert f"LOG quiv shutdown: 1 job(s) {interrupted}: 'stubborn'" in scenario.stderr
    assert scenario.lines("FINALLY") == [""], scenario.describe()


@pytest.mark.parametrize("facade", ["quiv", "asyncquiv"])
def test_second_ctrl_c_ends_exit_held_up_by_handler(
    scenarios: dict[str, Scenario], facade: str
) -> None:
    """A handler that never returns holds the exit up (after a 0.3 s grace period)
    until the second Ctrl-C, 2 s after the first, ends the program."""
    scenario = _finished(scenarios, f"{facade}-second-ctrl-c-at-exit")
    assert scenario.exit_after_ready is not None and 2.0 <= scenario.exit_after_ready < 5.0
    grace_ended = "still running when the 0.3s shutdown grace period ended"
    assert f"abandoned by shutdown: {grace_ended}; {LEFT_RUNNING}" in scenario.stdout
