"""The writer's side of encoding: hand-off tuples in, database rows out, one loop a batch.

:class:`RowFormatter` turns nanosecond clocks into the ISO-8601 text of the
design note's schema, redacts every field (parameters, error message, caller
fields, labels) and only then applies the size caps (:mod:`finops_audit._capping`):
a preview is always made from the redacted form. Field encryption, if on,
comes last.

This is the writer's main CPU cost per row, so the loop does the least it can:

* the redaction pre-check runs once for the whole batch
  (:meth:`~finops_audit.redaction.Redactor.candidates`); only the entries it
  flags are walked, only error messages and caller fields that exist are
  scrubbed, and a batch that needs none of it is formatted as it came;
* the ``YYYY-MM-DDTHH:MM:SS.`` prefix is formatted once per second (a
  ``datetime`` costs about 0.8 µs), the microseconds are ``str`` of an int;
* the size checks are inlined: a document under its cap is only decoded.

The stored text is byte for byte what the former per-field methods produced
(:meth:`timestamp`, :meth:`parameters`, :meth:`error` remain, for the fault
rows and the salvage path): the hash chain covers it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from ._capping import cap_text, loads, shrink

if TYPE_CHECKING:
    from ._fieldcrypt import FieldCipher
    from .redaction import Redactor

__all__ = ["RowFormatter"]


def _prefix(second: int) -> str:
    return datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + "."


class RowFormatter:
    """Writer-side conversion of hand-off tuples to database rows."""

    __slots__ = (
        "_cipher",
        "_error_chars",
        "_max_error_bytes",
        "_max_param_bytes",
        "_prefix",
        "_redactor",
        "_second",
    )

    def __init__(
        self,
        max_param_bytes: int,
        redactor: Redactor | None = None,
        max_error_bytes: int = 8192,
        cipher: FieldCipher | None = None,
    ) -> None:
        #: Field encryption (``_fieldcrypt``), last: after redaction, pseudonyms and caps.
        self._cipher = cipher
        self._max_param_bytes = max_param_bytes
        self._max_error_bytes = max_error_bytes
        # At most 4 UTF-8 bytes a character: shorter texts need no measuring.
        self._error_chars = max_error_bytes // 4
        self._redactor = redactor if redactor is not None and redactor.enabled else None
        self._second = -1
        self._prefix = ""

    def timestamp(self, wall_ns: int) -> str:
        second, rest = divmod(wall_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = _prefix(second)
        # str() of an int is about 2.5x cheaper than "%06d" formatting.
        return self._prefix + str(rest // 1000 + 1_000_000)[1:] + "+00:00"

    def parameters(self, encoded: bytes) -> str:
        """Stored text of (already redacted) parameters, within the cap."""
        if len(encoded) > self._max_param_bytes:
            try:
                doc = loads(encoded)
            except ValueError:
                doc = encoded.decode("utf-8", "replace")
            encoded = shrink(doc, self._max_param_bytes, original=len(encoded))
        return encoded.decode("utf-8", "backslashreplace")

    def error(self, text: str | None) -> str | None:
        """Stored text of an (already redacted) error message, within its own cap."""
        if text is None or len(text) <= self._error_chars:
            return text
        return cap_text(text, self._max_error_bytes)

    def _redacted(self, redactor: Redactor, entries: list[Any]) -> list[Any]:
        """``entries`` with every field redacted; the same list if nothing needs it."""
        try:
            flags = redactor.candidates([e[3] for e in entries])
        except Exception:  # the walk decides for itself
            flags = [True] * len(entries)
        out = entries
        for i, entry in enumerate(entries):
            if not flags[i] and entry[5] is None and entry[6] is None:
                continue
            tool, wall, elapsed, args, status, error, caller = entry
            if flags[i]:
                args, error = redactor.entry(args, error, candidate=True)
            elif error is not None:
                error = redactor.message(error)
            if caller is not None:
                caller = redactor.safe_caller(caller)
            if out is entries:
                out = list(entries)
            out[i] = (tool, wall, elapsed, args, status, error, caller)
        return out

    def rows(self, entries: list[Any]) -> list[tuple[Any, ...]]:
        """Convert a batch of hand-off tuples to stored rows in one loop."""
        raws = [e[3] for e in entries] if self._cipher is not None else ()
        if self._redactor is not None:
            entries = self._redacted(self._redactor, entries)
        max_params = self._max_param_bytes
        error_chars = self._error_chars
        second = self._second
        prefix = self._prefix
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        for tool, wall, elapsed, args, status, error, caller in entries:
            now, rest = divmod(wall, 1_000_000_000)
            if now != second:
                second = now
                prefix = _prefix(now)
            stamp = prefix + str(rest // 1000 + 1_000_000)[1:] + "+00:00"
            if len(args) <= max_params:
                text = args.decode("utf-8", "backslashreplace")
            else:
                text = self.parameters(args)
            if error is not None and len(error) > error_chars:
                error = self.error(error)
            if caller is None:  # a literal tuple: no concatenation, no unpacking
                append(
                    (
                        stamp, tool, text, status, error, elapsed / 1_000_000,
                        None, None, None, None, None, None, None, None, None,
                    )
                )  # fmt: skip
            else:
                user, client, version, session, request, auth, trace, span, labels = caller
                append(
                    (
                        stamp, tool, text, status, error, elapsed / 1_000_000,
                        user, client, version, session, request, auth, trace, span,
                        orjson.dumps(labels).decode() if labels else None,
                    )
                )  # fmt: skip
        self._second = second
        self._prefix = prefix
        if self._cipher is not None:
            # rows gain a 16th column, the event id the encryption is bound to
            return self._cipher.rows(rows, raws)
        return rows
