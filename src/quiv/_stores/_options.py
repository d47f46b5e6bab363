"""The ``store=`` option and its companions, checked once at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from quiv._exceptions import ConfigurationError

__all__ = ["StoreOptions", "store_options"]

SERIALIZERS = ("json", "pickle")


@dataclass(frozen=True)
class StoreOptions:
    """Where the schedule lives and how a durable store behaves.

    ``kind`` is ``"temporary"`` (the private database of the seed, ``store=None``),
    ``"sqlite"`` (a durable file, one machine) or ``"postgresql"``.
    """

    kind: str = "temporary"
    url: str | None = None
    path: Path | None = None
    serializer: str = "json"
    lease_seconds: float = 30.0
    lease_renewal: float = 10.0

    @property
    def durable(self) -> bool:
        return self.kind != "temporary"


def _seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{what} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not (0 < seconds < math.inf):
        raise ConfigurationError(f"{what} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def store_options(
    store: object, serializer: object, lease_seconds: object, lease_renewal: object
) -> StoreOptions:
    """Validate the store options; raise ``ConfigurationError`` naming the culprit."""
    if serializer not in SERIALIZERS:
        raise ConfigurationError(f"serializer must be 'json' or 'pickle', got {serializer!r}")
    lease = _seconds(lease_seconds, "lease_seconds")
    renewal = _seconds(lease_renewal, "lease_renewal")
    if renewal >= lease:
        raise ConfigurationError(
            f"lease_renewal ({renewal:g}s) must be shorter than lease_seconds ({lease:g}s): "
            "a lease has to be renewed before it runs out"
        )
    common = {"serializer": str(serializer), "lease_seconds": lease, "lease_renewal": renewal}
    if store is None:
        return StoreOptions(**common)  # type: ignore[arg-type]
    if not isinstance(store, str):
        raise ConfigurationError(f"store must be a database URL or None, got {store!r}")
    parts = urlsplit(store)
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.strip("/"):
            raise ConfigurationError(
                f"store {store!r}: a SQLite store is 'sqlite:///path/to/file.db' "
                "(three slashes, then the file's path)"
            )
        path = Path(unquote(parts.path[1:])).expanduser()  # sqlite:////abs -> /abs
        return StoreOptions(kind="sqlite", url=store, path=path, **common)  # type: ignore[arg-type]
    if parts.scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        if not parts.path.strip("/"):
            raise ConfigurationError(
                f"store {store!r}: a PostgreSQL store is 'postgresql://user@host/database'"
            )
        return StoreOptions(kind="postgresql", url=store, **common)  # type: ignore[arg-type]
    raise ConfigurationError(
        f"store must be None or a URL starting 'sqlite:///' or 'postgresql://', got {store!r}"
    )
