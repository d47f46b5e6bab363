"""Soak harness (issue #4): a mixed workload for minutes; do resources stay flat?

``python -m benchmarks.soak --minutes 10`` (``make soak``) runs, on one scheduler:

* recurring sync and async tasks, some at sub-second intervals, on fixed and
  relative cadences; one reports progress to an async callback;
* handlers that fail every run;
* long handlers that poll their stop event and are cancelled with ``cancel_job``;
* bursts of run-once jobs (a few of them failing);
* a task paused and resumed now and then.

By default it drives the blocking facade ``Quiv`` from a host asyncio loop in
the main thread, which is also ``main_loop`` (so listeners and callbacks cross
from the private loop to the host loop, as in a FastAPI app); blocking calls
go through worker threads. ``--facade async`` runs ``AsyncQuiv`` on the main
loop instead.

Every ``--sample-seconds`` it samples RSS, OS threads, open descriptors, the
history row count (``len(get_all_jobs())``) and jobs by status; it prints a
line every minute (and every ``--report-seconds`` if given). At the end it
prints a summary and whether each resource stayed flat after the warm-up
(by default the longer of 20 % of the run and retention + 15 s); the exit
status is 1 if one did not, or if a job went missing.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio

from quiv import AsyncQuiv, Event, Job, Quiv, Task

from ._harness import open_fds, quiet_logger, rss_mb, thread_count

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"


# -- handlers (module level: quiv pickles only args, but keep them importable) ----


def sync_work(ms: float) -> None:
    time.sleep(ms / 1000)


async def async_work(ms: float) -> None:
    await anyio.sleep(ms / 1000)


def sync_fail() -> None:
    raise ValueError("this handler always fails (soak)")


async def async_fail() -> None:
    raise RuntimeError("this handler always fails (soak)")


def sync_until_stopped(_stop_event: threading.Event) -> None:
    while not _stop_event.wait(0.005):
        pass


async def async_until_stopped(_stop_event: threading.Event) -> None:
    while not _stop_event.is_set():  # noqa: ASYNC110 - polling is what handlers do
        await anyio.sleep(0.005)


def sync_progress(steps: int, _progress_hook: Callable[..., None]) -> None:
    for step in range(steps):
        _progress_hook(step=step, of=steps)


def burst_job(n: int) -> None:
    if n % 50 == 49:
        raise ValueError(f"burst job {n} fails on purpose")


async def burst_job_async(n: int) -> None:
    if n % 50 == 24:
        raise ValueError(f"burst job {n} fails on purpose")


# -- talking to either facade from the host loop --------------------------------------


class Driver:
    """The scheduler's API as coroutines, whichever facade runs underneath."""

    def __init__(self, scheduler: AsyncQuiv | Quiv) -> None:
        self.scheduler = scheduler

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.scheduler, name)
        if isinstance(self.scheduler, AsyncQuiv):
            return await method(*args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))

    async def add_task(self, name: str, func: Callable[..., Any], **options: Any) -> str:
        task_id: str = await self._call("add_task", name, func, **options)
        return task_id

    async def cancel_job(self, job_id: str) -> bool:
        cancelled: bool = await self._call("cancel_job", job_id)
        return cancelled

    async def pause_task(self, task_id: str) -> None:
        await self._call("pause_task", task_id)

    async def resume_task(self, task_id: str) -> None:
        await self._call("resume_task", task_id)

    async def get_all_jobs(self) -> list[Job]:
        jobs: list[Job] = await self._call("get_all_jobs")
        return jobs

    async def add_listener(self, event: Event, callback: Callable[..., Any]) -> None:
        await self._call("add_listener", event, callback)


