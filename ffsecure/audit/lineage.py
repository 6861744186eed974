"""Replay the ledger's events: modules, deletions, datasets, classifiers, revocations, CRLs,
federation manifests.

The replay gives the state at the end of the log (what is live, what was
deleted, which classifier is current) and turns every event that contradicts
the events before it into a finding: a deletion request never honoured, a
deletion or a lineage naming an unknown module, a dataset built from a module
already deleted, a site's evaluation of a classifier never trained, already
retired or already evaluated by that site (or recorded under another
actor), a lineage whose committed document is missing or not the one the
log commits to (``ffsecure.records.lineage.resolve_lineage``, the one reader
of an entry's lineage), and above all a live dataset or classifier whose lineage holds a
deleted module (docs/auditor-guide.md).

Each entry is read into its typed record (``ffsecure.records.entries``) and
handed to the one handler of its type in :data:`HANDLERS`; a handler updates
the replay state, adds its findings and returns the entry's timeline label
(None: the entry is not an event, as a duplicate dataset or classifier is
not). Every :class:`~ffsecure.records.entries.EntryType` has a handler
(``tests/unit/test_records_entries.py`` checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ffsecure.audit.findings import WARNING, Findings
from ffsecure.records.entries import (
    CertRevoked,
    ClassifierEvaluated,
    ClassifierPublished,
    ClassifierRetired,
    ClassifierTrained,
    CrlLoaded,
    DatasetRetired,
    DatasetSynthesized,
    EntryType,
    FederationLoaded,
    KeyRotated,
    ModuleDeleted,
    ModuleDeletionRequested,
    ModuleRegistered,
    entry_from_dict,
)
from ffsecure.records.lineage import (
    Lineage,
    LineageCommitmentError,
    LineageDocumentError,
    LineageError,
    LineageFormatError,
    LineageMissingError,
    contributors,
    resolve_lineage,
)

#: The finding of each reason ``resolve_lineage`` gives for not trusting a lineage.
LINEAGE_FINDINGS: dict[type[LineageError], str] = {
    LineageError: "E_AUDIT_LINEAGE_FORMAT",
    LineageFormatError: "E_AUDIT_LINEAGE_FORMAT",
    LineageMissingError: "E_AUDIT_LINEAGE_MISSING",
    LineageCommitmentError: "E_AUDIT_LINEAGE_COMMITMENT",
    LineageDocumentError: "E_AUDIT_LINEAGE_DOCUMENT",
}
CREATED_BY = {"dataset": EntryType.DATASET_SYNTHESIZED, "classifier": EntryType.CLASSIFIER_TRAINED}


@dataclass
class ModuleState:
    module_id: str
    site_id: str
    registered_index: int
    time: str
    facts: dict
    deleted_index: int | None = None
    deleted_time: str | None = None
    deletion_reason: str | None = None
    requests: list[int] = field(default_factory=list)


@dataclass
class ArtifactState:
    kind: str  # dataset | classifier
    artifact_id: str
    index: int
    time: str
    facts: dict
    modules: list[dict]  # [{"module_id", "weights_sha256"}]
    sha256: str = ""  # the artifact's bytes (facts.sha256)
    #: the modules whose samples it holds (a dataset's non-zero shares; a classifier's dataset's)
    contributors: frozenset[str] = frozenset()
    dataset_id: str | None = None  # a classifier's dataset
    retired_index: int | None = None
    retired_reason: str | None = None
    published_index: int | None = None
    evaluations: dict[str, int] = field(
        default_factory=dict
    )  # site id -> classifier.evaluated entry

    @property
    def live(self) -> bool:
        return self.retired_index is None


@dataclass
class Event:
    """One entry as the timeline shows it."""

    index: int
    time: str
    type: str
    actor: str
    label: str


@dataclass
class LedgerReplay:
    modules: dict[str, ModuleState] = field(default_factory=dict)
    datasets: dict[str, ArtifactState] = field(default_factory=dict)
    classifiers: dict[str, ArtifactState] = field(default_factory=dict)
    revocations: list[tuple[int, dict]] = field(default_factory=list)
    crls: list[tuple[int, dict]] = field(default_factory=list)  # (index, facts) of crl.loaded
    #: (index, facts) of each ``federation.loaded``, in log order
    federations: list[tuple[int, dict]] = field(default_factory=list)
    requests: list[tuple[int, dict]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    #: committed lineage documents by SHA-256 (the bundle's ``lineage/``), read-only
    documents: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    #: datasets and classifiers by (kind, facts.sha256): the same bytes under other ids
    by_bytes: dict[tuple[str, str], list[ArtifactState]] = field(default_factory=dict)

    def current_classifier(self) -> ArtifactState | None:
        """The most recently published live classifier, else the most recent live one."""
        live = [c for c in self.classifiers.values() if c.live]
        published = [c for c in live if c.published_index is not None]
        pool = published or live
        return max(pool, key=lambda c: c.published_index or c.index) if pool else None


def _short(s: str) -> str:
    return s[:8] if len(s) == 32 else s


@dataclass(frozen=True)
class _At:
    """The entry a handler replays: its index and type, and the findings to add to."""

    index: int
    entry_type: str
    findings: Findings

    def add(self, check: str, code: str, message: str, **extra: Any) -> None:
        self.findings.add(
            check, code, message, **extra, entry=self.index, entry_type=self.entry_type
        )


# -- modules ------------------------------------------------------------------


def _module_registered(st: LedgerReplay, at: _At, entry: ModuleRegistered) -> str:
    mid, site = entry.module_id, entry.site_id
    if mid in st.modules:
        first = st.modules[mid].registered_index
        at.add(
            "module-records",
            "E_AUDIT_DUPLICATE_MODULE",
            f"module {mid} is registered again (first at entry {first})",
            module_id=mid,
        )
    else:
        st.modules[mid] = ModuleState(mid, site, at.index, entry.time, entry.facts)
    if entry.actor != f"site:{site}":
        at.add(
            "module-records",
            "E_AUDIT_MODULE_ACTOR",
            f"module {mid} of site {site} is recorded as uploaded by {entry.actor}: a site "
            "registers only its own modules, over its own connection",
            module_id=mid,
        )
    return f"module {_short(mid)} registered by {site}"


def _deletion_requested(st: LedgerReplay, at: _At, entry: ModuleDeletionRequested) -> str:
    mid = entry.module_id
    st.requests.append((at.index, entry.to_dict()))
    module = st.modules.get(mid)
    if module is None:
        at.add(
            "deletions",
            "E_AUDIT_DELETION_UNKNOWN",
            f"deletion requested for module {mid}, which is not registered before entry {at.index}",
            module_id=mid,
        )
    else:
        module.requests.append(at.index)
        owner = module.site_id
        if entry.actor.startswith("site:") and entry.actor != f"site:{owner}":
            at.add(
                "deletions",
                "E_AUDIT_DELETION_ACTOR",
                f"{entry.actor} requested the deletion of module {mid}, which belongs to site "
                f"{owner}: a site may delete only its own modules",
                module_id=mid,
            )
    return f"deletion of {_short(mid)} requested"


def _shredded(destroyed: Any) -> bool:
    """Whether ``destroyed`` lists both the wrapped data key and the blob."""
    if not isinstance(destroyed, list):
        return False
    return {"wrapped_dek", "blob"} <= {item for item in destroyed if isinstance(item, str)}


def _module_deleted(st: LedgerReplay, at: _At, entry: ModuleDeleted) -> str:
    mid = entry.module_id
    module = st.modules.get(mid)
    if module is None:
        at.add(
            "deletions",
            "E_AUDIT_DELETION_UNKNOWN",
            f"module {mid} is deleted but was never registered before entry {at.index}",
            module_id=mid,
        )
    elif module.deleted_index is not None:
        at.add(
            "deletions",
            "E_AUDIT_DELETION_TWICE",
            f"module {mid} is deleted again (first at entry {module.deleted_index})",
            module_id=mid,
        )
    else:
        module.deleted_index, module.deleted_time = at.index, entry.time
        # the entry rules do not type the reason: a hostile bundle may put any JSON value
        # there, and the report shows it as it stands (as it did before the records layer)
        reason = entry.reason
        module.deletion_reason = reason if isinstance(reason, str) else str(reason)
        if not _shredded(entry.destroyed):
            at.add(
                "deletions",
                "E_AUDIT_NOT_SHREDDED",
                f"the deletion of module {mid} does not record destroying both its wrapped "
                f"data key and its blob (destroyed: {entry.destroyed!r})",
                module_id=mid,
            )
        destroyed_weights = entry.facts.get("weights_sha256")
        registered = module.facts.get("weights_sha256")
        # every store has written the fact since deletions existed: one without it, or naming
        # other weights, does not say the aggregator destroyed this module's
        if destroyed_weights is None or destroyed_weights != registered:
            at.add(
                "deletions",
                "E_AUDIT_NOT_SHREDDED",
                f"the deletion of module {mid} records destroying weights "
                f"{str(destroyed_weights)[:12]}…, but the module was registered with weights "
                f"{str(registered)[:12]}… (entry {module.registered_index})",
                module_id=mid,
            )
    return f"module {_short(mid)} deleted"


# -- datasets and classifiers -------------------------------------------------


def _lineage(st: LedgerReplay, at: _At, what: str, facts: dict) -> Lineage | None:
    """The entry's lineage (``resolve_lineage``), or a finding and None when it cannot be read,
    its committed document is missing, or the document is not the one the log commits to."""
    try:
        return resolve_lineage(facts, st.documents)
    except LineageError as exc:
        at.add("lineage", LINEAGE_FINDINGS[type(exc)], f"{what}: {exc.message}")
        return None


def _resolved(st: LedgerReplay, at: _At, what: str, facts: dict) -> list[dict] | None:
    lineage = _lineage(st, at, what, facts)
    return None if lineage is None else [ref.to_dict() for ref in lineage.refs]


def _contributors(lineage: Lineage | None, facts: dict) -> frozenset[str] | None:
    """The modules with samples in a dataset, by the recipe's shares; None (every module of
    the lineage counts) when the recipe does not say."""
    if lineage is None or lineage.recipe_modules is None:
        return None
    try:
        return contributors(facts.get("recipe"), lineage.recipe_modules)
    except LineageError:
        return None


def _dataset_synthesized(st: LedgerReplay, at: _At, entry: DatasetSynthesized) -> str | None:
    aid = entry.dataset_id
    if aid in st.datasets:
        return _made(st, at, "dataset", aid, entry, None)
    lineage = _lineage(st, at, f"dataset {aid}", entry.facts)
    mods = None if lineage is None else [ref.to_dict() for ref in lineage.refs]
    shares = _contributors(lineage, entry.facts)
    recipe = entry.facts.get("recipe")
    recipe_sha = recipe.get("dataset_sha256") if isinstance(recipe, dict) else None
    if recipe_sha is not None and recipe_sha != entry.sha256:
        # regeneration is checked against the recipe's hash: two hashes, two datasets
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_MISMATCH",
            f"dataset {aid}'s recipe is of dataset {str(recipe_sha)[:12]}…, not of the dataset "
            f"the entry names ({entry.sha256[:12]}…)",
        )
    return _made(st, at, "dataset", aid, entry, [] if mods is None else mods, shares)


def _classifier_trained(st: LedgerReplay, at: _At, entry: ClassifierTrained) -> str | None:
    cid = entry.classifier_id
    if cid in st.classifiers:
        return _made(st, at, "classifier", cid, entry, None)
    logged = "modules" in entry.facts or "lineage" in entry.facts
    mods = _resolved(st, at, f"classifier {cid}", entry.facts) if logged else None
    dataset = st.datasets.get(entry.dataset_id)
    if dataset is None:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_UNKNOWN",
            f"classifier {cid} names dataset {entry.dataset_id}, which no earlier entry made",
        )
        return _made(st, at, "classifier", cid, entry, [] if logged and mods is None else mods)
    if not dataset.live:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_RETIRED",
            f"classifier {cid} was trained on dataset {dataset.artifact_id}, retired at entry "
            f"{dataset.retired_index}",
        )
    if mods is None:  # not logged (its dataset's), or unreadable (a finding already)
        mods = dataset.modules
    elif sorted(m["module_id"] for m in mods) != sorted(m["module_id"] for m in dataset.modules):
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_MISMATCH",
            f"classifier {cid} lists other modules than its dataset {dataset.artifact_id}",
        )
    return _made(st, at, "classifier", cid, entry, mods, dataset.contributors)


def _made(
    st: LedgerReplay,
    at: _At,
    kind: str,
    aid: str,
    entry: DatasetSynthesized | ClassifierTrained,
    mods: list[dict] | None,
    shares: frozenset[str] | None = None,
) -> str | None:
    """Record a new dataset or classifier and check every module of its lineage.

    ``shares`` are the modules with samples in it (None: every module of the lineage)."""
    table = st.datasets if kind == "dataset" else st.classifiers
    if aid in table:
        at.add(
            "lineage",
            "E_AUDIT_DUPLICATE_ARTIFACT",
            f"{kind} {aid} appears again (first at entry {table[aid].index})",
        )
        return None
    if mods is None:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_FORMAT",
            f"{kind} {aid} has no readable module lineage (facts.modules)",
        )
        mods = []
    for ref in mods:
        _check_lineage_module(st, at, f"{kind} {aid}", ref)
    artifact = ArtifactState(
        kind,
        aid,
        at.index,
        entry.time,
        entry.facts,
        mods,
        entry.sha256,
        frozenset(m["module_id"] for m in mods) if shares is None else shares,
        entry.dataset_id if isinstance(entry, ClassifierTrained) else None,
    )
    table[aid] = artifact
    st.by_bytes.setdefault((kind, entry.sha256), []).append(artifact)
    return f"{kind} {aid}"


def _check_lineage_module(st: LedgerReplay, at: _At, what: str, ref: dict) -> None:
    """A lineage module must be registered earlier, not deleted, and named with its weights."""
    module = st.modules.get(ref["module_id"])
    if module is None:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_UNKNOWN",
            f"{what} names module {ref['module_id']}, not registered before entry {at.index}",
            module_id=ref["module_id"],
        )
        return
    if module.deleted_index is not None:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_DELETED",
            f"{what} was made from module {module.module_id} after it was deleted "
            f"(entry {module.deleted_index})",
            module_id=module.module_id,
        )
    registered = module.facts.get("weights_sha256")
    if ref.get("weights_sha256") is None:
        # every aggregator has named them: without, the entry does not say which weights
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_HASH",
            f"{what} names module {module.module_id} without the weights it was made from",
            module_id=module.module_id,
        )
    elif ref["weights_sha256"] != registered:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_HASH",
            f"{what} names module {module.module_id} with weights "
            f"{ref['weights_sha256'][:12]}…, registered with {str(registered)[:12]}…",
            module_id=module.module_id,
        )


def _classifier_published(st: LedgerReplay, at: _At, entry: ClassifierPublished) -> str:
    cid = entry.classifier_id
    classifier = _live_classifier(st, cid, "published", at)
    if classifier is not None:
        classifier.published_index = at.index
        for module in _deleted_in(st, classifier):
            at.add(
                "lineage",
                "E_AUDIT_LINEAGE_DELETED",
                f"classifier {cid} is published after module {module.module_id} of its "
                f"lineage was deleted (entry {module.deleted_index}): sites were served a "
                "model made from a deleted module",
                module_id=module.module_id,
            )
        twin = _twin_of_deleted(st, classifier)
        if twin is not None:
            at.add(
                "lineage",
                "E_AUDIT_LINEAGE_DELETED",
                f"classifier {cid} is published, but {twin.describe()}",
                module_id=twin.module.module_id,
            )
    return f"classifier {cid} published"


def _deleted_in(st: LedgerReplay, artifact: ArtifactState) -> list[ModuleState]:
    """The modules of ``artifact``'s lineage deleted so far in the replay."""
    out = []
    for ref in artifact.modules:
        module = st.modules.get(ref["module_id"])
        if module is not None and module.deleted_index is not None:
            out.append(module)
    return out


