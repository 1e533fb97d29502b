"""A local, read-only dashboard of the trail with a live stream: ``finops-audit serve``.

Needs the ``dashboard`` extra (Starlette, uvicorn, sse-starlette):
``pip install 'finops-audit[dashboard]'``. :func:`create_app` builds the ASGI
app for a service; mount it in your own Starlette server or let the CLI run it.
"""

from __future__ import annotations

try:
    import sse_starlette  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "finops_audit.dashboard needs the dashboard extra: pip install 'finops-audit[dashboard]'"
    ) from exc

from ._app import create_app

__all__ = ["create_app"]
