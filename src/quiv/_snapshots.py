"""Task snapshots made ahead of the reads that want them.

A ``Task`` snapshot is built on the loop, since the task changes there; a read
from another thread (the sync facade's ``get_task`` and ``get_all_tasks``)
answers at once when the snapshot is already made, and otherwise waits for a
round trip to the loop. So this service makes them in advance, a few
milliseconds after the changes that call for them, in chunks between which
the loop runs anything else.

Which ones: a new repeating task's first snapshot (while the scheduler holds
no more than ``SNAPSHOTS_AHEAD`` tasks: a snapshot costs about 0.6 KB, which a
schedule of a hundred thousand tasks should not pay for every task), and
afterwards the snapshots of the tasks somebody has read ("watched" ones), each
time they change. A task nobody reads costs no snapshot after its first run,
and a run-once task never gets one ahead of time (it is usually gone first).
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from ._registry import Registry

__all__ = ["SNAPSHOTS_AHEAD", "SNAPSHOT_DELAY", "Snapshots"]

#: New tasks get their first snapshot made ahead while there are at most this many.
SNAPSHOTS_AHEAD = 10_000

#: Seconds changes may gather before their snapshots are made: a burst of
#: changes is served by one pass, and the pass stays off the dispatch path.
SNAPSHOT_DELAY = 0.005
#: Snapshots made between two checkpoints, so one pass never holds the loop long.
_CHUNK = 256


class Snapshots:
    """The service that keeps wanted snapshots made; it runs in the engine's task group."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._wanted: anyio.Event | None = None
        registry.on_unsnapped = self._wake

    def _wake(self) -> None:
        if self._wanted is not None:
            self._wanted.set()

    async def run(self) -> None:
        wanted = self._registry.unsnapped
        while True:
            self._wanted = anyio.Event()
            if not wanted:
                await self._wanted.wait()
            await anyio.sleep(SNAPSHOT_DELAY)
            while wanted:
                for _ in range(min(_CHUNK, len(wanted))):
                    _, task = wanted.popitem()
                    if task.snapshot is None and not task.removed:
                        task.to_model()
                await anyio.lowlevel.checkpoint()
