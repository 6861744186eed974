"""Lineage of a dataset or classifier: inline in its ledger entry, or committed to by hash.

A ``dataset.synthesized`` or ``classifier.trained`` entry names the modules it
was made from in one of two forms:

* **inline** (every small federation, and every entry written before this
  form existed): ``facts.modules`` lists ``{"module_id", "weights_sha256"}``
  and a dataset's ``facts.recipe.modules`` repeats each with its ``classes``
  and generator ``family``;
* **committed**, when the inline facts would exceed :data:`INLINE_MAX_BYTES`
  (about 100 modules): ``facts.lineage = {"count": N, "sha256": H}`` and no
  module list at all. ``H`` is the SHA-256 of the **lineage document**, the
  canonical JSON ``{"format": "ffsecure-lineage/v1", "modules": [...]}`` whose
  modules are the recipe's (``classes``, ``family``, ``module_id``,
  ``weights_sha256``), sorted by id, ``N`` of them. The aggregator keeps the
  full recipe with the artifact and exports the document in the audit bundle
  as ``lineage/<H>.json``; a dataset and the classifiers trained on it share
  one document. An entry stays bounded whatever the number of modules.

The signed log binds ``H`` and ``N``, so the document is as trustworthy as
inline facts once its hash is checked. :func:`resolve_lineage` is the one
place an entry's lineage is read, in either form: every reader (the audit's
replay, its deletion checks and report, ``recipe_from_facts``) calls it. It
raises a :class:`LineageError` subclass when the inline list is unreadable
(``E_LINEAGE_FORMAT``), the document is absent (``E_LINEAGE_MISSING``), its
hash or module count differs from the commitment (``E_LINEAGE_COMMITMENT``,
hash compared in constant time) or it is not a well-formed document
(``E_LINEAGE_DOCUMENT``); the audit turns each into its FAILED finding
(``E_AUDIT_LINEAGE_FORMAT`` / ``_MISSING`` / ``_COMMITMENT`` / ``_DOCUMENT``):
whatever an exporter drops, swaps or edits fails the audit.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ffsecure import canonical
from ffsecure.errors import FFSecureError
from ffsecure.records.fields import is_int
from ffsecure.records.ids import MODULE_ID, SHA256_HEX, Sha256Hex

__all__ = [
    "INLINE_MAX_BYTES",
    "LINEAGE_FORMAT",
    "MAX_LINEAGE_DOCUMENT_BYTES",
    "MAX_LINEAGE_MODULES",
    "Lineage",
    "LineageCommitment",
    "LineageCommitmentError",
    "LineageDocument",
    "LineageDocumentError",
    "LineageError",
    "LineageFormatError",
    "LineageMissingError",
    "ModuleRef",
    "commitment_problem",
    "contributors",
    "inline_fits",
    "read_commitment",
    "read_lineage",
    "resolve_lineage",
    "split_counts",
]

LINEAGE_FORMAT = "ffsecure-lineage/v1"
#: Inline facts larger than this commit to a lineage document instead (half the entry cap,
#: leaving room for the recipe, counts and config next to the lineage).
INLINE_MAX_BYTES = 32 * 1024
#: Modules one document may name, and its size: 50,000 modules of ~200 bytes.
MAX_LINEAGE_MODULES = 50_000
MAX_LINEAGE_DOCUMENT_BYTES = 16 << 20
MAX_CLASSES = 4096
_FAMILY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MODULE_KEYS = frozenset({"classes", "family", "module_id", "weights_sha256"})


class LineageError(FFSecureError):
    """An entry's lineage cannot be read; the subclass (and its code) says why."""

    code = "E_LINEAGE_FORMAT"
    default_hint = "the lineage is bound by the signed log; export the bundle again"


class LineageFormatError(LineageError):
    """The entry has no readable lineage (neither a module list nor a commitment)."""

    code = "E_LINEAGE_FORMAT"


class LineageMissingError(LineageError):
    """The entry commits to a lineage document the bundle does not hold."""

    code = "E_LINEAGE_MISSING"


