"""Durable file writes: secrets created 0600 and never briefly readable, and directory fsync.

Keys, wrapped data keys and upload state are written to a temporary file in the
same directory, fsynced, then moved into place; the directory is fsynced so that
the new name survives a crash. A secret that must never be overwritten (a key)
claims its name with a hard link, which fails if the name exists.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of directory ``path`` (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_secret_file(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically and durably.

    With ``overwrite=False`` an existing ``path`` is left as it is and
    :class:`FileExistsError` is raised.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
