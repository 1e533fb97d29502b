"""Results of the operator's commands: verify the hash chain, purge old rows, back up."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["BackupReport", "PurgeReport", "VerifyReport"]


class VerifyReport(BaseModel):
    """Outcome of walking the hash chain.

    ``ok`` is false at the first row where the chain breaks: ``first_bad_id``
    is that row (or the first missing id) and ``problem`` says what is wrong.
    ``legacy_rows`` counts rows written before the chain existed (schema v1).
    ``keyed``: checked with ``AUDIT_HMAC_KEY`` (without it, anyone able to
    rewrite the file can recompute a valid chain). ``anchors_checked``: anchors
    (``verify --anchors``) the trail was checked against; without any, rows
    deleted from the end of the trail may go unnoticed.
    """

    model_config = ConfigDict(frozen=True)

    ok: bool
    rows_checked: int
    legacy_rows: int = 0
    checkpoint_through_id: int | None = None
    first_bad_id: int | None = None
    problem: str | None = None
    keyed: bool = False
    anchors_checked: int = 0


class PurgeReport(BaseModel):
    """Rows removed by a retention purge, and the checkpoint that keeps the chain verifiable."""

    model_config = ConfigDict(frozen=True)

    rows_deleted: int
    through_id: int | None
    batches: int


class BackupReport(BaseModel):
    """An online, consistent copy of the trail."""

    model_config = ConfigDict(frozen=True)

    path: Path
    bytes: int
    rows: int
