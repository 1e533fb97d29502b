"""The exceptions finops_audit raises, under one root.

Each error also subclasses the built-in a caller would catch without knowing
this library, so ``except ValueError`` keeps working::

    AuditError
    ├── AuditConfigError       (ValueError)    a setting or argument is invalid
    ├── AuditClosedError       (RuntimeError)  the service was closed
    ├── AuditQueueFullError    (RuntimeError)  overflow policy "raise" refused an entry
    ├── AuditTimeoutError      (TimeoutError)  flush/close did not finish in time
    ├── AuditUnavailableError  (RuntimeError)  durable, fail-closed: the entry was not committed
    ├── AuditStorageError      (OSError)       the database cannot be used
    └── AuditWriterError       (RuntimeError)  the background writer stopped unexpectedly

Decorators never raise these into the tool they watch, except
``AuditQueueFullError`` when the user chose the ``raise`` overflow policy, and
``AuditUnavailableError`` in durable mode with ``AUDIT_FAIL_CLOSED=true``.
"""

from __future__ import annotations

__all__ = [
    "AuditClosedError",
    "AuditConfigError",
    "AuditError",
    "AuditQueueFullError",
    "AuditStorageError",
    "AuditTimeoutError",
    "AuditUnavailableError",
    "AuditWriterError",
]


class AuditError(Exception):
    """Root of every error finops_audit raises."""


class AuditConfigError(AuditError, ValueError):
    """A setting or a query argument is invalid; the message names it and what is accepted."""


class AuditClosedError(AuditError, RuntimeError):
    """The service (or its writer) was closed; create a new one to go on."""


class AuditQueueFullError(AuditError, RuntimeError):
    """The writer's queue was full and the overflow policy is ``raise``."""


class AuditTimeoutError(AuditError, TimeoutError):
    """A flush or close did not complete within its timeout; entries stay queued."""


class AuditUnavailableError(AuditError, RuntimeError):
    """Durable mode, fail-closed (``AUDIT_DURABILITY=commit``, ``AUDIT_FAIL_CLOSED=true``):
    the call's entry could not be committed within ``block_timeout``, so its
    result is withheld. The tool itself has already run (the audit records a
    finished call), as with Vault's audit devices: no audit, no answer. The
    tool's own exception, if it raised one, is the ``__cause__``. The entry
    stays queued and is still written if the database comes back."""


class AuditStorageError(AuditError, OSError):
    """The audit database could not be opened or written."""


class AuditWriterError(AuditError, RuntimeError):
    """The background writer stopped before it reached a flush (a bug, or a
    ``BaseException`` raised in its thread). ``flush()`` raises it instead of
    waiting forever; entries still queued are kept and the writer restarts at
    the next call or flush. The message says what stopped it."""
