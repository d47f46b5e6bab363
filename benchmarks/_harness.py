"""Shared plumbing: sizes, metrics, statistics, process probes, the table and the JSON.

A workload module (``w1_dispatch`` ... ``w8_soak``) exposes:

* ``TITLE``: a short description for the table;
* ``ISOLATE``: True if every unit needs a fresh process (memory measurements);
* ``units(sizes)``: the names of its measuring units, in run order;
* ``run_unit(unit, sizes)``: run one unit and return plain, picklable data;
* ``summarize(data, sizes)``: turn ``{unit: data}`` into :class:`Metric` rows.

The runner (``benchmarks.__main__``) runs units in spawned child processes so
that one workload's threads, caches and heap never colour the next one's figures.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import resource
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
import psutil
from anyio.abc import TaskGroup

__all__ = [
    "FULL",
    "QUICK",
    "SIZES",
    "SMOKE",
    "Box",
    "CountingHandler",
    "Metric",
    "Sizes",
    "WorkloadModule",
    "asettle_cpu",
    "cpu_seconds",
    "distribution",
    "environment",
    "open_fds",
    "peak_rss_mb",
    "percentile",
    "peer_logger",
    "portal_task_group",
    "quiet_logger",
    "rss_mb",
    "settle_cpu",
    "thread_count",
    "wait_for",
]

Better = Literal["lower", "higher"]


# -- sizes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``FULL`` is what the targets are written for."""

    name: str
    quick: bool
    w1_samples: int
    w1_warmup: int
    w1_gap: float  # seconds of idleness between two samples
    w2_jobs: int
    w2_pool: int
    w3_tasks: int
    w3_interval: float
    w3_seconds: float
    w4_events: int
    w5_tasks: int
    w5_listing: int
    w5_idle_seconds: float
    w6_samples: int
    w7_samples: int
    w8_jobs: int
    w8_batch: int
    w8_retention: float
    w9_samples: int
    w9_gap: float  # seconds of idleness between two calls
    w10_runs: int
    w11_jobs: int
    w11_batch: int
    w14_processes: int = 4
    w14_tasks: int = 200
    w14_interval: float = 0.5
    w14_seconds: float = 30.0


FULL = Sizes(
    name="full",
    quick=False,
    w1_samples=200,
    w1_warmup=20,
    w1_gap=0.01,
    w2_jobs=10_000,
    w2_pool=10,
    w3_tasks=100,
    w3_interval=0.1,
    w3_seconds=10.0,
    w4_events=50_000,
    w5_tasks=100_000,
    w5_listing=10_000,
    w5_idle_seconds=10.0,
    w6_samples=100,
    w7_samples=50,
    w8_jobs=1_000_000,
    w8_batch=10_000,
    w8_retention=2.0,
    w9_samples=1_000,
    w9_gap=0.001,
    w10_runs=10,
    w11_jobs=300_000,
    w11_batch=10_000,
)

QUICK = Sizes(
    name="quick",
    quick=True,
    w1_samples=50,
    w1_warmup=5,
    w1_gap=0.005,
    w2_jobs=1_000,
    w2_pool=10,
    w3_tasks=20,
    w3_interval=0.1,
    w3_seconds=1.0,
    w4_events=5_000,
    w5_tasks=5_000,
    w5_listing=2_000,
    w5_idle_seconds=1.0,
    w6_samples=15,
    w7_samples=10,
    w8_jobs=50_000,
    w8_batch=5_000,
    w8_retention=1.0,
    w9_samples=200,
    w9_gap=0.0005,
    w10_runs=3,
    w11_jobs=20_000,
    w11_batch=5_000,
    w14_tasks=50,
    w14_seconds=8.0,
)

#: For the test suite: every code path once, in seconds; the figures mean nothing.
SMOKE = Sizes(
    name="smoke",
    quick=True,
    w1_samples=5,
    w1_warmup=1,
    w1_gap=0.001,
    w2_jobs=100,
    w2_pool=10,
    w3_tasks=5,
    w3_interval=0.05,
    w3_seconds=0.2,
    w4_events=200,
    w5_tasks=300,
    w5_listing=100,
    w5_idle_seconds=0.1,
    w6_samples=3,
    w7_samples=3,
    w8_jobs=400,
    w8_batch=100,
    w8_retention=0.2,
    w9_samples=10,
    w9_gap=0.0,
    w10_runs=1,
    w11_jobs=200,
    w11_batch=100,
    w14_processes=2,
    w14_tasks=3,
    w14_interval=0.3,
    w14_seconds=2.0,
)

