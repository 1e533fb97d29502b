"""One warning for an ``AUDIT_*`` variable no setting reads (a typo, usually).

``AUDIT_RETENTON_DAYS=30`` would otherwise be ignored without a word, and the
trail kept forever. The warning goes to the ``finops_audit`` logger (stderr:
stdout is an MCP stdio server's protocol), once per variable per process,
and names the closest known variable (:func:`difflib.get_close_matches`).
Not ``warnings.warn``: an unrelated variable in a user's environment must not
become an error under ``-W error``.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from collections.abc import Iterable, Mapping

__all__ = ["OTHER_VARIABLES", "unknown_variables", "warn_unknown_variables"]

logger = logging.getLogger("finops_audit")

#: ``AUDIT_*`` variables read elsewhere than :class:`~finops_audit.AuditSettings`.
OTHER_VARIABLES = frozenset(
    {
        "AUDIT_DASHBOARD_TOKEN",  # finops-audit dashboard --token
        "AUDIT_TEST_PG_DSN",  # the test suite's PostgreSQL server
    }
)

_warned: set[str] = set()
_lock = threading.Lock()


def unknown_variables(
    prefix: str, fields: Iterable[str], environ: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    """``(variable, closest known variable or None)`` for each unknown ``prefix*`` variable."""
    known = sorted({f"{prefix}{name}".upper() for name in fields} | OTHER_VARIABLES)
    out = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(prefix) or upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        out.append((name, close[0] if close else None))
    return out


def warn_unknown_variables(
    prefix: str, fields: Iterable[str], environ: Mapping[str, str] | None = None
) -> None:
    """Log each unknown variable once per process (settings are loaded per service)."""
    found = unknown_variables(prefix, fields, os.environ if environ is None else environ)
    for name, closest in found:
        with _lock:
            if name in _warned:
                continue
            _warned.add(name)
        hint = f"did you mean {closest}?" if closest else "no setting has a similar name"
        logger.warning("finops_audit ignores the unknown variable %s (%s)", name, hint)
