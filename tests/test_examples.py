"""Every example under examples/ runs here, so the documentation cannot rot.

Each test waits for a concrete outcome under a deadline and compares whole
sequences. The web examples run under Starlette's ``TestClient``, which drives
the app's lifespan on a portal thread of its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from quiv import AsyncQuiv, Event, Job, SchedulerClosedError, Task

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` afresh, under a private module name."""
    module_name = f"quiv_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves annotations through it
    spec.loader.exec_module(module)
    return module


# -- hello.py (also the README's example) ------------------------------------------


def test_hello_prints_the_count_down_and_exits() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "hello.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "remaining: 3\nremaining: 2\nremaining: 1\n"
    assert result.stderr == ""


@pytest.mark.parametrize(
    "script",
    [
        "async_app.py",
        "cron_and_dates.py",
        "job_policies.py",
        "log_correlation.py",
        "scheduling_rules.py",
    ],
)
def test_async_scripts_run_and_exit_on_their_own(script: str) -> None:
    # A fresh interpreter catches what an in-process test cannot: a task or thread
    # left behind that keeps the event loop (or the process) from closing.
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout


# -- demo.py -------------------------------------------------------------------


def test_demo_tours_interval_async_progress_and_cancellation() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), "--seconds", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Each line is "<elapsed>s  [<thread>]  <message>"; keep the message.
    messages = [line.split("]  ", 1)[1] for line in result.stdout.splitlines()]
    report = [m for m in messages if "report" in m]
    assert [m.split(" (job")[0] for m in report] == [
        "job_started: report",
        "report page 1/5",
        "report page 2/5",
        "report page 3/5",
        "report page 4/5",
        "report page 5/5",
        "job_completed: report",
    ]
    export = [m.split(" (job")[0] for m in messages if "export" in m]
    assert export[0] == "job_started: export"
    assert export[1] == "cancelling export"
    assert export[2].startswith("export: stop requested after ")
    assert export[3] == "job_cancelled: export"
    assert "cancel_job returned True" in messages
    assert any(m.startswith("heartbeat (job ") for m in messages)
    assert "polled the 'news' feed" in messages
    assert messages[-1] == "scheduler shut down"


def test_demo_rejects_a_non_positive_duration() -> None:
    demo = load_example("demo")
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--seconds", "0"])
    assert exit_info.value.code == 2


# -- async_app.py ----------------------------------------------------------------


async def test_async_app_refreshes_pauses_exports_and_resumes() -> None:
    async_app = load_example("async_app")
    prices = ["  ACME: 101.5", "  GLOBEX: 47.25", "  INITECH: 12.0"]
    lines = await async_app.main(refreshes=2, interval=0.2)
    assert lines == [
        *prices,
        "job_completed: refresh",
        *prices,
        "job_completed: refresh",
        "refresh is paused",
        "job_completed: export",
        *prices,
        "job_completed: refresh",
        "4 jobs completed",
    ]


async def test_async_app_serves_inside_a_task_group() -> None:
    async_app = load_example("async_app")
    assert await async_app.serve_in_task_group() == "completed"


# -- log_correlation.py ----------------------------------------------------------


async def test_log_lines_carry_the_id_of_their_own_job() -> None:
    log_correlation = load_example("log_correlation")
    records: list[tuple[str, str]] = await log_correlation.main()
    by_job: dict[str, list[str]] = {}
    for job_id, message in records:
        by_job.setdefault(job_id, []).append(message)
    assert "-" not in by_job  # no line was logged outside a job
    assert sorted(by_job.values()) == [
        ["export to all.json started", "parsing all.json"],
        [
            "import of books.csv started",
            "parsing books.csv",
            "import of books.csv stored 9 rows",
        ],
        [
            "import of games.csv started",
            "parsing games.csv",
            "import of games.csv stored 9 rows",
        ],
    ]
    assert log_correlation.current_job_id.get() == "-"  # nothing leaked out


# -- scheduling_rules.py ---------------------------------------------------------


async def test_fixed_cadence_skips_the_slots_an_overrun_covered() -> None:
    rules = load_example("scheduling_rules")
    assert await rules.start_times(True, [3, 25]) == [0.0, 10.0, 40.0, 50.0, 60.0]