def _deleted_shares(st: LedgerReplay, artifact: ArtifactState) -> list[ModuleState]:
    """The deleted modules whose samples ``artifact`` holds (its non-zero shares)."""
    return [m for m in _deleted_in(st, artifact) if m.module_id in artifact.contributors]


@dataclass(frozen=True)
class _Twin:
    """Why an artifact carries a deleted module's samples though its lineage does not say so."""

    artifact: ArtifactState  # the one whose lineage holds the module
    module: ModuleState
    via_dataset: str | None = None  # a classifier's dataset, when it is that dataset's bytes

    def describe(self) -> str:
        a = self.artifact
        held = (
            f"{a.kind} {a.artifact_id} (entry {a.index}), whose lineage holds module "
            f"{self.module.module_id}, deleted at entry {self.module.deleted_index}"
        )
        if self.via_dataset is not None:
            return f"its dataset {self.via_dataset} has the bytes ({a.sha256[:12]}…) of {held}"
        return f"its bytes ({a.sha256[:12]}…) are those of {held}"


def _twin_of_deleted(st: LedgerReplay, artifact: ArtifactState) -> _Twin | None:
    """Another artifact of the same bytes made from a deleted module's samples (a retired
    model logged again under a new id and a clean lineage), or, for a classifier, such a
    twin of its dataset; None when there is none.

    Only modules with a share of the samples count: a module of the lineage that the
    recipe gave no sample (more modules cover a class than it has samples) leaves the
    bytes as they are, so retraining without it honestly makes the same bytes again.
    """
    for other in st.by_bytes.get((artifact.kind, artifact.sha256), []):
        dead = _deleted_shares(st, other) if other is not artifact else []
        if dead:
            return _Twin(other, dead[0])
    dataset = st.datasets.get(artifact.dataset_id or "")
    if artifact.kind == "classifier" and dataset is not None:
        for other in st.by_bytes.get(("dataset", dataset.sha256), []):
            dead = _deleted_shares(st, other) if other is not dataset else []
            if dead:
                return _Twin(other, dead[0], via_dataset=dataset.artifact_id)
    return None


