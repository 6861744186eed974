"""Resumable upload staging on disk, keyed by (site, upload id).

An upload is a sealed module package sent in chunks. Chunks are written
straight to a file (never collected in memory); every ``commit_every_bytes``
and whenever a stream ends, cleanly or not, the file is fsynced and the
committed offset is written to a small state file (atomically: temp file,
fsync, rename). A site whose connection was cut asks for the committed offset
and continues from there; after a crash, bytes past the committed offset are
dropped, so the offset the server reported is always backed by durable bytes.

Layout::

    uploads/<site-id>/<upload-id>/data        the bytes received so far
    uploads/<site-id>/<upload-id>/state.json  canonical JSON UploadState

The staging root and every directory below it are 0700, ``data`` and
``state.json`` 0600 (a sealed upload is ciphertext, but its size, timing and
site are not for other local users); a root left open by an earlier release
is tightened at start, with a warning.

Only when every byte has arrived and the SHA-256 the site announced matches
(constant-time compare) are the bytes read back for opening and verification.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aggregator.grpc_errors import RequestError
from aggregator.registration import disk_error
from ffsecure import canonical
from ffsecure.errors import FFSecureError
from ffsecure.files import PRIVATE_FILE_MODE, fsync_dir, private_dir
from ffsecure.records.ids import SITE_ID, UPLOAD_ID

READ_CHUNK = 1 << 20


@dataclass
class UploadState:
    """What the server holds durably about one upload."""

    upload_id: str
    site_id: str
    total_size: int
    total_sha256: str  # lowercase hex
    committed_offset: int
    created_at: float
    module_id: str | None = None  # set once the package was registered

    @property
    def registered(self) -> bool:
        return self.module_id is not None


def check_upload_id(upload_id: str) -> str:
    if not UPLOAD_ID.matches(upload_id):
        raise RequestError(
            f"upload id {str(upload_id)[:80]!r} is not {UPLOAD_ID.rule}",
            code="E_UPLOAD_ID",
            hint="use a fresh random 128-bit id, e.g. secrets.token_hex(16)",
        )
    return upload_id


def _check_site(site_id: str) -> str:
    if not SITE_ID.matches(site_id):
        raise RequestError(
            f"site id {site_id!r} is not valid",
            code="E_IDENTITY",
            hint=f"site ids are {SITE_ID.rule}",
        )
    return site_id


def _write_state(directory: Path, state: UploadState) -> None:
    tmp = directory / "state.json.tmp"
    data = canonical.dumps(asdict(state))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / "state.json")
    fsync_dir(directory)


def _read_state(directory: Path) -> UploadState | None:
    try:
        raw = (directory / "state.json").read_bytes()
    except FileNotFoundError:
        return None
    try:
        obj = canonical.loads_canonical(raw, max_bytes=4096)
        return UploadState(**obj)
    except (FFSecureError, TypeError) as exc:
        raise FFSecureError(
            f"upload state in {directory} is unreadable: {exc}",
            code="E_STORE_CORRUPT",
            hint="remove that upload directory; the site will upload again",
        ) from None


class StagedUpload:
    """One upload opened for writing; use as a context manager (commits and unlocks on exit)."""

    def __init__(
        self, staging: UploadStaging, directory: Path, state: UploadState, key: tuple[str, str]
    ):
        self._staging = staging
        self.directory = directory
        self.state = state
        self._key = key
        # Unbuffered: a failed write (disk full) leaves no buffered bytes behind to fail again
        # on close.
        fd = os.open(directory / "data", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        self._fh = os.fdopen(fd, "r+b", buffering=0)
        # Anything past the committed offset may be torn: drop it.
        self._fh.truncate(state.committed_offset)
        self._fh.seek(state.committed_offset)
        self.offset = state.committed_offset
        self._uncommitted = 0
        self._closed = False

    @property
    def complete(self) -> bool:
        return self.offset == self.state.total_size

    def write(self, offset: int, data: bytes) -> None:
        """Append ``data`` which must start at the current end of the upload."""
        if offset != self.offset:
            raise RequestError(
                f"chunk starts at offset {offset}, but the upload continues at {self.offset}",
                code="E_UPLOAD_OFFSET",
                hint=f"call GetUploadStatus and resume at offset {self.offset}",
            )
        if self.offset + len(data) > self.state.total_size:
            raise RequestError(
                f"chunk ends at {self.offset + len(data)}, "
                f"past the announced size {self.state.total_size}",
                code="E_UPLOAD_MISMATCH",
                hint="send exactly total_size bytes",
            )
        try:
            view = memoryview(data)
            while view:
                view = view[self._fh.write(view) :]
        except OSError as exc:
            self._drop_uncommitted()
            raise disk_error(exc, "staging the upload") from None
        self.offset += len(data)
        self._uncommitted += len(data)
        if self._uncommitted >= self._staging.commit_every_bytes:
            self.commit()

    def commit(self) -> None:
        """Make the bytes written so far durable and record the offset."""
        if self._closed or (self._uncommitted == 0 and self.state.committed_offset == self.offset):
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            state = UploadState(**{**asdict(self.state), "committed_offset": self.offset})
            _write_state(self.directory, state)
        except OSError as exc:
            self._drop_uncommitted()
            raise disk_error(exc, "staging the upload") from None
        self.state = state
        self._uncommitted = 0

    def _drop_uncommitted(self) -> None:
        """After a failed write: forget bytes past the committed offset (a new stream resumes)."""
        self._uncommitted = 0
        self.offset = self.state.committed_offset
        try:
            self._fh.seek(0)
            self._fh.truncate(self.offset)
            self._fh.seek(self.offset)
        except (OSError, ValueError):
            pass

    def read_verified(self) -> bytes:
        """Check size and SHA-256 of the complete upload and return its bytes.

        A hash mismatch discards the staged bytes (E_UPLOAD_HASH): they can
        never become valid by resuming.
        """
        if not self.complete:
            raise RequestError(
                f"upload holds {self.offset} of {self.state.total_size} bytes",
                code="E_UPLOAD_INCOMPLETE",
                hint=f"resume at offset {self.offset}",
            )
        self.commit()
        self._fh.seek(0)
        digest = hashlib.sha256()
        while True:
            block = self._fh.read(READ_CHUNK)
            if not block:
                break
            digest.update(block)
        if not hmac.compare_digest(digest.hexdigest(), self.state.total_sha256):
            self.discard()
            raise RequestError(
                "the received bytes do not hash to the announced SHA-256",
                code="E_UPLOAD_HASH",
                hint="upload the package again under a new upload id",
            )
        self._fh.seek(0)
        return self._fh.read()

    def mark_registered(self, module_id: str) -> None:
        """Record the module id and drop the staged bytes (the store holds them now)."""
        self.state.module_id = module_id
        self.state.committed_offset = self.state.total_size
        self._fh.close()
        _write_state(self.directory, self.state)
        (self.directory / "data").unlink(missing_ok=True)
        self._closed = True

    def discard(self) -> None:
        """Remove the upload entirely (bad hash, refused package)."""
        if not self._fh.closed:
            self._fh.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        self._closed = True

    def close(self, *, refused: bool = False) -> None:
        """Commit what arrived and unlock. After a ``refused`` stream an upload that holds no
        durable byte is removed: it has nothing to resume, and it would count against the
        site's ``max_parallel_per_site`` until it went stale."""
        try:
            if not self._closed:
                self.commit()
                self._fh.close()
                self._closed = True
                if refused and self.state.committed_offset == 0 and not self.state.registered:
                    shutil.rmtree(self.directory, ignore_errors=True)
        finally:
            self._staging._release(self._key)

    def __enter__(self) -> StagedUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UploadStaging:
    """The staging area: creates, resumes, reports and cleans up uploads."""

    def __init__(
        self,
        root: Path,
        *,
        max_upload_bytes: int,
        commit_every_bytes: int = 4 << 20,
        max_parallel_per_site: int = 4,
        stale_after_s: float = 86400.0,
    ):
        self.root = private_dir(root)
        self.max_upload_bytes = int(max_upload_bytes)
        self.commit_every_bytes = int(commit_every_bytes)
        self.max_parallel_per_site = int(max_parallel_per_site)
        self.stale_after_s = float(stale_after_s)
        self._lock = threading.Lock()
        self._busy: set[tuple[str, str]] = set()

    def _dir(self, site_id: str, upload_id: str) -> Path:
        return self.root / _check_site(site_id) / check_upload_id(upload_id)

    def status(self, site_id: str, upload_id: str) -> UploadState | None:
        """The durable state of an upload of this site, or None when it holds nothing."""
        return _read_state(self._dir(site_id, upload_id))

    def is_busy(self, site_id: str, upload_id: str) -> bool:
        """Whether a call is writing this upload right now."""
        with self._lock:
            return (site_id, upload_id) in self._busy

    def _release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._busy.discard(key)

    def _staged_count(self, site_id: str) -> int:
        site_dir = self.root / site_id
        if not site_dir.is_dir():
            return 0
        count = 0
        for d in site_dir.iterdir():
            try:
                st = _read_state(d)
            except FFSecureError:
                continue
            if st is not None and not st.registered:
                count += 1
        return count

    def open(
        self, site_id: str, upload_id: str, *, total_size: int, total_sha256: bytes
    ) -> StagedUpload:
        """Create the upload, or resume it at its committed offset. One writer per upload."""
        directory = self._dir(site_id, upload_id)
        if len(total_sha256) != 32:
            raise RequestError(
                "total_sha256 must be 32 bytes",
                code="E_UPLOAD_MISMATCH",
                hint="send the SHA-256 of the whole sealed package",
            )
        if total_size <= 0:
            raise RequestError(
                "total_size must be more than 0",
                code="E_UPLOAD_MISMATCH",
                hint="send the size of the whole sealed package",
            )
        if total_size > self.max_upload_bytes:
            raise RequestError(
                f"upload of {total_size} bytes is larger than the limit of {self.max_upload_bytes}",
                code="E_TOO_LARGE",
                hint="the federation manifest sets the largest module; make the module smaller",
            )
        key = (site_id, upload_id)
        with self._lock:
            if key in self._busy:
                raise RequestError(
                    f"upload {upload_id} is being written by another call",
                    code="E_UPLOAD_BUSY",
                    hint="wait for the earlier stream to end, then resume",
                )
            self._busy.add(key)
        try:
            state = _read_state(directory)
            sha_hex = total_sha256.hex()
            if state is None:
                if self._staged_count(site_id) >= self.max_parallel_per_site:
                    raise RequestError(
                        f"site {site_id} already has {self.max_parallel_per_site} "
                        "unfinished uploads",
                        code="E_UPLOAD_QUOTA",
                        hint="finish or abandon earlier uploads (they expire)",
                    )
                private_dir(directory.parent)
                directory.mkdir(mode=0o700, exist_ok=True)
                state = UploadState(
                    upload_id=upload_id,
                    site_id=site_id,
                    total_size=int(total_size),
                    total_sha256=sha_hex,
                    committed_offset=0,
                    created_at=time.time(),
                )
                _write_state(directory, state)
            elif state.total_size != total_size or not hmac.compare_digest(
                state.total_sha256, sha_hex
            ):
                raise RequestError(
                    f"upload {upload_id} was started with another size or SHA-256",
                    code="E_UPLOAD_MISMATCH",
                    hint="use a new upload id for a different package",
                )
            return StagedUpload(self, directory, state, key)
        except BaseException:
            self._release(key)
            raise

    def cleanup_stale(self, now: float | None = None) -> int:
        """Remove uploads older than ``stale_after_s`` (returns how many).

        Also the staged bytes that a crash left next to an upload already registered.
        """
        now = time.time() if now is None else now
        removed = 0
        for site_dir in self.root.iterdir() if self.root.is_dir() else []:
            if not site_dir.is_dir():
                continue
            for d in site_dir.iterdir():
                try:
                    st = _read_state(d)
                except FFSecureError:
                    st = None
                if st is not None and st.registered and (d / "data").exists():
                    # a crash between recording the registration and dropping the staged bytes
                    (d / "data").unlink(missing_ok=True)
                if st is None or now - st.created_at > self.stale_after_s:
                    with self._lock:
                        if (site_dir.name, d.name) in self._busy:
                            continue
                    shutil.rmtree(d, ignore_errors=True)
                    removed += 1
        return removed