async def test_relative_cadence_counts_from_the_end_of_each_run() -> None:
    rules = load_example("scheduling_rules")
    assert await rules.start_times(False, [3, 25]) == [0.0, 13.0, 48.0, 59.0]


async def test_run_now_during_a_run_queues_one_extra_run() -> None:
    rules = load_example("scheduling_rules")
    assert await rules.run_now_while_running() == [
        "run 1 starts at 0s",
        "run_task_immediately -> 1",
        "run_task_immediately -> 1",
        "job_completed",
        "run 2 starts at 0s",
        "job_completed",
        "next run at 00:01:00",
    ]


async def test_pause_cancels_a_job_waiting_for_a_pool_slot() -> None:
    rules = load_example("scheduling_rules")
    assert await rules.pause_cancels_a_waiting_job() == [
        "job_started: hog (running)",
        "waiting for a pool slot: ['report']",
        "job_cancelled: report (its task was paused before it started)",
        "job_completed: hog (completed)",
    ]


# -- testing_with_quiv.py: the recipes are tests themselves ------------------------


async def test_recipe_virtual_clock() -> None:
    await load_example("testing_with_quiv").test_hourly_task_runs_on_the_hour()


async def test_recipe_cancel() -> None:
    await load_example("testing_with_quiv").test_cancelled_job_ends_cancelled()


async def test_recipe_failure() -> None:
    await load_example("testing_with_quiv").test_failure_is_recorded_not_raised()


def test_recipe_sync_facade() -> None:
    load_example("testing_with_quiv").test_sync_facade_with_threading_events()


# -- fastapi_app.py --------------------------------------------------------------


class Inbox:
    """Reads a test websocket on a thread, so that every wait has a deadline."""

    def __init__(self, websocket: Any) -> None:
        self._messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(websocket,), daemon=True)
        self._thread.start()

    def _read(self, websocket: Any) -> None:
        try:
            while True:
                self._messages.put(websocket.receive_json())
        except Exception:  # the session closed: nothing more to read
            return

    def until(self, last: Callable[[dict[str, Any]], bool], seconds: float = 10) -> list[Any]:
        """Messages up to and including the first for which ``last`` is true."""
        received: list[Any] = []
        while not received or not last(received[-1]):
            received.append(self._messages.get(timeout=seconds))
        return received

    def join(self, seconds: float = 10) -> None:
        self._thread.join(seconds)
        assert not self._thread.is_alive()


@contextmanager
def websocket_inbox(client: TestClient, path: str) -> Iterator[Inbox]:
    with client.websocket_connect(path) as websocket:
        inbox = Inbox(websocket)
        yield inbox
    inbox.join()


#: The recurring tasks the example adds at start-up, for its dashboard.
RECURRING = ("nightly-report", "full-reindex", "housekeeping")


def test_fastapi_app_streams_progress_lists_and_cancels() -> None:
    fastapi_app = load_example("fastapi_app")
    with TestClient(fastapi_app.create_app()) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "new WebSocket(" in page.text

        with websocket_inbox(client, "/ws") as inbox:
            assert inbox.until(lambda m: True) == [{"type": "hello"}]

            task_id = client.post("/jobs", json={"steps": 3, "step_seconds": 0.01}).json()[
                "task_id"
            ]
            messages = inbox.until(lambda m: m.get("event") == "job_completed")
            job_id = messages[0]["job_id"]
            assert messages == [
                {"type": "job", "event": "job_started", "task_id": task_id, "job_id": job_id},
                *(
                    {"type": "progress", "job_id": job_id, "step": step, "steps": 3}
                    for step in (1, 2, 3)
                ),
                {"type": "job", "event": "job_completed", "task_id": task_id, "job_id": job_id},
            ]
            # A finished run-once task is gone; its job stays in the history.
            assert [t["task_name"] for t in client.get("/tasks").json()] == list(RECURRING)
            assert [job["id"] for job in client.get("/jobs?status=completed").json()] == [job_id]

            long_task = client.post("/jobs", json={"steps": 10_000, "step_seconds": 0.01}).json()
            started = inbox.until(lambda m: m.get("event") == "job_started")[-1]
            assert started["task_id"] == long_task["task_id"]
            tasks = client.get("/tasks").json()
            assert [(t["id"], t["status"], t["run_once"]) for t in tasks if t["run_once"]] == [
                (long_task["task_id"], "running", True)
            ]
            reply = client.post(f"/jobs/{started['job_id']}/cancel")
            assert reply.json() == {"job_id": started["job_id"], "cancelled": True}
            tail = inbox.until(lambda m: m.get("type") == "job")
            assert all(m["type"] == "progress" for m in tail[:-1])
            assert tail[-1]["event"] == "job_cancelled"
            assert tail[-1]["job_id"] == started["job_id"]

            assert client.post(f"/jobs/{started['job_id']}/cancel").json()["cancelled"] is False
            statuses = [job["status"] for job in client.get("/jobs").json()]
            assert statuses == ["completed", "cancelled"]