def _classifier_evaluated(st: LedgerReplay, at: _At, entry: ClassifierEvaluated) -> str:
    cid, site = entry.classifier_id, entry.site_id
    if entry.actor != f"site:{site}":
        at.add(
            "lineage",
            "E_AUDIT_EVALUATION_ACTOR",
            f"the evaluation of classifier {cid} by site {site} is recorded as made by "
            f"{entry.actor}: a site reports only its own evaluations, over its own connection",
        )
    classifier = _live_classifier(st, cid, f"evaluated by {site}", at)
    if classifier is not None and site in classifier.evaluations:
        at.add(
            "lineage",
            "E_AUDIT_DUPLICATE_EVALUATION",
            f"site {site} evaluates classifier {cid} again (first at entry "
            f"{classifier.evaluations[site]})",
        )
    elif classifier is not None:
        classifier.evaluations[site] = at.index
    return f"classifier {cid} evaluated by {site}"


def _dataset_retired(st: LedgerReplay, at: _At, entry: DatasetRetired) -> str:
    return _retire(st.datasets, at, "dataset", entry.dataset_id, entry.reason)


def _classifier_retired(st: LedgerReplay, at: _At, entry: ClassifierRetired) -> str:
    return _retire(st.classifiers, at, "classifier", entry.classifier_id, entry.reason)


