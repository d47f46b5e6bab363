"""What a task needs to be run by any process: an importable handler, stored arguments.

With a durable store, a task added in one process may be run by another, so the
store keeps the handler as ``module:qualname`` and the arguments as JSON (or,
only with ``serializer="pickle"``, as a pickle: loading one runs code, so that
trusts everyone who can write to the database). Checked at ``add_task``, so a
task that no other process could run is refused before anything changes.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
from dataclasses import dataclass
from typing import Any

from ._exceptions import HandlerRegistrationError

__all__ = ["Portable", "handler_reference", "portable"]


@dataclass(frozen=True, slots=True)
class Portable:
    """A task's handler and arguments in the form the durable store keeps."""

    handler: str
    serializer: str
    args: str | bytes
    kwargs: str | bytes


def handler_reference(func: object) -> str:
    """``module:qualname`` of ``func``, after checking that importing it gives ``func`` back."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise HandlerRegistrationError(
            f"with a durable store the handler must be a module-level function or method "
            f"that other processes can import; {func!r} has no module and qualified name"
        )
    if "<lambda>" in qualname:
        raise HandlerRegistrationError(
            f"with a durable store the handler must be importable by its name, so that any "
            f"process can run it; a lambda ({module}.{qualname}) has no name to import: "
            "define it with def at module level"
        )
    if "<locals>" in qualname:
        raise HandlerRegistrationError(
            f"with a durable store the handler must be importable by its name, so that any "
            f"process can run it; {module}.{qualname} is defined inside a function (a closure): "
            "move it to module level"
        )
    found: Any = importlib.import_module(module)
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except AttributeError:
        found = None
    if found is not func and found != func:
        raise HandlerRegistrationError(
            f"with a durable store the handler must be importable by its name; "
            f"{module}.{qualname} does not lead back to {func!r}"
        )
    if inspect.ismethod(func) and not inspect.isclass(func.__self__):
        raise HandlerRegistrationError(
            f"with a durable store the handler cannot be a method bound to an instance "
            f"({module}.{qualname}): other processes do not have that instance"
        )
    return f"{module}:{qualname}"


def _encode(value: object, what: str, serializer: str) -> str | bytes:
    if serializer == "pickle":
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise HandlerRegistrationError(
            f"with a durable store {what} must be JSON-serialisable ({exc}); pass "
            "serializer='pickle' to store pickles instead (trusting everyone who can write "
            "to the database)"
        ) from exc


def portable(
    func: object, args: tuple[Any, ...], kwargs: dict[str, Any], serializer: str
) -> Portable:
    """The stored form of a task's handler and arguments; raise if it has none."""
    return Portable(
        handler_reference(func),
        serializer,
        _encode(list(args), "args", serializer),
        _encode(kwargs, "kwargs", serializer),
    )
