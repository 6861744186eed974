"""Ledger entries: typed events encoded as canonical JSON.

Every entry has exactly the keys ``v`` (format version, 1), ``type``,
``time`` (UTC, RFC 3339, second precision, ``Z``), ``actor``
(``site:<id>``, ``operator:<name>`` or ``aggregator``) and ``facts``. The
bytes of ``ffsecure.canonical.dumps(entry)`` are what the Merkle leaf hashes,
what the store keeps and what the audit bundle exports.

``facts`` carry hashes, ids, lineage and reasons only. Each type names the
facts it must have; keys that would hold bulk data (weights, images,
samples, ...) are refused and an entry is capped at 64 KiB, so that nothing
derived from patients beyond a site's own manifest reaches the public log.
``crl.loaded`` records the CRL the aggregator put in force (its number, the
SHA-256 of its DER bytes, its thisUpdate/nextUpdate and the CA that verified
it), appended whenever the aggregator loads a CRL other than the last one
recorded; an auditor refuses a bundle CRL older than the newest recorded.
That is why ``classifier.evaluated`` (a site's report of how a classifier did
on its own test data) carries a salted hash of the report, not its numbers
(``ffsecure.evalreport``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ffsecure import canonical
from ffsecure.errors import FormatError, LedgerError
from ffsecure.ids import ACTOR, ARTIFACT_ID, MODULE_ID, SHA256_HEX, SITE_ID, IdRule
from ffsecure.timefmt import RFC3339_FORMAT, now_rfc3339

ENTRY_VERSION = 1
MAX_ENTRY_BYTES = 64 * 1024

#: Required facts per entry type.
ENTRY_TYPES: dict[str, tuple[str, ...]] = {
    "module.registered": ("module_id", "site_id", "manifest_sha256", "weights_sha256"),
    "dataset.synthesized": ("dataset_id", "modules", "sha256"),
    "classifier.trained": ("classifier_id", "dataset_id", "sha256"),
    "classifier.published": ("classifier_id",),
    "classifier.evaluated": ("classifier_id", "site_id", "report_sha256"),
    "module.deletion_requested": ("module_id", "reason"),
    "module.deleted": ("module_id", "reason", "destroyed"),
    "dataset.retired": ("dataset_id", "reason"),
    "classifier.retired": ("classifier_id", "reason"),
    "cert.revoked": ("serial", "reason"),
    "key.rotated": ("key", "new_key_id"),
    "crl.loaded": ("crl_number", "crl_sha256", "this_update", "next_update", "issuer_sha256"),
}

#: Fact keys that could carry bulk or patient-derived data; never allowed.
FORBIDDEN_FACTS = frozenset(
    {
        "weights",
        "images",
        "image",
        "pixels",
        "samples",
        "data",
        "tensor",
        "tensors",
        "labels",
        "blob",
        "dek",
        "kek",
        "private_key",
        "secret",
    }
)

_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
#: Fact keys that hold an id, wherever they appear in ``facts``, and the rule each follows.
ID_FACTS: dict[str, IdRule] = {
    "module_id": MODULE_ID,
    "site_id": SITE_ID,
    "dataset_id": ARTIFACT_ID,
    "classifier_id": ARTIFACT_ID,
}


def _error(
    message: str, hint: str = "build entries with ffsecure.ledger.make_entry"
) -> LedgerError:
    return LedgerError(message, code="E_ENTRY", hint=hint)


def _check_time(value: Any) -> None:
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise _error(f"entry time {value!r} is not RFC 3339 UTC like 2026-11-22T12:00:00Z")
    try:
        datetime.strptime(value, RFC3339_FORMAT)
    except ValueError:
        raise _error(f"entry time {value!r} is not a real date and time") from None


def _check_crl_facts(facts: dict) -> None:
    """``crl.loaded``: a non-negative integer CRL number and real RFC 3339 times."""
    number = facts["crl_number"]
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise _error(f"fact facts.crl_number {number!r} is not a non-negative integer")
    for key in ("this_update", "next_update"):
        value = facts[key]
        if key == "next_update" and value is None:
            continue
        try:
            _check_time(value)
        except LedgerError:
            raise _error(
                f"fact facts.{key} {value!r} is not RFC 3339 UTC like 2026-11-22T12:00:00Z"
            ) from None


#: Checks of the facts' values, per entry type, beyond the shared rules of ``_walk_facts``.
_FACT_CHECKS = {"crl.loaded": _check_crl_facts}


def _walk_facts(obj: Any, path: str) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            where = f"{path}.{key}"
            if key.lower() in FORBIDDEN_FACTS:
                raise _error(
                    f"fact {where} is not allowed in the public ledger",
                    hint="ledger facts hold hashes, ids, lineage and reasons, never data",
                )
            rule = ID_FACTS.get(key)
            if rule is not None and not rule.matches(value):
                raise _error(f"fact {where} is not a {rule.name} ({rule.rule})")
            if (key == "sha256" or key.endswith("_sha256")) and not SHA256_HEX.matches(value):
                raise _error(f"fact {where} is not a SHA-256 hash (64 lowercase hex digits)")
            _walk_facts(value, where)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            _walk_facts(value, f"{path}[{i}]")


def check_entry(entry: Any) -> None:
    """Raise LedgerError E_ENTRY unless ``entry`` is a well-formed ledger entry."""
    if not isinstance(entry, dict):
        raise _error("a ledger entry is a JSON object")
    keys = set(entry)
    if keys != {"v", "type", "time", "actor", "facts"}:
        raise _error(
            f"entry keys are {sorted(keys)}; they must be exactly actor, facts, time, type, v"
        )
    if entry["v"] != ENTRY_VERSION or isinstance(entry["v"], bool):
        raise _error(f"entry version {entry['v']!r} is not supported (expected {ENTRY_VERSION})")
    kind = entry["type"]
    if kind not in ENTRY_TYPES:
        raise _error(
            f"entry type {kind!r} is unknown", hint=f"use one of {', '.join(sorted(ENTRY_TYPES))}"
        )
    _check_time(entry["time"])
    if not ACTOR.matches(entry["actor"]):
        raise _error(
            f"entry actor {entry['actor']!r} is not site:<id>, operator:<name> or aggregator"
        )
    facts = entry["facts"]
    if not isinstance(facts, dict):
        raise _error("entry facts must be a JSON object")
    missing = [k for k in ENTRY_TYPES[kind] if k not in facts]
    if missing:
        raise _error(f"{kind} entry lacks the facts {', '.join(missing)}")
    _walk_facts(facts, "facts")
    if kind in _FACT_CHECKS:
        _FACT_CHECKS[kind](facts)


def make_entry(type: str, actor: str, facts: dict, time: str | None = None) -> dict:
    """Build and check a ledger entry; ``time`` defaults to now (UTC)."""
    entry = {
        "v": ENTRY_VERSION,
        "type": type,
        "time": time or now_rfc3339(),
        "actor": actor,
        "facts": facts,
    }
    entry_bytes(entry)
    return entry


def entry_bytes(entry: dict) -> bytes:
    """Check an entry and return its canonical bytes (the bytes the log hashes)."""
    check_entry(entry)
    try:
        data = canonical.dumps(entry)
    except FormatError as exc:
        raise _error(f"entry cannot be encoded as canonical JSON: {exc.message}") from None
    if len(data) > MAX_ENTRY_BYTES:
        raise _error(
            f"entry is {len(data)} bytes, more than {MAX_ENTRY_BYTES}",
            hint="ledger facts hold hashes and ids; keep bulk data out of the log",
        )
    return data


def validate_entry(data: bytes) -> dict:
    """Parse entry bytes that must be canonical JSON of a well-formed entry."""
    if len(data) > MAX_ENTRY_BYTES:
        raise _error(f"entry is {len(data)} bytes, more than {MAX_ENTRY_BYTES}")
    try:
        entry = canonical.loads_canonical(bytes(data))
    except FormatError as exc:
        raise _error(
            f"entry is not canonical JSON: {exc.message}",
            hint="the entry bytes were altered; entries are exported exactly as hashed",
        ) from None
    check_entry(entry)
    return entry
