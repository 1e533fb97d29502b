"""Files that appear whole or not at all: written beside their destination, then renamed.

Why: a backup or export that fails half-way (disk full, a read-only folder, a
source that is not a trail, Ctrl-C) must not leave a partial file where the
user expects a good one; a 0-byte backup left behind even made the retry fail
"already exists". So the bytes go to a private (0600) temporary file in the
destination's folder (same filesystem, so the rename is atomic), which is
flushed to disk and renamed only once complete, and removed on any failure.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]

#: What SQLite may create next to a database file.
_COMPANIONS = ("-wal", "-shm", "-journal")


@contextlib.contextmanager
def atomic_path(dest: Path, *, overwrite: bool) -> Iterator[Path]:
    """A new, empty, mode-0600 temporary file beside ``dest``; it becomes ``dest`` on success.

    With ``overwrite=False`` an existing ``dest`` (even one that appeared
    meanwhile) is never replaced: :class:`FileExistsError`. On any exception,
    ``KeyboardInterrupt`` included, the temporary file (and any SQLite
    companion of it) is removed and ``dest`` is left as it was.
    """
    if not overwrite and os.path.lexists(dest):
        raise FileExistsError(f"{dest} already exists")
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        _publish(tmp, dest, overwrite=overwrite)
    except BaseException:
        for path in (tmp, *(Path(f"{tmp}{suffix}") for suffix in _COMPANIONS)):
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    with contextlib.suppress(OSError):
        _fsync(dest.parent)


def _publish(tmp: Path, dest: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)  # fails if dest exists: never replaces one made meanwhile
    except FileExistsError:
        raise FileExistsError(f"{dest} already exists") from None
    except OSError:
        # a filesystem without hard links: check, then rename (a narrow race)
        if os.path.lexists(dest):
            raise FileExistsError(f"{dest} already exists") from None
        os.rename(tmp, dest)
        return
    tmp.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