def test_fastapi_app_job_page_pages_history_shows_stats_and_force_cancels() -> None:
    fastapi_app = load_example("fastapi_app")
    with TestClient(fastapi_app.create_app()) as client:
        assert "/jobs?limit=10&offset=" in client.get("/jobs/page").text
        with websocket_inbox(client, "/ws") as inbox:
            inbox.until(lambda m: True)
            for _ in range(3):
                client.post("/jobs", json={"steps": 1, "step_seconds": 0.01})
            for _ in range(3):
                inbox.until(lambda m: m.get("event") == "job_completed")
            everything = client.get("/jobs").json()
            page = client.get("/jobs", params={"limit": 2, "offset": 1, "newest_first": True})
            assert [j["id"] for j in page.json()] == [everything[1]["id"], everything[0]["id"]]
            stats = client.get("/stats").json()
            assert (stats["pool_size"], stats["jobs_ended"]["completed"]) == (4, 3)
            client.post("/jobs", json={"steps": 10_000, "step_seconds": 0.01})
            started = inbox.until(lambda m: m.get("event") == "job_started")[-1]
            reply = client.post(f"/jobs/{started['job_id']}/cancel", params={"force": True})
            assert reply.json() == {"job_id": started["job_id"], "cancelled": True}
            inbox.until(lambda m: m.get("event") == "job_cancelled")
        assert client.get("/jobs", params={"limit": 0}).status_code == 422


def test_fastapi_app_answers_bad_input_with_4xx() -> None:
    fastapi_app = load_example("fastapi_app")
    with TestClient(fastapi_app.create_app(), raise_server_exceptions=False) as client:
        bogus = client.get("/jobs", params={"status": "bogus"})
        assert bogus.status_code == 422
        assert bogus.json()["detail"][0]["loc"] == ["query", "status"]
        missing = client.post("/jobs/no-such-job/cancel")
        assert (missing.status_code, missing.json()["error"]) == (404, "JobNotFoundError")
        assert client.post("/jobs", content=b"not json").status_code == 422
        assert client.post("/jobs", json={"steps": 0}).status_code == 422
        assert [t["task_name"] for t in client.get("/tasks").json()] == list(RECURRING)


def test_fastapi_app_mounts_the_dashboard_behind_the_operator_cookie() -> None:
    fastapi_app = load_example("fastapi_app")
    with TestClient(fastapi_app.create_app(operator_token="letmein")) as client:
        assert client.get("/quiv/").status_code == 401
        assert client.get("/quiv/api/tasks").status_code == 401
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/quiv/ws") as ws:
            ws.receive_json()
        wrong = client.post("/login", data={"token": "guess"}, follow_redirects=False)
        assert (wrong.status_code, wrong.headers["location"]) == (303, "/login")
        right = client.post("/login", data={"token": "letmein"}, follow_redirects=False)
        assert (right.status_code, right.headers["location"]) == (303, "/quiv/")
        page = client.get("/quiv/")
        assert page.status_code == 200
        assert 'data-action="run"' in page.text  # mounted with its actions on
        names = [task["task_name"] for task in client.get("/quiv/api/tasks").json()]
        assert names == list(RECURRING)


# -- fastapi_quickstart.py -------------------------------------------------------


