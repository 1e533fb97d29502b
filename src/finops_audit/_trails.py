"""One writer per trail in a process; every ``AuditService`` on it is a handle.

Why: "a call that has returned is visible to every reader in the process" can
only hold if every handle on a file flushes the same queue. Two writers on one
file would each flush only their own, so a reader made after the decorators'
default service saw nothing for half a second. So services are handles onto a
process-wide registry of trails keyed by the file's resolved path (symlinks
followed, relative paths made absolute at construction); the first handle's
settings build the writer and its forwarders, later handles share them.

Settings that decide what reaches the file or where it goes (:data:`MUST_MATCH`:
the key, the chain, redaction, the central store, OTLP, the replica id) must
agree, else :class:`~finops_audit.AuditConfigError` names both values (secrets
masked) and the file: a second key on one file would break the chain, a second
redaction policy would let through what one caller meant to hide. Tuning
settings (batch size, intervals, queue, timeouts, retention ...) follow the
first handle, with one warning naming the values used. ``close_timeout`` and
``logging_enabled`` stay each handle's own.

Lifecycle: each handle counts once; ``close()`` of a handle flushes, and the
writer stops when the last handle closes (or at interpreter exit, as for an
unclosed service). A handle collected without ``close()`` keeps its count, so
decorators bound to it keep a running writer. After ``os.fork()`` the child
keeps the registry (its writers restart unstarted, see ``_writer``) with a
fresh lock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._writer import AuditWriter
from .config import AuditSettings
from .exceptions import AuditConfigError, AuditTimeoutError

__all__ = [
    "MUST_MATCH",
    "PER_HANDLE",
    "Trail",
    "aclose_handle",
    "acquire",
    "close_handle",
    "release",
    "trail_key",
    "trails_to",
    "writing",
]

logger = logging.getLogger("finops_audit")

#: Settings every handle on one file must share (else AuditConfigError).
MUST_MATCH = (
    "hmac_key",
    "hash_chain",
    "redact",
    "redact_keys",
    "redact_patterns",
    "hmac_fields",
    "db_url",
    "otlp_endpoint",
    "otlp_headers",
    "replica_id",
)
#: Settings that stay each handle's own.
PER_HANDLE = frozenset({"db_path", "close_timeout", "logging_enabled"})
_SECRETS = frozenset({"hmac_key", "db_url", "otlp_headers"})

Redact = Callable[[dict[str, Any]], dict[str, Any]]


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass(eq=False)
class Trail:
    """The shared part of every handle on one file: writer, forwarders, count."""

    key: str
    settings: AuditSettings
    redactor: Redact | None
    writer: AuditWriter
    fleet: Closable
    refs: int = 1
    warned: set[tuple[str, ...]] = field(default_factory=set)


_trails: dict[str, Trail] = {}
_lock = threading.Lock()


def trail_key(path: str | os.PathLike[str]) -> str:
    """One name per file: absolute, symlinks (also of parent folders) resolved."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def acquire(
    settings: AuditSettings,
    redactor: Redact | None,
    build: Callable[[], tuple[AuditWriter, Closable]],
) -> tuple[Trail, bool]:
    """The trail of ``settings.db_path``, joined (``False``) or built now (``True``).

    Raises :class:`AuditConfigError` when a :data:`MUST_MATCH` setting or the
    custom redactor differs from the open trail's.
    """
    key = trail_key(settings.db_path)
    with _lock:
        trail = _trails.get(key)
        if trail is not None and not trail.writer.closed:
            _check(trail, settings, redactor)
            trail.refs += 1
            return trail, False
        writer, fleet = build()
        trail = _trails[key] = Trail(key, settings, redactor, writer, fleet)
        return trail, True


def release(trail: Trail) -> bool:
    """One handle is done; ``True`` when it was the last (the caller stops the writer)."""
    with _lock:
        trail.refs -= 1
        if trail.refs > 0:
            return False
        if _trails.get(trail.key) is trail:
            del _trails[trail.key]
        return True


def close_handle(trail: Trail, wait: float) -> None:
    """One handle closes: the last one stops the writer, then the forwarders; others flush."""
    if not release(trail):
        _flush_shared(trail, wait)
        return
    try:
        trail.writer.close(wait)
    finally:
        trail.fleet.close()


async def aclose_handle(trail: Trail, wait: float) -> None:
    """:func:`close_handle` without blocking the loop (the forwarders close in a thread)."""
    if not release(trail):
        await asyncio.to_thread(_flush_shared, trail, wait)
        return
    try:
        await trail.writer.aclose(wait, run_hooks=False)
    finally:
        await asyncio.to_thread(trail.fleet.close)


def _flush_shared(trail: Trail, wait: float) -> None:
    """Closing one of several handles: flush, never stop the others' writer."""
    if trail.writer.closed:
        return
    try:
        trail.writer.flush(wait)
    except AuditTimeoutError as exc:
        logger.warning(
            "finops_audit: %s; the writer still open for the other services on %s "
            "keeps them and retries",
            exc,
            trail.key,
        )


def writing(key: str) -> Trail | None:
    """The open trail on the file ``key`` names, if a service of this process writes it."""
    with _lock:
        trail = _trails.get(key)
    return trail if trail is not None and not trail.writer.closed else None


def trails_to(settings: AuditSettings) -> list[Trail]:
    """Open trails of this process that forward to the same central store."""
    if settings.db_url is None:
        return []
    with _lock:
        return [t for t in _trails.values() if t.settings.db_url == settings.db_url and t.refs > 0]


def _shown(name: str, value: object) -> str:
    if name in _SECRETS and value not in (None, {}):
        return "'***'"
    if hasattr(value, "get_secret_value"):
        return "'***'"
    return repr(value)


def _check(trail: Trail, settings: AuditSettings, redactor: Redact | None) -> None:
    ours, theirs = trail.settings, settings
    clashes = [
        f"{name}={_shown(name, getattr(ours, name))} there, "
        f"{_shown(name, getattr(theirs, name))} here"
        + (" (a different value)" if name in _SECRETS else "")
        for name in MUST_MATCH
        if getattr(ours, name) != getattr(theirs, name)
    ]
    if redactor != trail.redactor:
        clashes.append(f"redactor={trail.redactor!r} there, {redactor!r} here")
    if clashes:
        raise AuditConfigError(
            f"an AuditService already writes {trail.key} with other settings: "
            + "; ".join(clashes)
            + ". Every service on one file shares its writer, so these must agree "
            "(they decide what is written and where it goes): use the same settings, "
            "or another file"
        )
    differ = tuple(
        name
        for name in AuditSettings.model_fields
        if name not in PER_HANDLE
        and name not in MUST_MATCH
        and getattr(ours, name) != getattr(theirs, name)
    )
    if differ and differ not in trail.warned:
        trail.warned.add(differ)
        logger.warning(
            "finops_audit: this AuditService shares the writer already open on %s, "
            "which keeps its settings: %s",
            trail.key,
            ", ".join(f"{n}={getattr(ours, n)!r} (asked: {getattr(theirs, n)!r})" for n in differ),
        )


def _reset_in_child() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