SIZES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


# -- results -------------------------------------------------------------------


@dataclass
class Metric:
    """One row of the table.

    ``ceiling`` is the same figure measured for the raw mechanism (no quiv) in
    the same run. ``ratio`` expresses quiv as a fraction of that ceiling, in the
    direction where 1.0 means "as good as raw": ``value/ceiling`` for rates,
    ``ceiling/value`` for latencies, costs and sizes.

    ``peer`` is the same figure for another scheduler (``--peers``), measured in
    the same run through its own API; ``peer_ratio`` reads in the same direction
    (above 1.0: quiv is ahead). With a peer figure, a target only counts as met
    when quiv is also not behind the peer.
    """

    workload: str
    variant: str
    name: str
    value: float
    unit: str
    better: Better
    ceiling: float | None = None
    target: float | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    peer: float | None = None
    peer_setup: str = ""

    @property
    def ratio(self) -> float | None:
        return self._fraction(self.ceiling)

    @property
    def peer_ratio(self) -> float | None:
        return self._fraction(self.peer)

    def _fraction(self, other: float | None) -> float | None:
        if other is None or not math.isfinite(self.value) or not math.isfinite(other):
            return None
        if self.better == "higher":
            return self.value / other if other > 0 else None
        if self.value <= 0 or other <= 0:
            return None
        return other / self.value

    @property
    def behind_peer(self) -> bool | None:
        """Whether the peer did better in this run; None without a peer figure.

        A tie is not behind (it happens for counts, e.g. no missed run on either side).
        """
        if self.peer is None or not math.isfinite(self.peer):
            return None
        if not math.isfinite(self.value):
            return True
        if self.better == "higher":
            return self.value < self.peer
        return self.value > self.peer

    @property
    def target_met(self) -> bool | None:
        if self.target is None:
            return None
        if not math.isfinite(self.value):
            return False
        if self.better == "higher":
            return self.value >= self.target
        return self.value <= self.target

    @property
    def met(self) -> bool | None:
        """The target is met and, when a peer ran, quiv is not behind it."""
        met = self.target_met
        if met is None:
            return None
        return met and not self.behind_peer

    def as_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "variant": self.variant,
            "metric": self.name,
            "value": _finite_or_none(self.value),
            "unit": self.unit,
            "better": self.better,
            "ceiling": self.ceiling,
            "fraction_of_ceiling": self.ratio,
            "target": self.target,
            "target_met": self.target_met,
            "peer": None
            if self.peer is None
            else {
                "value": _finite_or_none(self.peer),
                "setup": self.peer_setup,
                "quiv_vs_peer": self.peer_ratio,
                "behind_peer": self.behind_peer,
            },
            "met": self.met,
            "note": self.note,
            "details": self.details,
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class WorkloadModule(Protocol):
    TITLE: str
    ISOLATE: bool

    def units(self, sizes: Sizes) -> list[str]: ...

    def run_unit(self, unit: str, sizes: Sizes) -> dict[str, Any]: ...

    def summarize(self, data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]: ...


# -- statistics ----------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Summary of a list of durations, in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = sorted(s * 1e3 for s in seconds)
    return {
        "n": len(ms),
        "min_ms": ms[0],
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": ms[-1],
        "mean_ms": sum(ms) / len(ms),
    }


# -- logging -------------------------------------------------------------------


class CountingHandler(logging.Handler):
    """Counts quiv's warnings and errors instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.levelname] = self.counts.get(record.levelname, 0) + 1
        if record.levelname not in self.first:
            self.first[record.levelname] = record.getMessage()[:300]


def peer_logger(name: str) -> tuple[logging.Logger, CountingHandler]:
    """A peer library's own logger tree, counted and silenced like :func:`quiet_logger`."""
    logger = logging.getLogger(name)
    logger.handlers.clear()
    handler = CountingHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    return logger, handler


