"""The site's state directory: one folder holding everything the node keeps.

Layout (``STATE`` is ``site.state_dir`` in site.toml; created 0700)::

    STATE/keys/site.key            site private key (0600; `enroll`)
    STATE/site.csr                 the CSR for the CA operator (`enroll`)
    STATE/site.pem                 this site's certificate (`install-cert`, verified)
    STATE/ca.pem                   the federation CA certificate (`install-cert`)
    STATE/federation.json          the CA-signed federation manifest (`install-cert`, verified)
    STATE/checkpoint.note          the newest log checkpoint this site verified
    STATE/data.json                fingerprint of the data the last module was trained on
    STATE/modules/<id>/package.ffpk   the signed module package (`train`)
    STATE/modules/<id>/sealed.bin     the HPKE envelope being uploaded (removed once registered)
    STATE/modules/<id>/module.json    status, training report, upload id, receipt, deletion
    STATE/classifiers/<id>/...        downloaded classifiers and their local evaluation
    STATE/train.now                trigger file: `run` trains at its next check and removes it
    STATE/lock                     held (flock) by the command using the state

``module.json`` status moves ``trained`` -> ``sealed`` (upload id fixed) ->
``registered`` (verified receipt stored) -> ``deleted`` (verified deletion
entries stored). Two statuses take a module out of the upload queue for good
and keep why in the record:

* ``refused``: the site's own privacy-policy check failed before the module
  was ever sealed (``error.by = "site"``), or the aggregator refused it for
  good (policy, signature: ``error.by = "aggregator"``); ``error`` holds the
  code, message, hint, who refused and when. For ``by = "aggregator"`` the
  message and hint are the aggregator's words, and ``error.recheck`` the site's
  own re-run of that check (:mod:`site_node.refusals`); a refusal it
  contradicts is stored as ``E_REFUSAL_CONTRADICTED`` (an alarm: the site's
  finding as the message, the aggregator's words under ``error.aggregator``);
* ``discarded``: the site's operator took it out of the queue
  (``site-node discard``); ``discarded`` holds the reason, the time and the
  status it had.

Neither is ever sent again (only ``trained`` and ``sealed`` are pending).
Every record is written atomically (temp file + rename).
"""

from __future__ import annotations

import contextlib
import fcntl  # POSIX only: site_node.platforms stops site-node on other platforms first
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ffsecure import pki, timefmt
from ffsecure.errors import FFSecureError, FormatError, NotFoundError, TransientError
from ffsecure.records.ids import MAX_REASON_CHARS, check_module_id, clean_reason

STATUSES = ("trained", "sealed", "registered", "refused", "deleted", "discarded")
PENDING = ("trained", "sealed")  # the upload queue
DISCARDABLE = ("trained", "sealed", "refused")
REFUSED_BY = ("site", "aggregator")


class StateError(FFSecureError):
    """The state directory is missing something, or is in use."""

    code = "E_STATE"


class StateLockedError(StateError, TransientError):
    """Another site-node command holds ``STATE/lock``; retry when it is done."""

    code = "E_STATE_LOCKED"


@dataclass
class ModuleRecord:
    """What the site knows about one of its modules (``module.json``)."""

    module_id: str
    status: str
    created_at: str
    classes: list[int]
    n_train: int
    data_fingerprint: str
    train: dict = field(default_factory=dict)  # epochs, final_loss, seconds, dp (or None)
    upload_id: str | None = None
    receipt: dict | None = None
    deletion: dict | None = None
    error: dict | None = None  # why it was refused (code, message, hint, by, time)
    discarded: dict | None = None  # why the operator discarded it (reason, time, previous_status)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict) -> ModuleRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in obj.items() if k in known})

    @classmethod
    def read(cls, path: Path) -> ModuleRecord:
        """Read ``module.json``; a damaged file raises ``E_STATE_CORRUPT`` naming it."""
        try:
            obj = json.loads(Path(path).read_text())
            if not isinstance(obj, dict):
                raise TypeError("not a JSON object")
            return cls.from_dict(obj)
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            raise state_corrupt(str(exc), f"module record {path}") from None


class ModuleStatusError(StateError):
    """The module's status does not allow what was asked (e.g. discarding a registered module)."""

    code = "E_MODULE_STATUS"


def refusal(exc: FFSecureError, *, by: str, recheck: dict | None = None) -> dict:
    """The ``error`` record of a refused module: the error, who refused it and when, and for a
    refusal by the aggregator the site's own re-run of its check (``recheck``,
    :class:`site_node.refusals.Recheck`)."""
    if by not in REFUSED_BY:
        raise ValueError(by)
    record = {**exc.to_dict(), "by": by, "time": timefmt.now_rfc3339()}
    if recheck is not None:
        record["recheck"] = recheck
    return record


def state_corrupt(why: str, what: str) -> FormatError:
    """``what`` in the site's own state is damaged: not the aggregator's doing, and not fixed by
    retrying."""
    return FormatError(
        f"{what} is damaged: {why}",
        code="E_STATE_CORRUPT",
        hint="restore STATE/modules from the site's backup (or move the module's folder out of "
        "STATE/modules to go on without it); the aggregator's ledger still holds the "
        "registration, which `site-node status` checks once the file is restored",
    )