def test_fastapi_quickstart_delivers_progress_on_the_app_loop() -> None:
    quickstart = load_example("fastapi_quickstart")
    finished = threading.Event()
    with TestClient(quickstart.app) as client:

        def on_completed(event: Event, task: Task, job: Job) -> None:
            finished.set()

        quickstart.scheduler.add_listener(Event.JOB_COMPLETED, on_completed)
        reply = client.post("/heartbeat", params={"interval": 3600, "rounds": 3})
        assert reply.status_code == 200
        # Progress goes out before the job's final event, in the order it was made.
        assert finished.wait(timeout=10)
        assert client.get("/progress").json() == [
            {"message": "ping", "done": 1, "total": 3},
            {"message": "ping", "done": 2, "total": 3},
            {"message": "ping", "done": 3, "total": 3},
        ]
        [task] = quickstart.scheduler.get_all_tasks()
        assert task.id == reply.json()["task_id"]
    with pytest.raises(SchedulerClosedError):
        quickstart.scheduler.get_all_tasks()


# -- starlette_app.py ------------------------------------------------------------


def test_starlette_app_lifespan_runs_the_scheduler() -> None:
    starlette_app = load_example("starlette_app")
    scheduler = AsyncQuiv()
    app = starlette_app.create_app(scheduler)
    completed = threading.Event()
    finished: list[str] = []

    def on_completed(event: Event, task: Task, job: Job) -> None:
        finished.append(task.task_name)
        completed.set()

    with TestClient(app) as client:
        assert client.portal is not None
        client.portal.call(scheduler.add_listener, Event.JOB_COMPLETED, on_completed)
        reply = client.post("/tasks", json={"name": "prices", "interval": 3600, "delay": 3600})
        assert reply.status_code == 201
        task_id = reply.json()["task_id"]
        assert [t["status"] for t in client.get("/tasks").json()] == ["active"]

        assert client.post(f"/tasks/{task_id}/run").json() == {"queued": 1}
        assert completed.wait(timeout=10)
        assert finished == ["prices"]
        assert [j["status"] for j in client.get("/jobs").json()] == ["completed"]

        client.post(f"/tasks/{task_id}/pause")
        assert client.get(f"/tasks/{task_id}").json()["status"] == "paused"
        client.post(f"/tasks/{task_id}/resume", params={"delay": 3600})
        assert client.get(f"/tasks/{task_id}").json()["status"] == "active"

        assert client.delete(f"/tasks/{task_id}").status_code == 204
        missing = client.get(f"/tasks/{task_id}")
        assert missing.status_code == 404
        assert missing.json()["error"] == "TaskNotFoundError"
    # The lifespan ended, and the scheduler with it.
    with pytest.raises(SchedulerClosedError):
        anyio.run(scheduler.get_all_tasks)


def test_starlette_app_answers_bad_input_with_4xx() -> None:
    starlette_app = load_example("starlette_app")
    with TestClient(starlette_app.create_app(), raise_server_exceptions=False) as client:
        reply = client.post("/tasks", json={"name": "prices", "interval": 3600, "delay": 3600})
        task_id = reply.json()["task_id"]
        client.post(f"/tasks/{task_id}/pause")
        resumed = client.post(f"/tasks/{task_id}/resume", params={"delay": "0.5"})
        assert (resumed.status_code, resumed.json()) == (200, {"status": "active"})
        for delay, error in [("soon", None), ("-1", "ConfigurationError")]:
            refused = client.post(f"/tasks/{task_id}/resume", params={"delay": delay})
            assert refused.status_code == 400, delay
            if error is not None:
                assert refused.json()["error"] == error
        for body in [b"not json", b"[1, 2]", b'{"name": "no interval"}']:
            assert client.post("/tasks", content=body).status_code == 400, body
        bad_interval = client.post("/tasks", json={"name": "x", "interval": "often"})
        assert (bad_interval.status_code, bad_interval.json()["error"]) == (
            400,
            "ConfigurationError",
        )
        bogus = client.get("/jobs", params={"status": "bogus"})
        assert (bogus.status_code, bogus.json()["error"]) == (400, "ConfigurationError")
        unknown = client.post("/tasks/no-such-task/run")
        assert (unknown.status_code, unknown.json()["error"]) == (404, "HandlerNotRegisteredError")
        assert [t["id"] for t in client.get("/tasks").json()] == [task_id]


# -- job_policies.py -------------------------------------------------------------