def quiet_logger(name: str) -> tuple[logging.Logger, CountingHandler]:
    """A logger for the scheduler under test: WARNING level, counted, not printed.

    The level is quiv's effective default (the root logger's WARNING), so the
    cost of its ``info``/``debug`` calls is what a user without logging set up pays.
    """
    logger = logging.getLogger(f"quiv.bench.{name}")
    logger.handlers.clear()
    handler = CountingHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    return logger, handler


# -- small helpers ---------------------------------------------------------------


@dataclass
class Box:
    """A mutable cell, for closures that must rebind a value."""

    value: Any = None


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.001) -> bool:
    """Poll ``predicate`` from a plain thread until true or ``timeout``; return the outcome."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() >= deadline:
            return False
        time.sleep(poll)
    return True


@asynccontextmanager
async def portal_task_group() -> AsyncIterator[TaskGroup]:
    """A task group for ``portal.wrap_async_context_manager`` (it must be created on the loop)."""
    async with anyio.create_task_group() as task_group:
        yield task_group


# -- process probes --------------------------------------------------------------

_PROCESS = psutil.Process(os.getpid())


def _process() -> psutil.Process:
    global _PROCESS
    if _PROCESS.pid != os.getpid():  # forked or spawned since import
        _PROCESS = psutil.Process(os.getpid())
    return _PROCESS


def rss_mb() -> float:
    """Resident set size of this process, in MiB (after a full collection)."""
    gc.collect()
    return float(_process().memory_info().rss) / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User plus system CPU time of the whole process (every thread), in seconds."""
    times = _process().cpu_times()
    return float(times.user + times.system)


def thread_count() -> int:
    """OS threads of this process (includes threads Python did not start)."""
    return int(_process().num_threads())


def open_fds() -> int:
    return int(_process().num_fds())


#: Settling: the process counts as quiet after this many windows under the threshold.
_SETTLE_WINDOW = 0.25
_SETTLE_THRESHOLD = 0.05
_SETTLE_CALM_WINDOWS = 2
_SETTLE_TIMEOUT = 180.0


def settle_cpu() -> float:
    """Block until the process has used < 5 % of a core for two 0.25 s windows.

    For a scheduler that runs on another thread (``Quiv``). Returns the seconds
    it took, which is mostly the store writer committing what was queued.
    """
    start = time.perf_counter()
    calm = 0
    while calm < _SETTLE_CALM_WINDOWS and time.perf_counter() - start < _SETTLE_TIMEOUT:
        before = cpu_seconds()
        time.sleep(_SETTLE_WINDOW)
        quiet = (cpu_seconds() - before) / _SETTLE_WINDOW < _SETTLE_THRESHOLD
        calm = calm + 1 if quiet else 0
    return time.perf_counter() - start


async def asettle_cpu() -> float:
    """:func:`settle_cpu` for a scheduler on the current event loop: the loop keeps turning."""
    start = time.perf_counter()
    calm = 0
    while calm < _SETTLE_CALM_WINDOWS and time.perf_counter() - start < _SETTLE_TIMEOUT:
        before = cpu_seconds()
        await anyio.sleep(_SETTLE_WINDOW)
        quiet = (cpu_seconds() - before) / _SETTLE_WINDOW < _SETTLE_THRESHOLD
        calm = calm + 1 if quiet else 0
    return time.perf_counter() - start


def _git_state() -> str | None:
    """The commit measured, with ``+dirty`` if ``src/`` has uncommitted changes."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _source_digest() -> dict[str, str]:
    """Where the measured quiv was imported from, and a digest of its sources."""
    import hashlib
    from pathlib import Path

    import quiv

    package = Path(quiv.__file__).resolve().parent
    digest = hashlib.sha1()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return {"path": str(package), "sha1": digest.hexdigest()[:12]}


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    import platform
    import sys
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "git": _git_state(),
        "quiv_source": _source_digest(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "quiv": version("quiv"),
        "anyio": version("anyio"),
        "sqlalchemy": version("sqlalchemy"),
        "aiosqlite": version("aiosqlite"),
        "pydantic": version("pydantic"),
        "gil_switch_interval_s": sys.getswitchinterval(),
    }