def _retire(table: dict[str, ArtifactState], at: _At, kind: str, aid: str, reason: Any) -> str:
    artifact = table.get(aid)
    if artifact is None:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_UNKNOWN",
            f"{kind} {aid} is retired but no earlier entry made it",
        )
    elif not artifact.live:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_RETIRED",
            f"{kind} {aid} is retired again (first at entry {artifact.retired_index})",
            severity=WARNING,
        )
    else:
        artifact.retired_index, artifact.retired_reason = at.index, reason
    return f"{kind} {aid} retired"


def _live_classifier(st: LedgerReplay, cid: str, what: str, at: _At) -> ArtifactState | None:
    """The classifier ``cid`` if an earlier entry trained it and it is not retired.

    Otherwise a finding, and None.
    """
    classifier = st.classifiers.get(cid)
    if classifier is None:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_UNKNOWN",
            f"classifier {cid} is {what} but no earlier entry trained it",
        )
    elif not classifier.live:
        at.add(
            "lineage",
            "E_AUDIT_LINEAGE_RETIRED",
            f"classifier {cid} is {what} after it was retired (entry {classifier.retired_index})",
        )
    else:
        return classifier
    return None


# -- certificates, keys, CRLs -------------------------------------------------


def _cert_revoked(st: LedgerReplay, at: _At, entry: CertRevoked) -> str:
    st.revocations.append((at.index, entry.to_dict()))
    return f"certificate {str(entry.serial)[:12]} revoked ({entry.reason})"


