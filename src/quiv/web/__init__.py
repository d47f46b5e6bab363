"""A live dashboard for a quiv scheduler: a Starlette app to mount in yours.

Needs the ``web`` extra (``pip install "quiv[web]"``); ``import quiv`` never
imports this package, so apps without it pay nothing::

    from quiv.web import dashboard

    app.mount("/quiv", dashboard(scheduler))

It has no authentication of its own: protect the mount with your app's.
"""

try:
    import jinja2 as _jinja2  # noqa: F401
    import starlette as _starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f'quiv.web needs the "web" extra (Starlette and Jinja2): pip install "quiv[web]" ({exc})'
    ) from exc

from ._app import dashboard as dashboard

__all__ = ["dashboard"]
