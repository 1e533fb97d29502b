"""A backup that cannot be written says why, in the operating system's words.

Why: "cannot write backup" alone sends the operator hunting; the reason
(a read-only volume, a full disk) is what they act on. Real failures on a
tmpfs, as in ``test_no_half_files``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from finops_audit import AuditService, audit_tool_sync
from finops_audit.cli import main
from finops_audit.exceptions import AuditStorageError
from tests.guarantees._support import mount


def _trail(path: Path) -> None:
    with AuditService(path) as service:

        @audit_tool_sync(name="lookup", service=service)
        def lookup(account: str) -> str:
            return account

        lookup(account="acct-1")


def test_a_backup_onto_a_read_only_volume_names_the_reason(tmp_path: Path, tmpfs: Path) -> None:
    db = tmp_path / "trail.db"
    _trail(db)
    mount("-o", "remount,ro", str(tmpfs))
    dest = tmpfs / "nightly" / "trail.db"
    with AuditService(db, read_only=True) as reader, pytest.raises(AuditStorageError) as caught:
        reader.backup(dest)
    assert str(caught.value) == f"cannot write backup {dest}: Read-only file system"
    result = CliRunner().invoke(main, ["backup", "--db", str(db), str(dest)])
    assert result.exit_code == 1
    assert f"cannot write backup {dest}: Read-only file system" in result.output
    assert list(tmpfs.iterdir()) == []
