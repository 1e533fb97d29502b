"""Fixtures of the guarantee tests: a real tmpfs mount, cleaned up whatever happens."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guarantees._support import reap_children


@pytest.fixture(autouse=True)
def _reap_children() -> Iterator[None]:
    """No child process outlives its test, even one that failed half-way."""
    yield
    reap_children()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 256 KiB tmpfs mounted on a folder of ``tmp_path`` (needs root and mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "tmpfs"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        # Writable again first, so nothing that still holds a file blocks the unmount.
        subprocess.run(["mount", "-o", "remount,rw", str(where)], capture_output=True, check=False)
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
