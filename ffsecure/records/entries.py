"""Ledger entries: typed events encoded as canonical JSON.

Every entry has exactly the keys ``v`` (format version, 1), ``type``,
``time`` (UTC, RFC 3339, second precision, ``Z``), ``actor``
(``site:<id>``, ``operator:<name>`` or ``aggregator``) and ``facts``. The
bytes of ``ffsecure.canonical.dumps(entry)`` are what the Merkle leaf hashes,
what the store keeps and what the audit bundle exports.

``facts`` carry hashes, ids, lineage and reasons only. Each type names the
facts it must have; keys that would hold bulk data (weights, images,
samples, ...) are refused and an entry is capped at :data:`MAX_ENTRY_BYTES`
(65535: the most a tlog-tiles entry bundle can frame), so that nothing
derived from patients beyond a site's own manifest reaches the public log.
A dataset's or classifier's lineage is logged inline (``modules``) or, past
``ffsecure.records.lineage.INLINE_MAX_BYTES``, as a commitment (``lineage``:
count and SHA-256 of a lineage document exported with the bundle); a
``dataset.synthesized`` entry has exactly one of the two, a
``classifier.trained`` entry at most one.
``crl.loaded`` records the CRL the aggregator put in force (its number, the
SHA-256 of its DER bytes, its thisUpdate/nextUpdate and the CA that verified
it), appended whenever the aggregator loads a CRL other than the last one
recorded; an auditor refuses a bundle CRL older than the newest recorded.
``federation.loaded`` records the federation manifest the aggregator put in
force (its federation id, ``created_at`` and the SHA-256 of its canonical
signed body, the digest the CA's signature covers:
``ffsecure.federation.SignedManifest``), appended at start whenever the
manifest differs from the last one recorded and before any module can be
registered under it; an auditor refuses a manifest other than the newest
recorded. Its facts are exactly these three: the policy itself is public in
``federation.json``, and the log needs only to name which one was enforced.
That is why ``classifier.evaluated`` (a site's report of how a classifier did
on its own test data) carries a salted hash of the report, not its numbers
(``ffsecure.evalreport``).

Typed records. The closed set of types is :class:`EntryType`; each type has
one frozen dataclass (:class:`ModuleRegistered`, ...) whose fields are the
facts it requires (no default) and the optional facts readers use (default
``None``), so the dataclass *is* the list of required facts
(:data:`ENTRY_TYPES` is derived from it). :func:`parse_entry` turns entry
bytes into a record with exactly the checks of :func:`validate_entry`, and
:func:`entry_from_dict` does the same for an entry already decoded; a record
keeps its facts object as logged (``facts``), so ``record.to_bytes()`` is the
byte string it was parsed from. Only facts the rules above check are typed
narrowly (ids, digests, the CRL number and times); a fact the rules leave
free (a reason, a serial, ``destroyed``) is a JSON leaf (``Any``) that its
reader checks, because an old, valid ledger may hold any JSON value there.

To add an entry type: one :class:`EntryType` member, one dataclass here
(registered in :data:`RECORDS`), one handler in ``ffsecure.audit.lineage``;
``tests/unit/test_records_entries.py`` fails until all three exist.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, cast

from ffsecure import canonical
from ffsecure.errors import FormatError, LedgerError
from ffsecure.records.fields import is_int
from ffsecure.records.ids import (
    ACTOR,
    ARTIFACT_ID,
    FEDERATION_ID,
    MODULE_ID,
    SHA256_HEX,
    SITE_ID,
    ArtifactId,
    IdRule,
    ModuleId,
    Sha256Hex,
    SiteId,
)
from ffsecure.records.lineage import (
    LineageCommitment,
    ModuleRef,
    commitment_problem,
    read_commitment,
    read_lineage,
)
from ffsecure.timefmt import RFC3339_FORMAT, now_rfc3339

__all__ = [
    "ENTRY_TYPES",
    "ENTRY_VERSION",
    "FORBIDDEN_FACTS",
    "ID_FACTS",
    "MAX_ENTRY_BYTES",
    "RECORDS",
    "CertRevoked",
    "ClassifierEvaluated",
    "ClassifierPublished",
    "ClassifierRetired",
    "ClassifierTrained",
    "CrlLoaded",
    "DatasetRetired",
    "DatasetSynthesized",
    "Entry",
    "EntryType",
    "FederationLoaded",
    "KeyRotated",
    "LedgerEntry",
    "ModuleDeleted",
    "ModuleDeletionRequested",
    "ModuleRef",
    "ModuleRegistered",
    "check_entry",
    "entry_bytes",
    "entry_from_dict",
    "entry_of",
    "make_entry",
    "parse_entry",
    "validate_entry",
]

ENTRY_VERSION = 1
#: An entry must fit a C2SP tlog-tiles entry bundle, whose length prefix is 16 bits
#: (``ffsecure.ledger.tiles`` imports this one rule).
MAX_ENTRY_BYTES = 0xFFFF


class EntryType(StrEnum):
    """Every entry type the ledger knows; the value is the ``type`` string on the wire."""

    MODULE_REGISTERED = "module.registered"
    DATASET_SYNTHESIZED = "dataset.synthesized"
    CLASSIFIER_TRAINED = "classifier.trained"
    CLASSIFIER_PUBLISHED = "classifier.published"
    CLASSIFIER_EVALUATED = "classifier.evaluated"
    MODULE_DELETION_REQUESTED = "module.deletion_requested"
    MODULE_DELETED = "module.deleted"
    DATASET_RETIRED = "dataset.retired"
    CLASSIFIER_RETIRED = "classifier.retired"
    CERT_REVOKED = "cert.revoked"
    KEY_ROTATED = "key.rotated"
    CRL_LOADED = "crl.loaded"
    FEDERATION_LOADED = "federation.loaded"


def _reader(read: Callable[[Any], Any]) -> Any:
    """Metadata of a fact field whose logged value is converted by ``read``."""
    return {"read": read}


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """What every entry holds; subclasses add the facts of their type as typed fields.

    ``facts`` is the facts object exactly as logged (treat it as read-only): the
    typed fields are read from it, and :meth:`to_dict` gives back the entry.
    """

    TYPE: ClassVar[EntryType]
    time: str
    actor: str
    facts: dict[str, Any] = field(repr=False)

    @property
    def type(self) -> EntryType:
        return self.TYPE

    @classmethod
    def fact_fields(cls) -> tuple[dataclasses.Field[Any], ...]:
        """The fields that are facts (every field but ``time``, ``actor`` and ``facts``)."""
        return tuple(f for f in dataclasses.fields(cls) if f.name not in _BASE_FIELDS)

    @classmethod
    def required_facts(cls) -> tuple[str, ...]:
        """The facts an entry of this type must have: the fact fields without a default."""
        return tuple(f.name for f in cls.fact_fields() if f.default is dataclasses.MISSING)

    @classmethod
    def from_facts(cls, *, time: str, actor: str, facts: dict[str, Any]) -> LedgerEntry:
        """The record of checked entry parts (use :func:`entry_from_dict` for unchecked ones)."""
        values = {}
        for f in cls.fact_fields():
            if f.name in facts:
                read = f.metadata.get("read")
                values[f.name] = read(facts[f.name]) if read else facts[f.name]
        return cls(time=time, actor=actor, facts=facts, **values)

    def to_dict(self) -> dict[str, Any]:
        """The entry as :func:`make_entry` builds it."""
        return {
            "v": ENTRY_VERSION,
            "type": self.TYPE.value,
            "time": self.time,
            "actor": self.actor,
            "facts": self.facts,
        }

    def to_bytes(self) -> bytes:
        """The canonical bytes the log hashes (checked again on the way out)."""
        return entry_bytes(self.to_dict())


_BASE_FIELDS = frozenset(f.name for f in dataclasses.fields(LedgerEntry))


@dataclass(frozen=True, kw_only=True)
class ModuleRegistered(LedgerEntry):
    """A site's verified module entered the store (actor: the uploading site)."""

    TYPE: ClassVar[EntryType] = EntryType.MODULE_REGISTERED
    module_id: ModuleId
    site_id: SiteId
    manifest_sha256: Sha256Hex
    weights_sha256: Sha256Hex