class LineageCommitmentError(LineageError):
    """The lineage document's hash or module count is not the entry's commitment."""

    code = "E_LINEAGE_COMMITMENT"


class LineageDocumentError(LineageError):
    """The lineage document is not canonical, well-formed ffsecure-lineage/v1 JSON."""

    code = "E_LINEAGE_DOCUMENT"


@dataclass(frozen=True)
class ModuleRef:
    """One module of a dataset's or classifier's lineage (``facts.modules``)."""

    module_id: str  # a bare-string item is not checked by the id rule: readers look it up
    weights_sha256: Sha256Hex | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"module_id": self.module_id, "weights_sha256": self.weights_sha256}


def read_lineage(value: object) -> tuple[ModuleRef, ...] | None:
    """``facts.modules`` as module references, or None when absent or not a readable list.

    An item is a module id string or an object with a string ``module_id`` (and,
    optionally, the ``weights_sha256`` the module was registered with).
    """
    if not isinstance(value, list):
        return None
    refs = []
    for item in value:
        if isinstance(item, str):
            refs.append(ModuleRef(item))
        elif isinstance(item, dict) and isinstance(item.get("module_id"), str):
            refs.append(ModuleRef(item["module_id"], item.get("weights_sha256")))
        else:
            return None
    return tuple(refs)


@dataclass(frozen=True)
class LineageCommitment:
    """``facts.lineage``: how many modules the lineage document names, and its SHA-256."""

    count: int
    sha256: Sha256Hex

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sha256": self.sha256}


def commitment_problem(value: object) -> str | None:
    """Why ``value`` is not a ``facts.lineage`` commitment (None when it is one)."""
    if not isinstance(value, dict) or set(value) != {"count", "sha256"}:
        return "is not an object of exactly count and sha256"
    count = value["count"]
    if not is_int(count) or not 1 <= count <= MAX_LINEAGE_MODULES:
        return f"count {count!r} is not an integer 1..{MAX_LINEAGE_MODULES}"
    if not SHA256_HEX.matches(value["sha256"]):
        return "sha256 is not 64 lowercase hex digits"
    return None


def read_commitment(value: object) -> LineageCommitment | None:
    """``facts.lineage`` as a commitment, or None when it is not a well-formed one."""
    if commitment_problem(value) is not None:
        return None
    assert isinstance(value, dict)  # commitment_problem proved it
    return LineageCommitment(value["count"], value["sha256"])


def _module_problem(item: object) -> str | None:
    if not isinstance(item, dict) or set(item) != _MODULE_KEYS:
        return f"is not an object of exactly {', '.join(sorted(_MODULE_KEYS))}"
    if not MODULE_ID.matches(item["module_id"]):
        return f"module_id is not a {MODULE_ID.name} ({MODULE_ID.rule})"
    if not SHA256_HEX.matches(item["weights_sha256"]):
        return "weights_sha256 is not 64 lowercase hex digits"
    family = item["family"]
    if not isinstance(family, str) or not _FAMILY.fullmatch(family):
        return f"family {family!r} is not a generator family name"
    classes = item["classes"]
    if not isinstance(classes, list) or not 0 < len(classes) <= MAX_CLASSES:
        return f"classes is not a list of 1..{MAX_CLASSES} class indices"
    if not all(is_int(c) and 0 <= c < MAX_CLASSES for c in classes):
        return f"classes holds something other than class indices 0..{MAX_CLASSES - 1}"
    if classes != sorted(set(classes)):
        return "classes are not sorted and distinct"
    return None


