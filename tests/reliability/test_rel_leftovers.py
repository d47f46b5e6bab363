"""A killed process leaves its database directory behind; the next store removes it.

quiv does not take over signal handlers, so SIGKILL (or SIGTERM under Python's
default handler) ends a script without shutdown, and its private directory (an
SQLite file with pickled arguments) stays. The directory is named after the
owning pid, and a store opening its own removes those of this user's processes
that no longer exist, and nothing else.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from quiv import AsyncQuiv
from quiv._store import remove_leftover_directories

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")

SCRIPT = """
import time, quiv
scheduler = quiv.Quiv()
scheduler.start()
scheduler.add_task("idle", lambda: None, interval=3600, delay=3600)
store = scheduler._core._store
deadline = time.monotonic() + 10
while not (store.path is not None and store.path.exists()) and time.monotonic() < deadline:
    time.sleep(0.01)
print(store.path, flush=True)
time.sleep(60)
"""


def _killed_process_directory() -> tuple[Path, int]:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        line = process.stdout.readline().strip()
    finally:
        process.kill()  # SIGKILL: no exit hook, no clean-up
        process.wait(10)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    return Path(line).parent, process.pid


async def test_directory_left_by_killed_process_is_removed_by_next_store() -> None:
    directory, pid = _killed_process_directory()
    assert directory.is_dir(), "the killed process should have left its directory"
    assert re.fullmatch(rf"quiv-{pid}-[a-z0-9_]+", directory.name), directory.name
    assert (directory / "quiv.sqlite3").exists()

    async with AsyncQuiv() as scheduler:
        await scheduler.add_task("t", lambda: None, interval=3600, delay=3600)
        await scheduler._store.flush()  # the first write opens the store
        own = scheduler._store.path
        assert own is not None and own.exists()
        assert own.parent.name.startswith(f"quiv-{os.getpid()}-")
        assert not directory.exists(), f"{directory} was not removed"
    assert not own.parent.exists()


def test_only_dead_processes_directories_of_this_user_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    keep = {
        "live-parent": tmp_path / f"quiv-{os.getppid()}-abc123",  # its process is alive
        "own": tmp_path / f"quiv-{os.getpid()}-abc123",  # ours
        "old-style": tmp_path / "quiv-abc12345",  # no pid in the name
        "other-name": tmp_path / f"notquiv-{dead}-abc123",
    }
    for path in keep.values():
        path.mkdir()
    file_decoy = tmp_path / f"quiv-{dead}-file"  # not a directory
    file_decoy.write_text("x")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_text("x")
    link_decoy = tmp_path / f"quiv-{dead}-link"  # a link to a directory
    link_decoy.symlink_to(target, target_is_directory=True)
    locked = tmp_path / f"quiv-{dead}-locked"  # its lock is held: alive elsewhere
    locked.mkdir()
    lock = os.open(locked / "owner.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    stale = tmp_path / f"quiv-{dead}-stale"
    stale.mkdir()
    (stale / "quiv.sqlite3").write_text("x")
    (stale / "owner.lock").write_text("")
    try:
        assert remove_leftover_directories(str(tmp_path)) == [str(stale)]
    finally:
        os.close(lock)
    assert not stale.exists()
    for path in keep.values():
        assert path.is_dir(), path
    assert file_decoy.is_file() and link_decoy.is_symlink() and locked.is_dir()
    assert (target / "precious").exists()


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(30)
    return process.pid