@dataclass(frozen=True, kw_only=True)
class DatasetSynthesized(LedgerEntry):
    """A synthetic dataset was sampled; its lineage is inline (``modules``, None when
    unreadable) or committed (``lineage``): read it with ``resolve_lineage``."""

    TYPE: ClassVar[EntryType] = EntryType.DATASET_SYNTHESIZED
    dataset_id: ArtifactId
    sha256: Sha256Hex
    modules: tuple[ModuleRef, ...] | None = field(default=None, metadata=_reader(read_lineage))
    lineage: LineageCommitment | None = field(default=None, metadata=_reader(read_commitment))


@dataclass(frozen=True, kw_only=True)
class ClassifierTrained(LedgerEntry):
    """A classifier was trained; ``modules`` or ``lineage`` (optional) repeats its dataset's
    lineage, inline or committed."""

    TYPE: ClassVar[EntryType] = EntryType.CLASSIFIER_TRAINED
    classifier_id: ArtifactId
    dataset_id: ArtifactId
    sha256: Sha256Hex
    modules: tuple[ModuleRef, ...] | None = field(default=None, metadata=_reader(read_lineage))
    lineage: LineageCommitment | None = field(default=None, metadata=_reader(read_commitment))


@dataclass(frozen=True, kw_only=True)
class ClassifierPublished(LedgerEntry):
    """A classifier became the one sites download."""

    TYPE: ClassVar[EntryType] = EntryType.CLASSIFIER_PUBLISHED
    classifier_id: ArtifactId


