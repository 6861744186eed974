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

Bounded reads of files someone else chose (an audit bundle): :func:`read_regular_file`
reads at most ``cap`` bytes of a regular file, never follows a symbolic link,
never opens a FIFO, socket or device, and never trusts ``st_size``
(``/proc`` files report 0, a file may grow while it is read): the path is
``lstat``-ed, opened with ``O_NOFOLLOW | O_NONBLOCK``, the open descriptor is
``fstat``-ed and must be ``S_ISREG``, and ``cap + 1`` bytes at most are read. It
raises :class:`NotRegularFile` or :class:`FileTooLarge` (each with a ``reason`` to put
in a message) for the caller to turn into its own typed error, and ``OSError``
(``FileNotFoundError`` included) as the operating system reports it. Where the OS has
no ``O_NOFOLLOW`` the ``lstat`` check alone refuses links (with a race).
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
_READ_CHUNK = 1 << 20
# O_NONBLOCK: a FIFO swapped in after the lstat opens at once (and fstat refuses it)
_OPEN_NO_FOLLOW = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
)


class FileRefused(Exception):
    """A file :func:`read_regular_file` would not read; ``reason`` completes "PATH is ..."."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path} is {reason}")
        self.path = path
        self.reason = reason


class NotRegularFile(FileRefused):
    """A symbolic link, folder, FIFO, socket or device where a regular file belongs."""


class FileTooLarge(FileRefused):
    """A regular file longer than the caller's cap (whatever its ``st_size`` said)."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` is, in words for a message ("a symbolic link", "a FIFO", ...)."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((words for test, words in kinds if test(mode)), "a device or special file")


def read_regular_file(path: str | os.PathLike, cap: int) -> bytes:
    """The bytes of regular file ``path``, at most ``cap`` of them (see the module docstring).

    Raises :class:`NotRegularFile`, :class:`FileTooLarge` or ``OSError``.
    """
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, file_kind(mode))
    try:
        fd = os.open(path, _OPEN_NO_FOLLOW)
    except OSError:
        mode = os.lstat(path).st_mode  # swapped since the lstat: say for what
        if stat.S_ISREG(mode):
            raise
        raise NotRegularFile(path, file_kind(mode)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, file_kind(mode))
        chunks: list[bytes] = []
        total = 0
        while total <= cap:
            chunk = os.read(fd, min(_READ_CHUNK, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > cap:
        raise FileTooLarge(path, f"more than the {cap} bytes read from it")
    return b"".join(chunks)


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
