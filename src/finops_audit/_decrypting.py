"""Readers see plaintext with the keyring, markers without it: a view over any store.

The service hands every query (its own, the CLI's and the dashboard's, which
all go through ``_store_access.StoreAccess.ask``) a :class:`DecryptingReader` around the
store, so both stores, every entry-returning query and the error groups open
encrypted fields the same way. ``rows_after`` (the export path) stays raw: a
plain export keeps the ciphertext; ``export(decrypt=True)`` opens rows itself
with :func:`open_row`.
"""

from __future__ import annotations

from typing import Any

from ._envelope import ERROR_PREFIX, has_envelope
from ._fieldcrypt import FieldOpener
from .analytics import ErrorGroup
from .maintenance import VerifyReport
from .models import AuditLogEntry
from .storage.base import LogQuery

__all__ = ["DecryptingReader", "open_entry", "open_row", "verify_sealed"]


def _sealed(entry: AuditLogEntry) -> bool:
    error = entry.error_message
    return (error is not None and error.startswith(ERROR_PREFIX)) or has_envelope(entry.parameters)


def open_entry(opener: FieldOpener, entry: AuditLogEntry) -> AuditLogEntry:
    """``entry`` with its encrypted fields opened (or marked); others returned as they are."""
    return entry.model_copy(
        update={
            "parameters": opener.parameters(entry.parameters, entry.event_id),
            "error_message": opener.error(entry.error_message, entry.event_id),
        }
    )


def open_row(opener: FieldOpener, row: dict[str, Any]) -> dict[str, Any]:
    """An export row (``row_to_dict``) with its encrypted fields opened or marked."""
    event_id = row.get("event_id")
    row["parameters"] = opener.parameters(row.get("parameters"), event_id)
    row["error_message"] = opener.error(row.get("error_message"), event_id)
    return row


class DecryptingReader:
    """Wraps a store; entry-returning queries come back opened. Everything else passes."""

    def __init__(self, store: Any, opener: FieldOpener) -> None:
        self._store = store
        self._opener = opener

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _open(self, entries: list[AuditLogEntry], query: LogQuery) -> list[AuditLogEntry]:
        out = []
        for entry in entries:
            if not _sealed(entry):
                out.append(entry)
                continue
            opened = open_entry(self._opener, entry)
            # A substring can hit the base64 of a ciphertext: an entry with encrypted
            # values is kept only if its readable values (or blind index) hold it.
            if query.parameter_value is None or _still_matches(opened, query):
                out.append(opened)
        return out

    async def query(self, query: LogQuery) -> list[AuditLogEntry]:
        return self._open(await self._store.query(query), query)

    async def page_after(self, query: LogQuery, after_id: int) -> list[AuditLogEntry]:
        return self._open(await self._store.page_after(query, after_id), query)

    async def slowest(self, query: LogQuery) -> list[AuditLogEntry]:
        return self._open(await self._store.slowest(query), query)

    async def error_groups(self, query: LogQuery) -> list[ErrorGroup]:
        """Groups as stored; encrypted messages (each ciphertext unique, and no event id
        to open them here) become one ``[encrypted error message]`` group per tool."""
        groups: list[ErrorGroup] = await self._store.error_groups(query)
        out: list[ErrorGroup] = []
        sealed: dict[str, ErrorGroup] = {}
        for group in groups:
            message = group.error_message
            if message is None or not message.startswith(ERROR_PREFIX):
                out.append(group)
                continue
            seen = sealed.get(group.tool_name)
            if seen is None:
                sealed[group.tool_name] = group.model_copy(
                    update={"error_message": "[encrypted error message]"}
                )
                out.append(sealed[group.tool_name])
            else:
                merged = seen.model_copy(
                    update={
                        "count": seen.count + group.count,
                        "first_seen": min(seen.first_seen, group.first_seen),
                        "last_seen": max(seen.last_seen, group.last_seen),
                    }
                )
                out[out.index(seen)] = merged
                sealed[group.tool_name] = merged
        return out


def _still_matches(entry: AuditLogEntry, query: LogQuery) -> bool:
    needles = [n.lower() for n in (query.parameter_value, query.pseudonym) if n]
    text = _readable_text(entry.parameters).lower()
    return any(n in text for n in needles)


def _readable_text(value: Any, depth: int = 0) -> str:
    """Values a search may match: strings and integers, not markers' own words."""
    if isinstance(value, dict):
        if depth > 64:
            return ""
        if value.get("$encrypted") is True:  # only its blind index is searchable
            return _readable_text([value.get("pseudonym"), value.get("pseudonyms")], depth + 1)
        return "\x00".join(_readable_text(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return "\x00".join(_readable_text(v, depth + 1) for v in value)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (str, int)):
        return str(value)
    return ""


async def verify_sealed(
    store: Any, chainer: Any, found: tuple[Any, str], opener: FieldOpener
) -> VerifyReport:
    """The store's ``verify``, then, with the keyring, every encrypted value opened.

    The chain (no key needed) catches a flipped bit or a ciphertext moved to
    another row or column; a key id or wrapped data key that was changed is
    outside it (rotation rewrites them) and is caught here, by decryption.
    """
    report: VerifyReport = await store.verify(chainer, *found)
    if not report.ok or opener.keyring is None:
        return report
    after = 0
    query = LogQuery(limit=2000)
    while True:
        rows: list[dict[str, Any]] = await store.rows_after(query, after)
        for row in rows:
            try:
                opener.parameters(row.get("parameters"), row.get("event_id"), strict=True)
                opener.error(row.get("error_message"), row.get("event_id"), strict=True)
            except ValueError as exc:
                return report.model_copy(
                    update={
                        "ok": False,
                        "first_bad_id": row["id"],
                        "problem": f"row {row['id']}: encrypted {exc}",
                    }
                )
        if len(rows) < query.limit:
            return report
        after = rows[-1]["id"]
