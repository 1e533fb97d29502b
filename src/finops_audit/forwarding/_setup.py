"""Build a service's forwarders from its settings (decided once, at construction).

The optional drivers are imported here, so a missing extra is a clear
:class:`~finops_audit.AuditConfigError` when the service is created, not a
failure in a background thread later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from .._chain import Chainer
from ..config import AuditSettings
from ..exceptions import AuditConfigError
from ..storage import _sqlite_maintenance as sqlite_maintenance
from ..storage.sqlite import format_timestamp
from ._forwarder import Forwarder

if TYPE_CHECKING:
    from ..storage.postgres import PostgresAuditStore

__all__ = ["build_central_store", "build_forwarders", "configured_sinks"]

logger = logging.getLogger("finops_audit")


def _need(extra: str, module: str, setting: str) -> None:
    raise AuditConfigError(
        f"{setting} needs the optional {module!r} package: pip install 'finops-audit[{extra}]'"
    )


def build_central_store(settings: AuditSettings, chainer: Chainer) -> PostgresAuditStore | None:
    """The reader of the fleet's trail, or None without ``AUDIT_DB_URL``."""
    if settings.db_url is None:
        return None
    try:
        from ..storage.postgres import PostgresAuditStore
    except ImportError:
        _need("postgres", "psycopg", "AUDIT_DB_URL")
    return PostgresAuditStore(settings.db_url.get_secret_value(), chainer=chainer)


def build_forwarders(settings: AuditSettings, chainer: Chainer) -> list[Forwarder]:
    """One forwarder per configured destination, none without one."""
    forwarders: list[Forwarder] = []
    common = {
        "replica_id": settings.replica_id,
        "max_rate": settings.forward_max_rate,
        "interval": settings.forward_interval,
        "close_timeout": settings.forward_timeout,
        "busy_timeout": settings.busy_timeout,
    }
    trim = functools.partial(_trim_buffer, settings, chainer)
    # The trail of record decides what may leave the SQLite file: with a central
    # store, delivered rows after buffer_retention_hours; with OTLP alone the
    # file stays the trail, and retention_days applies to it, below the cursor.
    local_retention = functools.partial(_local_retention, settings, chainer)
    if settings.db_url is not None:
        try:
            from .postgres import PostgresSink, mask_url
        except ImportError:
            _need("postgres", "psycopg", "AUDIT_DB_URL")
        url = settings.db_url.get_secret_value()
        forwarders.append(
            Forwarder(
                settings.db_path,
                functools.partial(PostgresSink, url, chainer),
                sink_name="postgres",
                target=mask_url(url),
                batch_size=settings.forward_batch_size,
                maintenance=functools.partial(_central_maintenance, settings, chainer, trim),
                **common,  # type: ignore[arg-type]
            )
        )
    if settings.otlp_endpoint is not None:
        try:
            from .otlp import OtlpSink
        except ImportError:
            _need("otel", "opentelemetry-proto", "AUDIT_OTLP_ENDPOINT")
        make_otlp = functools.partial(
            OtlpSink,
            settings.otlp_endpoint,
            headers=settings.otlp_headers,
            timeout=settings.otlp_timeout,
            max_records=settings.otlp_batch_size,
            encrypted_fields=settings.otlp_encrypted_fields,
        )
        # No I/O: a bad endpoint or header is an AuditConfigError here, not a
        # failure retried forever in the background.
        target = make_otlp().describe()
        forwarders.append(
            Forwarder(
                settings.db_path,
                make_otlp,
                sink_name="otlp",
                target=target,
                batch_size=settings.forward_batch_size,
                maintenance=None if settings.db_url is not None else local_retention,
                **common,  # type: ignore[arg-type]
            )
        )
    return forwarders


def configured_sinks(settings: AuditSettings) -> tuple[str, ...]:
    """Names of the destinations the settings forward to (cursor keys in the buffer)."""
    names = []
    if settings.db_url is not None:
        names.append("postgres")
    if settings.otlp_endpoint is not None:
        names.append("otlp")
    return tuple(names)


def _purge_delivered(
    settings: AuditSettings, chainer: Chainer, forwarder: Forwarder, cutoff: datetime
) -> int:
    """Delete buffer rows older than ``cutoff`` that every configured sink has."""
    try:
        ceiling = forwarder.min_cursor(configured_sinks(settings))
    except sqlite3.Error as exc:
        logger.warning("finops_audit could not read the forwarding cursors: %s", exc)
        return 0
    if ceiling <= 0:
        return 0
    report = asyncio.run(
        sqlite_maintenance.purge(
            settings.db_path,
            int(settings.busy_timeout * 1000),
            chainer,
            format_timestamp(cutoff),
            max_id=ceiling,
        )
    )
    return report.rows_deleted


def _trim_buffer(settings: AuditSettings, chainer: Chainer, forwarder: Forwarder) -> None:
    """Remove buffer rows older than ``buffer_retention_hours`` that every sink delivered."""
    cutoff = datetime.now(timezone.utc) - timedelta(hours=settings.buffer_retention_hours)
    deleted = _purge_delivered(settings, chainer, forwarder, cutoff)
    if deleted:
        logger.info("finops_audit trimmed %d delivered rows from the buffer", deleted)


def _local_retention(settings: AuditSettings, chainer: Chainer, forwarder: Forwarder) -> None:
    """OTLP alone: ``retention_days`` on the local trail, never above the export cursor."""
    if settings.retention_days is None:
        return
    cutoff = datetime.now(timezone.utc) - timedelta(days=settings.retention_days)
    deleted = _purge_delivered(settings, chainer, forwarder, cutoff)
    if deleted:
        logger.info("finops_audit retention purged %d exported entries", deleted)


def _central_maintenance(
    settings: AuditSettings,
    chainer: Chainer,
    trim: functools.partial[None],
    forwarder: Forwarder,
) -> None:
    """Hourly, by the lease holder: trim the buffer; apply retention centrally."""
    trim(forwarder)
    if settings.retention_days is None:
        return
    store = build_central_store(settings, chainer)
    assert store is not None
    cutoff = datetime.now(timezone.utc) - timedelta(days=settings.retention_days)

    async def purge() -> None:
        try:
            report = await store.purge(cutoff, chainer)
            logger.info("finops_audit central retention: %s", report)
        finally:
            with contextlib.suppress(Exception):
                await store.close()

    asyncio.run(purge())
