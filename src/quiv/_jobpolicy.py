"""Job policies: what happens to one run, whatever its trigger decides.

Triggers (``_triggers``) say *when* a task runs; these say what becomes of a
run once it has started: how long it may take (``timeout``) and whether a
failure is tried again (``max_retries``, with exponential backoff and full
jitter). All pure: the random source comes in as an argument.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._exceptions import ConfigurationError
from ._schedule import _finite_number

__all__ = [
    "JobPolicy",
    "backoff_cap",
    "retry_delay",
    "validate_cancel_grace",
    "validate_max_retries",
    "validate_seconds",
    "validate_timeout",
]


def validate_max_retries(value: object) -> int:
    # bool is an int subclass; max_retries=True is a bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"max_retries must be an int, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"max_retries must be 0 or more, got {value!r}")
    return value


def validate_seconds(value: object, what: str) -> float:
    """``value`` as seconds, or ``ConfigurationError`` unless finite and >= 0."""
    seconds = _finite_number(value, what)
    if seconds < 0:
        raise ConfigurationError(f"{what} must be 0 or more, got {value!r}")
    return seconds


def validate_timeout(value: object, what: str = "timeout") -> float | None:
    """``None`` (no bound) or seconds, finite and > 0."""
    if value is None:
        return None
    seconds = _finite_number(value, what)
    if seconds <= 0:
        raise ConfigurationError(f"{what} must be more than 0 (or None), got {value!r}")
    return seconds


def validate_cancel_grace(value: object) -> float:
    return validate_seconds(value, "cancel_grace")


@dataclass(frozen=True)
class JobPolicy:
    """Retries and the time limit of a task's runs.

    Raises:
        ConfigurationError: if a value is out of range (see the validators).
    """

    max_retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_retries", validate_max_retries(self.max_retries))
        object.__setattr__(
            self, "retry_backoff", validate_seconds(self.retry_backoff, "retry_backoff")
        )
        object.__setattr__(
            self,
            "retry_backoff_max",
            validate_seconds(self.retry_backoff_max, "retry_backoff_max"),
        )
        object.__setattr__(self, "timeout", validate_timeout(self.timeout))


#: The policy of nearly every task (no retries, no time limit), built and checked once.
DEFAULT_JOB_POLICY = JobPolicy()


def job_policy_of(
    max_retries: object, retry_backoff: object, retry_backoff_max: object, timeout: object
) -> JobPolicy:
    """The validated policy for these options; the shared default when they are the defaults."""
    if (
        type(max_retries) is int
        and max_retries == 0
        and type(retry_backoff) is float
        and retry_backoff == 1.0
        and type(retry_backoff_max) is float
        and retry_backoff_max == 300.0
        and timeout is None
    ):
        return DEFAULT_JOB_POLICY
    return JobPolicy(max_retries, retry_backoff, retry_backoff_max, timeout)  # type: ignore[arg-type]


def backoff_cap(attempt: int, backoff: float, backoff_max: float) -> float:
    """The longest wait before retrying a run whose ``attempt`` (1-based) failed.

    ``backoff * 2**(attempt - 1)``, capped at ``backoff_max``.
    """
    if backoff <= 0:
        return 0.0
    exponent = attempt - 1
    if exponent >= 1024:  # 2**1024 overflows a float; the cap wins long before
        return backoff_max
    return min(backoff * 2.0**exponent, backoff_max)


def retry_delay(attempt: int, backoff: float, backoff_max: float, rng: random.Random) -> float:
    """Seconds to wait before the retry of failed ``attempt``: uniform in ``[0, cap]``.

    Full jitter: retries of many jobs that failed together (a database that
    went away) spread over the whole window instead of arriving together.
    """
    cap = backoff_cap(attempt, backoff, backoff_max)
    return rng.uniform(0.0, cap) if cap > 0 else 0.0