@dataclass(frozen=True)
class LineageDocument:
    """The modules of a committed lineage, as the recipe records them (sorted by id)."""

    modules: tuple[dict[str, Any], ...]

    @classmethod
    def from_modules(cls, modules: Sequence[Mapping[str, Any]]) -> LineageDocument:
        """The document of a recipe's modules (checked as strictly as a parsed document)."""
        return cls._checked([dict(m) for m in modules])

    @classmethod
    def from_bytes(cls, data: bytes) -> LineageDocument:
        """Parse a document; raises LineageDocumentError unless it is canonical and well-formed."""
        if len(data) > MAX_LINEAGE_DOCUMENT_BYTES:
            raise LineageDocumentError(
                f"the lineage document is {len(data)} bytes, more than {MAX_LINEAGE_DOCUMENT_BYTES}"
            )
        try:
            obj = canonical.loads_canonical(data, max_bytes=MAX_LINEAGE_DOCUMENT_BYTES)
        except FFSecureError as exc:
            raise LineageDocumentError(
                f"the lineage document is not canonical JSON: {exc.message}"
            ) from None
        if not isinstance(obj, dict) or set(obj) != {"format", "modules"}:
            raise LineageDocumentError("a lineage document is an object of format and modules")
        if obj["format"] != LINEAGE_FORMAT:
            raise LineageDocumentError(f"lineage document format {obj['format']!r} is not known")
        if not isinstance(obj["modules"], list):
            raise LineageDocumentError("the lineage document's modules are not a list")
        return cls._checked(obj["modules"])

    @classmethod
    def _checked(cls, modules: list[Any]) -> LineageDocument:
        if not 0 < len(modules) <= MAX_LINEAGE_MODULES:
            raise LineageDocumentError(
                f"a lineage document names 1..{MAX_LINEAGE_MODULES} modules, not {len(modules)}"
            )
        for i, item in enumerate(modules):
            problem = _module_problem(item)
            if problem is not None:
                raise LineageDocumentError(f"lineage document module {i} {problem}")
        ids = [m["module_id"] for m in modules]
        if ids != sorted(set(ids)):
            raise LineageDocumentError("lineage document modules are not sorted by distinct id")
        return cls(tuple(modules))

    def to_bytes(self) -> bytes:
        """The canonical bytes the commitment hashes (and the bundle file holds)."""
        return canonical.dumps({"format": LINEAGE_FORMAT, "modules": list(self.modules)})

    def commitment(self) -> LineageCommitment:
        digest = Sha256Hex(hashlib.sha256(self.to_bytes()).hexdigest())  # a SHA-256 by making
        return LineageCommitment(len(self.modules), digest)

    def refs(self) -> tuple[ModuleRef, ...]:
        return tuple(ModuleRef(m["module_id"], m["weights_sha256"]) for m in self.modules)


@dataclass(frozen=True)
class Lineage:
    """An entry's lineage, whichever form it was logged in.

    ``recipe_modules`` are the recipe's modules (with classes and family): a
    dataset's inline ``facts.recipe.modules`` or the committed document's; None
    for an inline classifier lineage (its dataset has them). ``commitment`` is
    set for the committed form.
    """

    refs: tuple[ModuleRef, ...]
    recipe_modules: tuple[dict[str, Any], ...] | None
    commitment: LineageCommitment | None = None


def split_counts(per_class: int, class_index: int, num_modules: int) -> list[int]:
    """Samples each of ``num_modules`` (sorted by id) gives to one class; sums to ``per_class``.

    The one rule of synthesis (``ffsecure.synthesis.plan_assignments``) and of the audit's
    :func:`contributors`: with more modules covering a class than ``per_class``, some give
    none.
    """
    base, remainder = divmod(per_class, num_modules)
    counts = [base] * num_modules
    for j in range(remainder):
        counts[(class_index + j) % num_modules] += 1
    return counts