# -- the run --------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    threads: int
    fds: int
    history: int
    by_status: dict[str, int]
    ended: dict[str, int]  # cumulative, from the listeners
    progress: int


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.duration = float(args.minutes) * 60.0
        self.samples: list[Sample] = []
        self.started_ids: set[str] = set()
        self.ended: Counter[str] = Counter()
        self.progress = 0
        self.cancel_requests = 0
        self.cancellable: list[str] = []
        self.rng = random.Random(4)
        self.start = 0.0
        self.next_report = 0.0

    # listeners and callbacks run on the host loop
    def on_started(self, event: Event, task: Task, job: Job) -> None:
        self.started_ids.add(job.id)
        if task.task_name.startswith("soak-cancel"):
            self.cancellable.append(job.id)

    def on_ended(self, event: Event, task: Task, job: Job) -> None:
        self.ended[job.status.value] += 1
        self.started_ids.discard(job.id)

    async def on_progress(self, step: int, of: int) -> None:
        self.progress += 1

    async def run(self) -> int:
        args = self.args
        logger, counted = quiet_logger("soak")
        scheduler: AsyncQuiv | Quiv
        if args.facade == "async":
            scheduler = AsyncQuiv(
                pool_size=args.pool_size,
                history_retention_seconds=args.retention,
                logger=logger,
            )
        else:
            import asyncio

            scheduler = Quiv(
                pool_size=args.pool_size,
                history_retention_seconds=args.retention,
                logger=logger,
                main_loop=asyncio.get_running_loop(),
            )
        driver = Driver(scheduler)
        print(
            f"soak: {args.minutes:g} min, facade {args.facade}, pool {args.pool_size}, "
            f"retention {args.retention:g}s, warm-up {self.warmup():.0f}s",
            flush=True,
        )
        self.start = time.perf_counter()
        if isinstance(scheduler, AsyncQuiv):
            async with scheduler:
                await self._drive(driver)
        else:
            await anyio.to_thread.run_sync(scheduler.start)
            try:
                await self._drive(driver)
            finally:
                await anyio.to_thread.run_sync(scheduler.shutdown)
        await anyio.sleep(0.2)  # the last callbacks forwarded to this loop
        return self.finish(counted.counts, counted.first)

    def warmup(self) -> float:
        if self.args.warmup_seconds is not None:
            return float(self.args.warmup_seconds)
        return max(0.2 * self.duration, float(self.args.retention) + 15.0)

    async def _drive(self, driver: Driver) -> None:
        for event in (Event.JOB_COMPLETED, Event.JOB_FAILED, Event.JOB_CANCELLED):
            await driver.add_listener(event, self.on_ended)
        await driver.add_listener(Event.JOB_STARTED, self.on_started)
        recurring: list[str] = []
        specs: list[tuple[str, Callable[..., Any], float, bool, tuple[Any, ...]]] = [
            ("soak-sync-100ms", sync_work, 0.1, True, (2.0,)),
            ("soak-sync-250ms", sync_work, 0.25, True, (5.0,)),
            ("soak-sync-1s-relative", sync_work, 1.0, False, (20.0,)),
            ("soak-async-100ms", async_work, 0.1, True, (1.0,)),
            ("soak-async-500ms", async_work, 0.5, True, (10.0,)),
            ("soak-async-2s-relative", async_work, 2.0, False, (50.0,)),
            ("soak-fail-sync", sync_fail, 0.5, True, ()),
            ("soak-fail-async", async_fail, 0.7, True, ()),
        ]
        for name, func, interval, fixed, task_args in specs:
            recurring.append(
                await driver.add_task(
                    name, func, interval=interval, fixed_interval=fixed, args=task_args
                )
            )
        await driver.add_task(
            "soak-progress",
            sync_progress,
            interval=1.0,
            args=(200,),
            progress_callback=self.on_progress,
        )
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._bursts, driver)
            task_group.start_soon(self._cancels, driver)
            task_group.start_soon(self._pauses, driver, recurring[1])
            await self._sample_until_done(driver)
            task_group.cancel_scope.cancel()

    async def _bursts(self, driver: Driver) -> None:
        n = 0
        while True:
            await anyio.sleep(self.args.burst_every)
            for _ in range(self.args.burst_size):
                func = burst_job if n % 2 else burst_job_async
                await driver.add_task("soak-burst", func, interval=60, run_once=True, args=(n,))
                n += 1

    async def _cancels(self, driver: Driver) -> None:
        n = 0
        while True:
            func = sync_until_stopped if n % 2 else async_until_stopped
            await driver.add_task(f"soak-cancel-{n % 2}", func, interval=60, run_once=True)
            n += 1
            await anyio.sleep(0.3)
            pending, self.cancellable = self.cancellable, []
            for job_id in pending:
                if await driver.cancel_job(job_id):
                    self.cancel_requests += 1
            await anyio.sleep(0.7)

    async def _pauses(self, driver: Driver, task_id: str) -> None:
        while True:
            await anyio.sleep(10)
            await driver.pause_task(task_id)
            await anyio.sleep(2)
            await driver.resume_task(task_id)

    async def _sample_until_done(self, driver: Driver) -> None:
        every = self.args.sample_seconds
        report_every = self.args.report_seconds or 60.0
        self.next_report = report_every
        while True:
            await anyio.sleep(every)
            elapsed = time.perf_counter() - self.start
            jobs = await driver.get_all_jobs()
            sample = Sample(
                seconds=elapsed,
                rss_mb=rss_mb(),
                threads=thread_count(),
                fds=open_fds(),
                history=len(jobs),
                by_status=dict(Counter(job.status.value for job in jobs)),
                ended=dict(self.ended),
                progress=self.progress,
            )
            del jobs
            self.samples.append(sample)
            if elapsed + 1e-6 >= self.next_report or elapsed >= self.duration:
                self.report(sample)
                while self.next_report <= elapsed:
                    self.next_report += report_every
            if elapsed >= self.duration:
                return

    def report(self, sample: Sample) -> None:
        statuses = " ".join(f"{k}={v}" for k, v in sorted(sample.by_status.items()))
        ended = sum(sample.ended.values())
        print(
            f"[{sample.seconds / 60:5.1f} min] rss {sample.rss_mb:7.1f} MB  "
            f"threads {sample.threads:3d}  fds {sample.fds:3d}  "
            f"history {sample.history:6,d} ({statuses})  "
            f"jobs ended {ended:,} (completed {sample.ended.get('completed', 0):,}, "
            f"failed {sample.ended.get('failed', 0):,}, "
            f"cancelled {sample.ended.get('cancelled', 0):,})  progress {sample.progress:,}",
            flush=True,
        )

    # -- verdict -------------------------------------------------------------------

    def finish(self, log_counts: dict[str, int], first_logs: dict[str, str]) -> int:
        args = self.args
        warmup = self.warmup()
        during = [s for s in self.samples if s.seconds <= warmup]
        after = [s for s in self.samples if s.seconds > warmup]
        checks: list[tuple[str, bool, str]] = []
        if not during or not after:
            print("soak: too short for a verdict (no samples on one side of the warm-up)")
            return 1
        # Baselines from the warm-up's second half, when history has filled its window.
        settled = [s for s in during if s.seconds >= warmup / 2] or during

        def flat(
            name: str,
            values_during: list[float],
            values_after: list[float],
            tolerance: float,
            unit: str,
        ) -> None:
            base = max(values_during)
            peak = max(values_after)
            ok = peak <= base + tolerance
            places = 1 if unit else 0
            suffix = f" {unit}" if unit else ""

            def show(value: float) -> str:
                return f"{value:,.{places}f}{suffix}"

            checks.append(
                (
                    name,
                    ok,
                    f"warm-up max {show(base)}, after warm-up max {show(peak)}, "
                    f"end {show(values_after[-1])} (tolerance +{tolerance:g})",
                )
            )

        flat(
            "RSS",
            [s.rss_mb for s in settled],
            [s.rss_mb for s in after],
            args.rss_tolerance_mb,
            "MB",
        )
        flat(
            "threads",
            [float(s.threads) for s in during],
            [float(s.threads) for s in after],
            args.thread_tolerance,
            "",
        )
        flat("open fds", [float(s.fds) for s in during], [float(s.fds) for s in after], 2.0, "")
        history_base = max(s.history for s in settled)
        flat(
            "history rows",
            [float(s.history) for s in settled],
            [float(s.history) for s in after],
            max(100.0, 0.5 * history_base),
            "",
        )
        # The RSS slope after warm-up, for information (MB per minute).
        if len(after) >= 3:
            xs = [s.seconds / 60 for s in after]
            ys = [s.rss_mb for s in after]
            slope = statistics.linear_regression(xs, ys).slope
        else:
            slope = float("nan")
        ended_total = sum(self.ended.values())
        missing = len(self.started_ids)  # started and never reported ended
        checks.append(
            (
                "no job lost",
                missing == 0,
                f"{ended_total:,} jobs ended; {missing} started without an end event",
            )
        )
        last = self.samples[-1]
        print()
        print(f"soak summary after {last.seconds / 60:.1f} min ({len(self.samples)} samples):")
        by_status = ", ".join(f"{k} {v:,}" for k, v in sorted(self.ended.items()))
        print(
            f"  jobs ended: {ended_total:,} ({by_status}); "
            f"cancel_job calls that hit: {self.cancel_requests:,}; "
            f"progress payloads: {self.progress:,}"
        )
        print(f"  RSS slope after warm-up: {slope:+.2f} MB/min; quiv log records: {log_counts}")
        for level, message in sorted(first_logs.items()):
            print(f"  first {level}: {message}")
        for name, ok, detail in checks:
            print(
                f"  {'FLAT' if ok else 'GREW'} {name}: {detail}"
                if name != "no job lost"
                else f"  {'OK  ' if ok else 'FAIL'} {name}: {detail}"
            )
        passed = all(ok for _, ok, _ in checks)
        print(f"soak {'passed' if passed else 'FAILED'}")
        if not args.no_json:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            document = {
                "args": vars(args),
                "warmup_seconds": warmup,
                "samples": [asdict(s) for s in self.samples],
                "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in checks],
                "ended": dict(self.ended),
                "log_counts": log_counts,
                "first_log_records": first_logs,
                "rss_slope_mb_per_min": slope,
                "passed": passed,
            }
            RESULTS.write_text(json.dumps(document, indent=2, default=str) + "\n")
            print(f"samples written to {RESULTS}")
        return 0 if passed else 1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Run a mixed quiv workload and check that resources stay flat.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument(
        "--report-seconds", type=float, default=None, help="print a line this often (default 60)"
    )
    parser.add_argument(
        "--sample-seconds", type=float, default=5.0, help="sample resources this often (default 5)"
    )
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=None,
        help="seconds before flatness counts (default max(20%% of the run, retention + 15))",
    )
    parser.add_argument(
        "--facade",
        choices=("sync", "async"),
        default="sync",
        help="Quiv driven from a host loop (default) or AsyncQuiv on the main loop",
    )
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument(
        "--retention", type=float, default=30.0, help="history_retention_seconds (default 30)"
    )
    parser.add_argument("--burst-every", type=float, default=5.0, help="seconds between bursts")
    parser.add_argument("--burst-size", type=int, default=200, help="run-once jobs per burst")
    parser.add_argument("--rss-tolerance-mb", type=float, default=10.0)
    parser.add_argument("--thread-tolerance", type=float, default=2.0)
    parser.add_argument("--no-json", action="store_true", help=f"do not write {RESULTS}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.minutes <= 0:
        print("--minutes must be positive", file=sys.stderr)
        return 2
    soak = Soak(args)
    return int(anyio.run(soak.run))


if __name__ == "__main__":
    raise SystemExit(main())
