"""Scheduler options, at the import path quiv 0.x used (``quiv.config``).

Every name here is also importable from ``quiv`` itself.
"""

from ._config import QuivConfig as QuivConfig
from ._config import resolve_timezone as resolve_timezone

__all__ = ["QuivConfig", "resolve_timezone"]
