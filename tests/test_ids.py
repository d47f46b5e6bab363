"""Task and job ids are random version-4 UUIDs."""

from __future__ import annotations

import threading
import uuid

from quiv._ids import new_id


def test_ids_are_version_4_uuids_in_canonical_form() -> None:
    for _ in range(1000):  # crosses several buffer refills
        text = new_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_ids_are_unique_across_threads() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [new_id() for _ in range(2000)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(seen) == 8000
    assert len(set(seen)) == 8000