def _key_rotated(st: LedgerReplay, at: _At, entry: KeyRotated) -> str:
    return f"key {entry.key} rotated"


def _crl_loaded(st: LedgerReplay, at: _At, entry: CrlLoaded) -> str:
    st.crls.append((at.index, entry.facts))
    return f"CRL {entry.crl_number} loaded ({entry.facts.get('revoked', '?')} revoked)"


def _federation_loaded(st: LedgerReplay, at: _At, entry: FederationLoaded) -> str:
    st.federations.append((at.index, entry.facts))
    return (
        f"federation manifest {entry.federation_sha256[:12]}… put in force "
        f"(created {entry.created_at})"
    )


#: One handler per entry type: it updates the state, adds findings, returns the event label.
HANDLERS: dict[EntryType, Callable[[LedgerReplay, _At, Any], str | None]] = {
    EntryType.MODULE_REGISTERED: _module_registered,
    EntryType.MODULE_DELETION_REQUESTED: _deletion_requested,
    EntryType.MODULE_DELETED: _module_deleted,
    EntryType.DATASET_SYNTHESIZED: _dataset_synthesized,
    EntryType.CLASSIFIER_TRAINED: _classifier_trained,
    EntryType.CLASSIFIER_PUBLISHED: _classifier_published,
    EntryType.CLASSIFIER_EVALUATED: _classifier_evaluated,
    EntryType.DATASET_RETIRED: _dataset_retired,
    EntryType.CLASSIFIER_RETIRED: _classifier_retired,
    EntryType.CERT_REVOKED: _cert_revoked,
    EntryType.KEY_ROTATED: _key_rotated,
    EntryType.CRL_LOADED: _crl_loaded,
    EntryType.FEDERATION_LOADED: _federation_loaded,
}


