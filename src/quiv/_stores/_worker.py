"""This process's name in a shared store: ``host/pid``, kept right across ``fork``."""

from __future__ import annotations

import os
import socket

__all__ = ["worker_name"]

_name = ""


def _refresh() -> None:
    global _name
    _name = f"{socket.gethostname()}/{os.getpid()}"


def worker_name() -> str:
    """``host/pid`` of the current process (a module global: no system call per job)."""
    if not _name:
        _refresh()
    return _name


if hasattr(os, "register_at_fork"):  # a forked worker (gunicorn, uvicorn) is another process
    os.register_at_fork(after_in_child=_refresh)