@dataclass(frozen=True, kw_only=True)
class ClassifierEvaluated(LedgerEntry):
    """A site's salted commitment to its evaluation report of a classifier."""

    TYPE: ClassVar[EntryType] = EntryType.CLASSIFIER_EVALUATED
    classifier_id: ArtifactId
    site_id: SiteId
    report_sha256: Sha256Hex


@dataclass(frozen=True, kw_only=True)
class ModuleDeletionRequested(LedgerEntry):
    """A site or an operator asked for a module to be deleted."""

    TYPE: ClassVar[EntryType] = EntryType.MODULE_DELETION_REQUESTED
    module_id: ModuleId
    reason: object


@dataclass(frozen=True, kw_only=True)
class ModuleDeleted(LedgerEntry):
    """A module was crypto-shredded; ``destroyed`` names what was destroyed (its reader checks)."""

    TYPE: ClassVar[EntryType] = EntryType.MODULE_DELETED
    module_id: ModuleId
    reason: object
    destroyed: object


@dataclass(frozen=True, kw_only=True)
class DatasetRetired(LedgerEntry):
    """A dataset may no longer be used (its lineage holds a deleted module, or by hand)."""

    TYPE: ClassVar[EntryType] = EntryType.DATASET_RETIRED
    dataset_id: ArtifactId
    reason: object


@dataclass(frozen=True, kw_only=True)
class ClassifierRetired(LedgerEntry):
    """A classifier may no longer be served."""

    TYPE: ClassVar[EntryType] = EntryType.CLASSIFIER_RETIRED
    classifier_id: ArtifactId
    reason: object


@dataclass(frozen=True, kw_only=True)
class CertRevoked(LedgerEntry):
    """A certificate was revoked (``serial`` as the CA writes it, hex)."""

    TYPE: ClassVar[EntryType] = EntryType.CERT_REVOKED
    serial: object
    reason: object


@dataclass(frozen=True, kw_only=True)
class KeyRotated(LedgerEntry):
    """An aggregator key was replaced."""

    TYPE: ClassVar[EntryType] = EntryType.KEY_ROTATED
    key: object
    new_key_id: object


@dataclass(frozen=True, kw_only=True)
class CrlLoaded(LedgerEntry):
    """The aggregator put a CRL in force (number, DER hash, validity, verifying CA)."""

    TYPE: ClassVar[EntryType] = EntryType.CRL_LOADED
    crl_number: int
    crl_sha256: Sha256Hex
    this_update: str
    next_update: str | None
    issuer_sha256: Sha256Hex


@dataclass(frozen=True, kw_only=True)
class FederationLoaded(LedgerEntry):
    """The aggregator put a federation manifest in force (its id, issue time, signed-body hash)."""

    TYPE: ClassVar[EntryType] = EntryType.FEDERATION_LOADED
    federation_id: str
    federation_sha256: Sha256Hex
    created_at: str


#: Any ledger entry record.
Entry = (
    ModuleRegistered
    | DatasetSynthesized
    | ClassifierTrained
    | ClassifierPublished
    | ClassifierEvaluated
    | ModuleDeletionRequested
    | ModuleDeleted
    | DatasetRetired
    | ClassifierRetired
    | CertRevoked
    | KeyRotated
    | CrlLoaded
    | FederationLoaded
)

#: The record class of each entry type.
RECORDS: dict[EntryType, type[LedgerEntry]] = {
    cls.TYPE: cls
    for cls in (
        ModuleRegistered,
        DatasetSynthesized,
        ClassifierTrained,
        ClassifierPublished,
        ClassifierEvaluated,
        ModuleDeletionRequested,
        ModuleDeleted,
        DatasetRetired,
        ClassifierRetired,
        CertRevoked,
        KeyRotated,
        CrlLoaded,
        FederationLoaded,
    )
}