async def test_job_policies_retry_time_out_and_force() -> None:
    policies = load_example("job_policies")
    jobs = await policies.retried()
    assert [(j.attempt, j.status, j.retry_of) for j in jobs] == [
        (1, "failed", None),
        (2, "failed", jobs[0].id),
        (3, "completed", jobs[0].id),
    ]
    assert jobs[0].error_message == "upstream not ready (call 1)"
    timed_out = await policies.timed_out()
    assert (timed_out.status, timed_out.error_type) == ("failed", "TimeoutError")
    assert "timed out" in (timed_out.error_message or "")
    forced = await policies.forced()
    assert forced.status == "cancelled"


def test_job_policies_stop_a_child_reach_the_loop_and_count() -> None:
    policies = load_example("job_policies")
    assert policies.stop_a_child_process().status == "cancelled"
    assert policies.report_from_a_thread() == ["half way", "sent"]
    stats = policies.busy_stats()
    assert (stats.pool_in_use, stats.jobs_running, stats.jobs_queued) == (2, 2, 1)


# -- cron_and_dates.py -----------------------------------------------------------


async def test_cron_examples_show_the_daylight_saving_rules() -> None:
    dates = load_example("cron_and_dates")
    runs = await dates.dst_examples()
    assert runs["30 2 * * * on 31 March"] == ["03:00 CEST"]
    assert runs["30 2 * * * on 27 October"] == ["02:30 CEST"]
    assert len(runs["0 * * * * on 31 March"]) == 23
    assert "02:00 CET" not in runs["0 * * * * on 31 March"]
    autumn = runs["0 * * * * on 27 October"]
    assert len(autumn) == 25
    assert autumn[2:4] == ["02:00 CEST", "02:00 CET"]


async def test_cron_examples_build_the_tasks_the_docs_describe() -> None:
    dates = load_example("cron_and_dates")
    report, reminder, nightly = await dates.weekday_report_and_a_reminder()
    assert report.trigger == "cron '0 3 * * 1-5' (Europe/Berlin)"
    assert (report.misfire_grace, report.jitter) == (600.0, 30.0)
    assert report.next_run_at.isoformat() == "2030-02-28T02:00:00+00:00"
    assert reminder.run_once and reminder.run_at is not None
    assert reminder.run_at.isoformat() == "2030-03-01T08:00:00+00:00"
    assert nightly.max_instances == 2
    assert nightly.timezone == "America/New_York"


# -- several workers: several_processes.py and fastapi_app.py -------------------------

HEARTBEAT = 0.4
#: Each example's module, and how its recurring task is told its period and record.
SHARED_SCHEDULE = {
    "several_processes": ("HEARTBEAT_SECONDS", "HEARTBEAT_FILE"),
    "fastapi_app": ("HOUSEKEEPING_SECONDS", "HOUSEKEEPING_LOG"),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.processes
@pytest.mark.parametrize("example", sorted(SHARED_SCHEDULE))
def test_each_due_run_happens_once_under_uvicorn_workers(example: str, tmp_path: Path) -> None:
    """``uvicorn examples.<example>:app --workers 3`` on a SQLite store: one run per due time."""
    private = tmp_path / "state"
    private.mkdir(mode=0o700)
    record = private / "runs.txt"
    period, log = SHARED_SCHEDULE[example]
    environment = dict(os.environ)
    environment.update(
        {
            "QUIV_STORE": f"sqlite:///{private / 'quiv.db'}",
            "QUIV_OPERATOR_TOKEN": "test",  # fastapi_app: no token printed by each worker
            log: str(record),
            period: str(HEARTBEAT),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), environment.get("PYTHONPATH", "")]),
        }
    )
    port = _free_port()
    module = f"examples.{example}:app"
    command = [sys.executable, "-m", "uvicorn", module]
    command += ["--workers", "3", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # all three workers up: each answers with every worker's jobs
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "uvicorn did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs", timeout=2) as reply:
                    if json.load(reply):
                        break
            except OSError:
                pass
            time.sleep(0.1)
        started = time.time() + 2.0  # the other workers finish starting meanwhile
        while time.time() < started + 3.0:
            time.sleep(0.1)
    finally:
        server.terminate()
        _, errors = server.communicate(timeout=30)
    lines = [line.split() for line in record.read_text().splitlines()]
    runs = sorted(float(when) for when, _ in lines if float(when) >= started)
    assert len(runs) >= 6, (runs, errors)
    steps = [round((when - runs[0]) / HEARTBEAT) for when in runs]
    assert steps == list(range(len(steps))), (runs, errors)  # none twice, none skipped
