"""Trusted checkpoints: the files an auditor passes with ``--trusted-checkpoint``, read once.

Two kinds of file are taken, told apart by their form before any key is known:

* a signed checkpoint note (C2SP signed note whose text is a
  ``tlog-checkpoint`` body): ``checkpoints/<size>`` of an earlier bundle, a
  site's ``checkpoint.note`` or ``<module id>.deletion.note``;
* a site's upload receipt as ``site-node receipts export`` writes it
  (``<module id>.receipt.json``, read strictly by
  :meth:`ffsecure.records.receipts.Receipt.from_dict`): its checkpoint is the
  trusted one, and its entry must be the log's entry at its index.

Anything else (a site's ``module.json``, other JSON, a binary file) is the
wrong file: :class:`~ffsecure.errors.UsageError` (``E_USAGE``, exit 2) saying
what the file looks like and what to pass instead. A wrong file is never a
finding, since a finding is evidence against the log and a mistake in the
auditor's command line is none. Who controls the input decides the rest: a
file of the right form whose signature, root or entry does not match the
bundle is a finding of the ``trusted-checkpoints`` check (``ffsecure.audit.logcheck``),
whatever the exporter did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ffsecure.errors import FFSecureError, UsageError
from ffsecure.ledger.checkpoint import unverified_checkpoint
from ffsecure.records.receipts import Receipt

__all__ = ["TrustedCheckpoint", "read_trusted"]

_WHAT_TO_PASS = (
    "pass a signed checkpoint note (checkpoints/<size> of an earlier bundle) or a site's "
    "receipts, which the site writes with `site-node receipts export --out DIR` "
    "(DIR/<module id>.receipt.json, DIR/*.note)"
)
#: Keys that only a site's module record (``STATE/modules/<id>/module.json``) has.
_MODULE_RECORD_KEYS = frozenset({"status", "created_at", "data_fingerprint", "train"})
_EVALUATION_KEYS = frozenset({"classifier_id", "salt", "report_sha256"})


@dataclass(frozen=True)
class TrustedCheckpoint:
    """A checkpoint the auditor kept: its label, the note, and the receipt it came in (if any)."""

    label: str
    note: bytes
    receipt: Receipt | None = None


class _NotAReceipt(Exception):
    pass


def _wrong_file(label: str, looks_like: str) -> UsageError:
    return UsageError(
        f"{label} is {looks_like}, not a receipt or a signed checkpoint note",
        hint=_WHAT_TO_PASS,
    )


def _json_kind(obj: object) -> str:
    if not isinstance(obj, dict):
        return f"JSON of another kind (a {type(obj).__name__}, not an object)"
    if obj.keys() >= _MODULE_RECORD_KEYS:
        return "a site's module record (module.json); its receipt is exported separately"
    if obj.keys() >= _EVALUATION_KEYS:
        return "a site's evaluation record (evaluation.json)"
    return "JSON of another kind"


def _from_json(label: str, data: bytes) -> TrustedCheckpoint:
    try:
        obj = json.loads(data)
    except ValueError:
        raise _wrong_file(label, "text that starts like JSON but does not parse") from None
    try:
        receipt = Receipt.from_dict(obj, damaged=_NotAReceipt)
    except _NotAReceipt as why:
        kind = _json_kind(obj)
        detail = "" if "module.json" in kind else f" ({why})"
        raise _wrong_file(label, f"{kind}{detail}") from None
    try:
        # an escaped lone surrogate (\ud800) parses as JSON but is no UTF-8 text
        note = receipt.checkpoint.encode("utf-8")
    except UnicodeEncodeError:
        raise _wrong_file(label, "a receipt whose checkpoint is not UTF-8 text") from None
    try:
        unverified_checkpoint(receipt.checkpoint)
    except FFSecureError as exc:
        looks = f"a receipt whose checkpoint is not a note ({exc.message})"
        raise _wrong_file(label, looks) from None
    return TrustedCheckpoint(label, note, receipt)


def read_trusted(label: str, data: bytes) -> TrustedCheckpoint:
    """Read one ``--trusted-checkpoint`` file; a file of another kind raises ``E_USAGE``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise _wrong_file(label, "a binary file")
    if text.lstrip().startswith(("{", "[")):
        return _from_json(label, data)
    try:
        unverified_checkpoint(text)
    except FFSecureError as exc:
        raise _wrong_file(label, f"text of another kind ({exc.message})") from None
    return TrustedCheckpoint(label, data)
