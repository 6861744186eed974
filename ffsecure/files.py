"""Durable file writes: secrets created 0600 and never briefly readable, and directory fsync.

Keys, wrapped data keys and upload state are written to a temporary file in the
same directory, fsynced, then moved into place; the directory is fsynced so that
the new name survives a crash. A secret that must never be overwritten (a key)
claims its name with a hard link, which fails if the name exists.

Public files (certificates, the CRL, manifests, reports) are written by
:func:`write_public_file`: a temporary file in the same directory, mode 0644,
renamed into place, so a reader sees the old bytes or the new ones.

Private places: :func:`private_dir` creates a directory 0700 and
:func:`restrict` clears the group and other bits of an existing file or
directory. Both tighten what an earlier release (or an operator's umask) left
open and log a warning naming the path and its old mode; a path this process
may not chmod stays as it was, with a warning saying the command to run.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("ffsecure.files")

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


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


def write_public_file(path: str | os.PathLike, data: bytes) -> None:
    """Write a public file atomically (temp file + rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def loose_mode(path: str | os.PathLike) -> int | None:
    """The mode of ``path`` when group or others may use it (the rule :func:`restrict` enforces),
    else None. Raises FileNotFoundError for a missing path."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    return mode if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def restrict(path: str | os.PathLike, mode: int = PRIVATE_FILE_MODE) -> bool:
    """Set ``mode`` on an existing ``path`` that group or others may use; True when it changed."""
    try:
        before = loose_mode(path)
    except FileNotFoundError:
        return False
    if before is None:
        return False
    try:
        os.chmod(path, mode)
    except OSError as exc:
        log.warning(
            "%s is open to group or others (mode %03o) and could not be tightened "
            "(%s): run `chmod %03o %s`",
            path,
            before,
            exc.strerror,
            mode,
            path,
            extra={"event": "permissions_open", "path": str(path), "mode": f"{before:03o}"},
        )
        return False
    log.warning(
        "%s was open to group or others (mode %03o); tightened to %03o",
        path,
        before,
        mode,
        extra={"event": "permissions_tightened", "path": str(path), "mode": f"{before:03o}"},
    )
    return True


def private_dir(path: str | os.PathLike) -> Path:
    """Create directory ``path`` 0700 (missing parents with the default mode), or tighten it."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    restrict(path, PRIVATE_DIR_MODE)
    return path


def create_private_file(path: str | os.PathLike) -> None:
    """Make sure ``path`` exists with mode 0600 (created empty if missing; tightened if open)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    os.close(fd)
    restrict(path, PRIVATE_FILE_MODE)