#: Required facts per entry type (read from the records, in their field order).
ENTRY_TYPES: dict[EntryType, tuple[str, ...]] = {
    kind: cls.required_facts() for kind, cls in RECORDS.items()
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


def _check_time(value: object) -> None:
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise _error(f"entry time {value!r} is not RFC 3339 UTC like 2026-11-22T12:00:00Z")
    try:
        datetime.strptime(value, RFC3339_FORMAT)
    except ValueError:
        raise _error(f"entry time {value!r} is not a real date and time") from None


def _check_crl_facts(facts: dict[str, Any]) -> None:
    """``crl.loaded``: a non-negative integer CRL number and real RFC 3339 times."""
    number = facts["crl_number"]
    if not is_int(number) or number < 0:
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


def _check_federation_facts(facts: dict[str, Any]) -> None:
    """``federation.loaded``: exactly its three facts, a federation id and a real issue time."""
    expected = set(FederationLoaded.required_facts())
    if set(facts) != expected:
        raise _error(
            f"federation.loaded facts are {sorted(facts)}; they must be exactly "
            f"{', '.join(sorted(expected))}"
        )
    if not FEDERATION_ID.matches(facts["federation_id"]):
        raise _error(
            f"fact facts.federation_id is not a {FEDERATION_ID.name} ({FEDERATION_ID.rule})"
        )
    try:
        _check_time(facts["created_at"])
    except LedgerError:
        raise _error(
            f"fact facts.created_at {facts['created_at']!r} is not RFC 3339 UTC like "
            "2026-11-22T12:00:00Z"
        ) from None


def _check_lineage_form(facts: dict[str, Any], *, required: bool) -> None:
    """At most one lineage form (exactly one when ``required``); a commitment well-formed."""
    forms = [key for key in ("modules", "lineage") if key in facts]
    if len(forms) > 1:
        raise _error("facts hold both modules and lineage; an entry logs its lineage one way")
    if required and not forms:
        raise _error("the entry lacks its lineage (facts.modules or facts.lineage)")
    if "lineage" in facts:
        problem = commitment_problem(facts["lineage"])
        if problem is not None:
            raise _error(f"fact facts.lineage {problem}")


#: Checks of the facts' values, per entry type, beyond the shared rules of ``_walk_facts``.
_FACT_CHECKS: dict[EntryType, Callable[[dict[str, Any]], None]] = {
    EntryType.CRL_LOADED: _check_crl_facts,
    EntryType.FEDERATION_LOADED: _check_federation_facts,
    EntryType.DATASET_SYNTHESIZED: lambda facts: _check_lineage_form(facts, required=True),
    EntryType.CLASSIFIER_TRAINED: lambda facts: _check_lineage_form(facts, required=False),
}


def _walk_facts(obj: object, path: str) -> None:
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


def check_entry(entry: object) -> None:
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
    if not isinstance(entry["type"], str) or entry["type"] not in ENTRY_TYPES:
        raise _error(
            f"entry type {entry['type']!r} is unknown",
            hint=f"use one of {', '.join(sorted(ENTRY_TYPES))}",
        )
    kind = EntryType(entry["type"])
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


def make_entry(
    type: str, actor: str, facts: dict[str, Any], time: str | None = None
) -> dict[str, Any]:
    """Build and check a ledger entry; ``time`` defaults to now (UTC).

    ``type`` is an :class:`EntryType` (or its string); the entry holds the plain string.
    """
    entry = {
        "v": ENTRY_VERSION,
        "type": str(type) if isinstance(type, str) else type,
        "time": time or now_rfc3339(),
        "actor": actor,
        "facts": facts,
    }
    entry_bytes(entry)
    return entry


def entry_bytes(entry: dict[str, Any]) -> bytes:
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


def validate_entry(data: bytes) -> dict[str, Any]:
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
    return cast(dict[str, Any], entry)  # check_entry proved it is a JSON object


def entry_from_dict(entry: object) -> Entry:
    """The typed record of a decoded entry; raises LedgerError E_ENTRY as :func:`check_entry`."""
    check_entry(entry)
    return _record(cast(dict[str, Any], entry))  # check_entry proved it is a JSON object


def parse_entry(data: bytes) -> Entry:
    """The typed record of entry bytes, checked exactly as :func:`validate_entry` checks them."""
    return _record(validate_entry(data))


def _record(entry: dict[str, Any]) -> Entry:
    cls = RECORDS[EntryType(entry["type"])]
    record = cls.from_facts(time=entry["time"], actor=entry["actor"], facts=entry["facts"])
    return record  # type: ignore[return-value]


def entry_of(data: bytes, kind: EntryType) -> dict[str, Any] | None:
    """``data`` validated when it is an entry of type ``kind``, else None.

    A byte test first skips the entries that cannot be one (canonical JSON writes the
    ``type`` key exactly as ``"type":"<kind>"``); every candidate is parsed and checked
    (:func:`validate_entry`), so a look-alike inside a fact is never taken for one.
    """
    if f'"type":"{kind.value}"'.encode() not in data:
        return None
    entry = validate_entry(data)
    return entry if entry["type"] == kind else None
