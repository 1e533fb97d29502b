"""The service's maintenance side: retention, backups and encryption key rotation.

Why a module of its own: these calls change or copy the trail rather than
read it, each with its own safety rule. Purge deletes in small transactions
and leaves a signed checkpoint so the rest still verifies; a backup is an
online, consistent copy; key rotation re-wraps data keys in place and only
makes sense on a local file (central rows keep the wraps they were forwarded
with). They share :class:`~finops_audit._store_access.StoreAccess` with the
reads, so each one first sees every call that returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ._chain import Chainer
from ._durations import parse_duration
from ._rotation import KeyUsage, RotationReport, key_usage, rotate_keys
from ._store_access import StoreAccess
from .exceptions import AuditConfigError
from .maintenance import BackupReport, PurgeReport
from .storage.base import AuditStore

__all__ = ["TrailMaintainer", "apply_retention"]


class TrailMaintainer:
    """Purge, backup and key rotation for one service handle."""

    def __init__(self, access: StoreAccess, verifier: Chainer) -> None:
        self._access = access
        self._verifier = verifier

    def purge(self, older_than: str | int | timedelta) -> PurgeReport:
        cutoff = datetime.now(timezone.utc) - parse_duration(older_than, name="older_than")
        return self._access.ask(lambda store: store.purge(cutoff, self._verifier))

    async def apurge(self, older_than: str | int | timedelta) -> PurgeReport:
        cutoff = datetime.now(timezone.utc) - parse_duration(older_than, name="older_than")
        return await self._access.aask(lambda store: store.purge(cutoff, self._verifier))

    def backup(self, dest: str | os.PathLike[str]) -> BackupReport:
        self._access.catch_up()
        target = Path(dest)
        return self._access.ask(lambda store: store.backup(target))

    async def abackup(self, dest: str | os.PathLike[str]) -> BackupReport:
        await self._access.acatch_up()
        target = Path(dest)
        return await self._access.aask(lambda store: store.backup(target))

    def rotate_keys(
        self, batch_size: int, progress: Callable[[int], None] | None
    ) -> RotationReport:
        opener = self._access.opener
        if opener.keyring is None:
            raise AuditConfigError(
                "rotate-keys needs the keyring: set AUDIT_ENCRYPTION_KEYS (or _FILE) with the "
                "new key first, followed by the old ones"
            )
        self._check_local("rotate-keys")
        if not 1 <= batch_size <= 100_000:
            raise AuditConfigError(f"batch_size must be 1-100000, not {batch_size!r}")
        self._access.catch_up()
        return rotate_keys(
            Path(self._access.settings.db_path),
            opener,
            batch_size=batch_size,
            busy_timeout=self._access.settings.busy_timeout,
            progress=progress,
        )

    def key_usage(self) -> KeyUsage:
        self._check_local("rotate-keys --status")
        self._access.catch_up()
        settings = self._access.settings
        return key_usage(Path(settings.db_path), settings.busy_timeout)

    def _check_local(self, what: str) -> None:
        self._access.check_open()
        if self._access.central is not None:
            raise AuditConfigError(
                f"{what} works on a local trail: run it where AUDIT_DB_PATH is, without "
                "AUDIT_DB_URL (central rows keep the wraps they were forwarded with)"
            )


async def apply_retention(days: float, chainer: Chainer, store: AuditStore) -> PurgeReport:
    """The writer's retention pass: purge what is older than ``days`` (``AUDIT_RETENTION_DAYS``).

    A plain function, bound with ``functools.partial``: the writer outlives an
    unclosed service, so nothing it holds may refer back to the service.
    """
    return await store.purge(datetime.now(timezone.utc) - timedelta(days=days), chainer)
