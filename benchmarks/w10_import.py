"""W10 import time: the wall time of ``python -c 'import quiv'`` in a fresh process.

Every sample is a new interpreter (this one's ``sys.executable``) started with
``subprocess.run``; the clock covers start-up, the import and exit, as a user
timing the command would see it. One unmeasured run first, so the bytecode
caches are written (unless a single run is asked for). For information, a
bare interpreter (``-c pass``) is measured the same way.

Ceiling: importing what quiv cannot do without at import time, ``anyio`` and
``pydantic`` with one model defined (the database layer can load later).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from time import perf_counter
from typing import Any

from ._harness import Metric, Sizes

TITLE = "import time (python -c 'import quiv', fresh process)"
ISOLATE = False

_TARGET_S = 0.4

QUIV = "import quiv"
BARE = "pass"
FLOOR = "import anyio, pydantic\nclass M(pydantic.BaseModel):\n    x: int"


def units(sizes: Sizes) -> list[str]:
    return ["quiv", "ceiling"]


def run_unit(unit: str, sizes: Sizes) -> dict[str, Any]:
    if unit == "quiv":
        return {"seconds": time_command(QUIV, sizes.w10_runs)}
    if unit == "ceiling":
        return {
            "seconds": time_command(FLOOR, sizes.w10_runs),
            "bare_seconds": time_command(BARE, sizes.w10_runs),
        }
    raise ValueError(unit)


def time_command(code: str, runs: int) -> list[float]:
    """Wall seconds of ``python -c code``, ``runs`` times (after an unmeasured one if runs > 1)."""
    command = [sys.executable, "-c", code]
    warm_up = 1 if runs > 1 else 0
    samples: list[float] = []
    for i in range(warm_up + runs):
        start = perf_counter()
        subprocess.run(command, check=True)
        if i >= warm_up:
            samples.append(perf_counter() - start)
    return samples


def summarize(data: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    ours = data.get("quiv")
    if ours is None or "error" in ours:
        return []
    ceiling = data.get("ceiling")
    raw = ceiling if ceiling is not None and "error" not in ceiling else None
    bare = statistics.median(raw["bare_seconds"]) if raw else None
    return [
        Metric(
            "W10",
            "fresh process",
            "python -c 'import quiv', p50",
            statistics.median(ours["seconds"]),
            "s",
            "lower",
            ceiling=statistics.median(raw["seconds"]) if raw else None,
            target=_TARGET_S,
            note="" if bare is None else f"bare interpreter {bare:.3f} s",
            details={"quiv_seconds": ours["seconds"], "ceiling": raw},
        )
    ]