def replay(
    entries: list[dict | None], findings: Findings, documents: Mapping[str, bytes] | None = None
) -> LedgerReplay:
    """Replay well-formed entries in order (malformed ones, None, are already findings).

    ``documents`` are the bundle's committed lineage documents by SHA-256
    (``ffsecure.records.lineage``); an entry committing to one absent or altered is a finding.
    """
    st = LedgerReplay(documents=documents or {})
    for index, raw in enumerate(entries):
        if raw is None:
            continue
        entry = entry_from_dict(raw)
        at = _At(index, entry.type.value, findings)
        label = HANDLERS[entry.type](st, at, entry)
        if label is not None:
            st.events.append(Event(index, entry.time, entry.type.value, entry.actor, label))
    _check_requests_honoured(st, findings)
    _check_live_lineage(st, findings)
    return st


def _check_requests_honoured(st: LedgerReplay, findings: Findings) -> None:
    """Every deletion request is carried out by a ``module.deleted`` entry."""
    for module in st.modules.values():
        if module.deleted_index is not None:
            continue
        for request in module.requests:
            findings.add(
                "deletions",
                "E_AUDIT_DELETION_MISSING",
                f"deletion of module {module.module_id} was requested at entry {request} but no "
                "module.deleted entry carries it out",
                entry=request,
                entry_type=EntryType.MODULE_DELETION_REQUESTED.value,
                module_id=module.module_id,
            )


def _check_live_lineage(st: LedgerReplay, findings: Findings) -> None:
    """No live dataset or classifier holds a deleted module in its lineage, or carries the
    very bytes of one that did (a retired model re-logged under a new id and a clean
    lineage)."""
    for table in (st.datasets, st.classifiers):
        for artifact in table.values():
            if not artifact.live:
                continue
            for module in _deleted_in(st, artifact):
                findings.add(
                    "lineage",
                    "E_AUDIT_LIVE_DELETED",
                    f"{artifact.kind} {artifact.artifact_id} is live (never retired) but its "
                    f"lineage holds module {module.module_id}, deleted at entry "
                    f"{module.deleted_index}",
                    entry=artifact.index,
                    entry_type=CREATED_BY[artifact.kind].value,
                    module_id=module.module_id,
                )
            twin = _twin_of_deleted(st, artifact)
            if twin is not None:
                findings.add(
                    "lineage",
                    "E_AUDIT_LIVE_DELETED",
                    f"{artifact.kind} {artifact.artifact_id} is live, but {twin.describe()}",
                    entry=artifact.index,
                    entry_type=CREATED_BY[artifact.kind].value,
                    module_id=twin.module.module_id,
                )
