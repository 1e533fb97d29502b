"""Building the writer of one trail: its store, retention, anchors and forwarders.

Why a module of its own, and a function rather than a method: the writer
outlives an unclosed service (it is drained at interpreter exit), so nothing
it holds may refer back to the service that built it. Everything here is
made from plain values (settings, redactor, chainer) and bound with
``functools.partial``; the first handle on a file calls it (see ``_trails``),
later handles share what it built.
"""

from __future__ import annotations

import functools
from pathlib import Path

from . import _trails
from ._anchors import AnchorLog
from ._chain import Chainer
from ._fleet import Fleet
from ._maintainer import apply_retention
from ._writer import AuditWriter
from .config import AuditSettings
from .forwarding._setup import build_forwarders
from .redaction import Redactor
from .storage.sqlite import SQLiteAuditStore

__all__ = ["build_trail"]


def build_trail(
    settings: AuditSettings,
    redactor: Redactor,
    verifier: Chainer,
    chainer: Chainer | None,
    read_only: bool,
) -> tuple[AuditWriter, Fleet]:
    """The writer of ``settings.db_path`` and the fleet of forwarders its hooks drive.

    ``read_only``: a store opened ``mode=ro`` that never chains, anchors or
    forwards. ``chainer`` is ``None`` without ``AUDIT_HASH_CHAIN``; ``verifier``
    always signs checkpoints and checks the chain.
    """
    # The file is fixed now: a later chdir must not move the trail.
    settings = settings.model_copy(update={"db_path": Path(_trails.trail_key(settings.db_path))})
    retention = (
        functools.partial(apply_retention, settings.retention_days, verifier)
        if settings.retention_days is not None
        else None
    )
    store_factory = functools.partial(
        SQLiteAuditStore,
        settings.db_path,
        synchronous=settings.synchronous,
        busy_timeout=settings.busy_timeout,
        chainer=None if read_only else chainer,
        signer=verifier,
        read_only=read_only,
        anchors=(
            AnchorLog(
                settings.anchor_path.absolute(),  # a later chdir must not move it
                verifier,
                str(settings.db_path),
                settings.anchor_interval,
            )
            if settings.anchor_path is not None and not read_only
            else None
        ),
    )
    # With a central store, retention is applied there (and to the buffer only
    # below the forwarding cursor), never to rows still waiting to be sent.
    forwarders = [] if read_only else build_forwarders(settings, verifier)
    fleet = Fleet(forwarders, settings.forward_timeout)
    if fleet.forwarders:
        retention = None  # the forwarders apply it, never above their cursors
    hooks = fleet.hooks() if fleet.forwarders else None
    return AuditWriter(store_factory, settings, redactor, retention, hooks), fleet
