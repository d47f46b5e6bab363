"""Ids for tasks and jobs: random UUID4 strings, cheaply.

``uuid.uuid4()`` makes one ``os.urandom`` system call per id, which is a
visible share of a job's cost at ten thousand jobs a second. These ids are the
same kind (version 4, 122 random bits from ``os.urandom``), made 256 at a time
from one read and handed out with ``list.pop``, which is atomic: drawing an id
takes no lock, and only the thread that finds the batch empty makes the next.
"""

from __future__ import annotations

import os

__all__ = ["new_id"]

_BATCH = 256
_ready: list[str] = []


def _make_batch() -> list[str]:
    raw = bytearray(os.urandom(16 * _BATCH))
    for offset in range(0, len(raw), 16):
        raw[offset + 6] = (raw[offset + 6] & 0x0F) | 0x40  # version 4
        raw[offset + 8] = (raw[offset + 8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return [
        f"{text[i : i + 8]}-{text[i + 8 : i + 12]}-{text[i + 12 : i + 16]}-"
        f"{text[i + 16 : i + 20]}-{text[i + 20 : i + 32]}"
        for i in range(0, len(text), 32)
    ]


def new_id() -> str:
    """A new random UUID, version 4, as a 36-character string."""
    try:
        return _ready.pop()
    except IndexError:
        # Several threads may get here at once: each extends the shared list, so
        # nothing is lost or drawn twice (every id is popped exactly once).
        _ready.extend(_make_batch())
        return new_id()