def _write_json(path: Path, obj: Any) -> None:
    pki.write_public_file(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


class StateDir:
    """Typed access to ``STATE`` (paths, module records, the stored checkpoint, the lock)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- paths -------------------------------------------------------------
    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def cert(self) -> Path:
        return self.root / "site.pem"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def federation(self) -> Path:
        return self.root / "federation.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.note"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def modules_dir(self) -> Path:
        return self.root / "modules"

    @property
    def classifiers_dir(self) -> Path:
        return self.root / "classifiers"

    def module_dir(self, module_id: str) -> Path:
        return self.modules_dir / check_module_id(module_id)

    def package_path(self, module_id: str) -> Path:
        return self.module_dir(module_id) / "package.ffpk"

    def sealed_path(self, module_id: str) -> Path:
        return self.module_dir(module_id) / "sealed.bin"

    # -- setup ---------------------------------------------------------------
    def ensure(self) -> StateDir:
        for d in (self.root, self.keys_dir, self.modules_dir, self.classifiers_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        return self

    def require_installed(self) -> None:
        missing = [p.name for p in (self.cert, self.ca_cert, self.federation) if not p.exists()]
        if missing:
            raise StateError(
                f"{self.root} lacks {', '.join(missing)}",
                hint="run `site-node enroll`, send the CSR to the CA operator, then "
                "`site-node install-kit` with the kit (or `install-cert` with loose files)",
                code="E_NOT_INSTALLED",
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``STATE/lock`` so that two site-node commands never change the state at once."""
        self.ensure()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateLockedError(
                    f"{self.root} is in use by another site-node command",
                    hint="wait for it to finish (or stop `site-node run`)",
                ) from None
            yield
        finally:
            os.close(fd)

    # -- modules -------------------------------------------------------------
    def save_module(self, record: ModuleRecord) -> None:
        if record.status not in STATUSES:
            raise ValueError(record.status)
        d = self.module_dir(record.module_id)
        d.mkdir(parents=True, exist_ok=True)
        _write_json(d / "module.json", record.to_dict())

    def load_module(self, module_id: str) -> ModuleRecord:
        path = self.module_dir(module_id) / "module.json"
        if not path.exists():
            raise NotFoundError(
                f"module {module_id} is not in {self.modules_dir}",
                hint="`site-node status` lists this site's modules",
            )
        return ModuleRecord.read(path)

    def refuse_module(
        self, record: ModuleRecord, exc: FFSecureError, *, by: str, recheck: dict | None = None
    ) -> ModuleRecord:
        """Mark ``record`` refused (out of the queue for good) with ``exc`` (and ``recheck``,
        see :func:`refusal`); drop its envelope."""
        record.status = "refused"
        record.error = refusal(exc, by=by, recheck=recheck)
        self.save_module(record)
        self.sealed_path(record.module_id).unlink(missing_ok=True)
        return record

    def discard_module(self, module_id: str, reason: str) -> ModuleRecord:
        """Take a module out of the upload queue for good, recording why; drop its envelope.

        Only a module not registered (``trained``, ``sealed``, ``refused``) can be
        discarded; a registered one is deleted with ``site-node forget``.
        """
        cleaned = clean_reason(reason)
        if cleaned is None:
            raise StateError(
                f"the reason must be 1..{MAX_REASON_CHARS} printable characters",
                code="E_REASON",
                hint='say why, e.g. --reason "trained on the wrong data"',
            )
        record = self.load_module(module_id)
        if record.status not in DISCARDABLE:
            raise ModuleStatusError(
                f"module {module_id} is {record.status}; only a module not yet "
                f"registered ({', '.join(DISCARDABLE)}) can be discarded",
                hint="to remove a registered module from the federation, use `site-node forget`",
            )
        record.discarded = {
            "reason": cleaned,
            "time": timefmt.now_rfc3339(),
            "previous_status": record.status,
        }
        record.status = "discarded"
        self.save_module(record)
        self.sealed_path(module_id).unlink(missing_ok=True)
        return record

    def pending(self) -> list[ModuleRecord]:
        """The upload queue: modules ``trained`` or ``sealed``, oldest first."""
        return [r for r in self.modules() if r.status in PENDING]

    def module_ids(self) -> list[str]:
        """The ids of the modules on record (their folders' names; no record is read)."""
        if not self.modules_dir.is_dir():
            return []
        return sorted(d.name for d in self.modules_dir.iterdir() if (d / "module.json").is_file())

    def modules(self) -> list[ModuleRecord]:
        if not self.modules_dir.is_dir():
            return []
        out = []
        for d in sorted(self.modules_dir.iterdir()):
            if (d / "module.json").exists():
                out.append(ModuleRecord.read(d / "module.json"))
        return sorted(out, key=lambda r: (r.created_at, r.module_id))

    # -- small records ---------------------------------------------------------
    def read_checkpoint(self) -> str | None:
        return self.checkpoint.read_text() if self.checkpoint.exists() else None

    def write_checkpoint(self, note: str) -> None:
        pki.write_public_file(self.checkpoint, note.encode())

    def read_data(self) -> dict | None:
        return json.loads(self.data.read_text()) if self.data.exists() else None

    def write_data(self, record: dict) -> None:
        _write_json(self.data, record)