def contributors(recipe: object, recipe_modules: Sequence[Mapping[str, Any]]) -> frozenset[str]:
    """The modules whose samples are in a dataset: those of ``recipe_modules`` (each checked,
    with its ``classes``) that synthesis gives a non-zero count for some class.

    ``recipe`` is the entry's ``facts.recipe`` (``num_classes``, ``per_class``). Raises
    :class:`LineageFormatError` when it does not say how many samples each class gets.
    """
    if not isinstance(recipe, Mapping):
        raise LineageFormatError("the dataset has no recipe object (facts.recipe)")
    num_classes, per_class = recipe.get("num_classes"), recipe.get("per_class")
    if not (is_int(num_classes) and 0 < num_classes <= MAX_CLASSES):
        raise LineageFormatError(f"recipe num_classes {num_classes!r} is not 1..{MAX_CLASSES}")
    if not (is_int(per_class) and per_class > 0):
        raise LineageFormatError(f"recipe per_class {per_class!r} is not a positive integer")
    by_class: dict[int, list[str]] = {}  # the modules covering each class, sorted by id
    for m in sorted(recipe_modules, key=lambda m: m["module_id"]):
        for k in m["classes"]:
            by_class.setdefault(k, []).append(m["module_id"])
    out: set[str] = set()
    for k, covering in by_class.items():
        if k < num_classes:
            counts = split_counts(per_class, k, len(covering))
            out.update(mid for mid, count in zip(covering, counts, strict=True) if count)
    return frozenset(out)


def inline_fits(facts: Mapping[str, Any], limit: int = INLINE_MAX_BYTES) -> bool:
    """Whether facts with an inline lineage are small enough to log as they are."""
    return len(canonical.dumps(dict(facts))) <= limit


def _inline(facts: Mapping[str, Any]) -> Lineage:
    refs = read_lineage(facts.get("modules"))
    if refs is None:
        raise LineageFormatError("no readable module lineage (facts.modules or facts.lineage)")
    if not refs:
        # every synthesis has at least one module (E_NO_MODULES); an empty list hides the source
        raise LineageFormatError("the module lineage (facts.modules) names no module")
    recipe = facts.get("recipe")
    modules = recipe.get("modules") if isinstance(recipe, dict) else None
    if modules is None:
        return Lineage(refs, None)
    # what regeneration samples from must be what the lineage names, module for module
    if not isinstance(modules, list):
        raise LineageFormatError("facts.recipe.modules is not a list")
    for i, item in enumerate(modules):
        problem = _module_problem(item)
        if problem is not None:
            raise LineageFormatError(f"facts.recipe.modules[{i}] {problem}")
    named = sorted((r.module_id, r.weights_sha256 or "") for r in refs)
    sampled = sorted((m["module_id"], m["weights_sha256"]) for m in modules)
    if named != sampled:
        raise LineageFormatError(
            "facts.recipe.modules (what the dataset is sampled from) are not the modules "
            "facts.modules names"
        )
    return Lineage(refs, tuple(modules))


def resolve_lineage(facts: Mapping[str, Any], documents: Mapping[str, bytes]) -> Lineage:
    """The lineage of an entry's facts, inline or through its committed document.

    ``documents`` maps a document's SHA-256 (as the bundle names it) to its bytes;
    the bytes are hashed again here, so a name proves nothing. Raises a
    :class:`LineageError` subclass when the lineage cannot be trusted.
    """
    if "lineage" not in facts:
        return _inline(facts)
    raw = facts["lineage"]
    problem = commitment_problem(raw)
    if problem is not None:
        raise LineageFormatError(f"facts.lineage {problem}")
    commitment = read_commitment(raw)
    assert commitment is not None  # commitment_problem found none
    data = documents.get(commitment.sha256)
    if data is None:
        raise LineageMissingError(
            f"the lineage document {commitment.sha256[:12]}… ({commitment.count} modules) "
            "is not in the bundle (lineage/<sha256>.json)"
        )
    digest = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(digest.encode(), commitment.sha256.encode()):
        raise LineageCommitmentError(
            f"the lineage document named {commitment.sha256[:12]}… hashes to {digest[:12]}…: "
            "it is not the document the log commits to"
        )
    document = LineageDocument.from_bytes(data)
    if len(document.modules) != commitment.count:
        raise LineageCommitmentError(
            f"the lineage document names {len(document.modules)} modules; the log commits "
            f"to {commitment.count}"
        )
    return Lineage(document.refs(), document.modules, commitment)
