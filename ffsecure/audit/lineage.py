"""Replay the ledger's events: modules, deletions, datasets, classifiers, revocations, CRLs.

The replay gives the state at the end of the log (what is live, what was
deleted, which classifier is current) and turns every event that contradicts
the events before it into a finding: a deletion request never honoured, a
deletion or a lineage naming an unknown module, a dataset built from a module
already deleted, a site's evaluation of a classifier never trained, already
retired or already evaluated by that site (or recorded under another actor), and above all a live dataset or classifier whose lineage holds
a deleted module (docs/auditor-guide.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ffsecure.audit.findings import WARNING, Findings

CREATED_BY = {"dataset": "dataset.synthesized", "classifier": "classifier.trained"}


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
    requests: list[tuple[int, dict]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def current_classifier(self) -> ArtifactState | None:
        """The most recently published live classifier, else the most recent live one."""
        live = [c for c in self.classifiers.values() if c.live]
        published = [c for c in live if c.published_index is not None]
        pool = published or live
        return max(pool, key=lambda c: c.published_index or c.index) if pool else None


def _lineage(facts: dict) -> list[dict] | None:
    mods = facts.get("modules")
    if not isinstance(mods, list):
        return None
    out = []
    for m in mods:
        if isinstance(m, str):
            out.append({"module_id": m, "weights_sha256": None})
        elif isinstance(m, dict) and isinstance(m.get("module_id"), str):
            out.append({"module_id": m["module_id"], "weights_sha256": m.get("weights_sha256")})
        else:
            return None
    return out


def _short(s: str) -> str:
    return s[:8] if len(s) == 32 else s


def replay(entries: list[dict | None], findings: Findings) -> LedgerReplay:
    """Replay well-formed entries in order (malformed ones are already findings)."""
    st = LedgerReplay()
    for i, e in enumerate(entries):
        if e is None:
            continue
        t, f = e["type"], e["facts"]
        where = dict(entry=i, entry_type=t)
        label = t
        if t == "module.registered":
            mid = f["module_id"]
            label = f"module {_short(mid)} registered by {f['site_id']}"
            if mid in st.modules:
                findings.add(
                    "module-records",
                    "E_AUDIT_DUPLICATE_MODULE",
                    f"module {mid} is registered again (first at entry {st.modules[mid].registered_index})",
                    module_id=mid,
                    **where,
                )
            else:
                st.modules[mid] = ModuleState(mid, f["site_id"], i, e["time"], f)
            if e["actor"] != f"site:{f['site_id']}":
                findings.add(
                    "module-records",
                    "E_AUDIT_MODULE_ACTOR",
                    f"module {mid} of site {f['site_id']} is recorded as uploaded by {e['actor']}: a site "
                    "registers only its own modules, over its own connection",
                    module_id=mid,
                    **where,
                )
        elif t == "module.deletion_requested":
            mid = f["module_id"]
            label = f"deletion of {_short(mid)} requested"
            st.requests.append((i, e))
            if mid not in st.modules:
                findings.add(
                    "deletions",
                    "E_AUDIT_DELETION_UNKNOWN",
                    f"deletion requested for module {mid}, which is not registered before entry {i}",
                    module_id=mid,
                    **where,
                )
            else:
                st.modules[mid].requests.append(i)
                owner = st.modules[mid].site_id
                if e["actor"].startswith("site:") and e["actor"] != f"site:{owner}":
                    findings.add(
                        "deletions",
                        "E_AUDIT_DELETION_ACTOR",
                        f"{e['actor']} requested the deletion of module {mid}, which belongs to site "
                        f"{owner}: a site may delete only its own modules",
                        module_id=mid,
                        **where,
                    )
        elif t == "module.deleted":
            mid = f["module_id"]
            label = f"module {_short(mid)} deleted"
            m = st.modules.get(mid)
            if m is None:
                findings.add(
                    "deletions",
                    "E_AUDIT_DELETION_UNKNOWN",
                    f"module {mid} is deleted but was never registered before entry {i}",
                    module_id=mid,
                    **where,
                )
            elif m.deleted_index is not None:
                findings.add(
                    "deletions",
                    "E_AUDIT_DELETION_TWICE",
                    f"module {mid} is deleted again (first at entry {m.deleted_index})",
                    module_id=mid,
                    **where,
                )
            else:
                m.deleted_index, m.deleted_time, m.deletion_reason = i, e["time"], f.get("reason")
                destroyed = f.get("destroyed")
                if not (isinstance(destroyed, list) and {"wrapped_dek", "blob"} <= set(destroyed)):
                    findings.add(
                        "deletions",
                        "E_AUDIT_NOT_SHREDDED",
                        f"the deletion of module {mid} does not record destroying both its wrapped data "
                        f"key and its blob (destroyed: {destroyed!r})",
                        module_id=mid,
                        **where,
                    )
        elif t in ("dataset.synthesized", "classifier.trained"):
            kind = "dataset" if t == "dataset.synthesized" else "classifier"
            aid = f["dataset_id" if kind == "dataset" else "classifier_id"]
            table = st.datasets if kind == "dataset" else st.classifiers
            label = f"{kind} {aid}"
            if aid in table:
                findings.add(
                    "lineage",
                    "E_AUDIT_DUPLICATE_ARTIFACT",
                    f"{kind} {aid} appears again (first at entry {table[aid].index})",
                    **where,
                )
                continue
            mods = _lineage(f)
            ds = None
            if kind == "classifier":
                ds = st.datasets.get(f["dataset_id"])
                if ds is None:
                    findings.add(
                        "lineage",
                        "E_AUDIT_LINEAGE_UNKNOWN",
                        f"classifier {aid} names dataset {f['dataset_id']}, which no earlier entry made",
                        **where,
                    )
                elif not ds.live:
                    findings.add(
                        "lineage",
                        "E_AUDIT_LINEAGE_RETIRED",
                        f"classifier {aid} was trained on dataset {ds.artifact_id}, retired at entry "
                        f"{ds.retired_index}",
                        **where,
                    )
                if mods is None and ds is not None:
                    mods = ds.modules
                elif (
                    mods is not None
                    and ds is not None
                    and sorted(m["module_id"] for m in mods)
                    != sorted(m["module_id"] for m in ds.modules)
                ):
                    findings.add(
                        "lineage",
                        "E_AUDIT_LINEAGE_MISMATCH",
                        f"classifier {aid} lists other modules than its dataset {ds.artifact_id}",
                        **where,
                    )
            if mods is None:
                findings.add(
                    "lineage",
                    "E_AUDIT_LINEAGE_FORMAT",
                    f"{kind} {aid} has no readable module lineage (facts.modules)",
                    **where,
                )
                mods = []
            for m in mods:
                ms = st.modules.get(m["module_id"])
                if ms is None:
                    findings.add(
                        "lineage",
                        "E_AUDIT_LINEAGE_UNKNOWN",
                        f"{kind} {aid} names module {m['module_id']}, not registered before entry {i}",
                        module_id=m["module_id"],
                        **where,
                    )
                    continue
                if ms.deleted_index is not None:
                    findings.add(
                        "lineage",
                        "E_AUDIT_LINEAGE_DELETED",
                        f"{kind} {aid} was made from module {ms.module_id} after it was deleted "
                        f"(entry {ms.deleted_index})",
                        module_id=ms.module_id,
                        **where,
                    )
                if m.get("weights_sha256") and m["weights_sha256"] != ms.facts.get(
                    "weights_sha256"
                ):
                    findings.add(
                        "lineage",
                        "E_AUDIT_LINEAGE_HASH",
                        f"{kind} {aid} names module {ms.module_id} with weights "
                        f"{m['weights_sha256'][:12]}…, registered with "
                        f"{str(ms.facts.get('weights_sha256'))[:12]}…",
                        module_id=ms.module_id,
                        **where,
                    )
            table[aid] = ArtifactState(kind, aid, i, e["time"], f, mods)
        elif t == "classifier.published":
            cid = f["classifier_id"]
            label = f"classifier {cid} published"
            c = _live_classifier(st, cid, "published", findings, where)
            if c is not None:
                c.published_index = i
        elif t == "classifier.evaluated":
            cid, site = f["classifier_id"], f["site_id"]
            label = f"classifier {cid} evaluated by {site}"
            if e["actor"] != f"site:{site}":
                findings.add(
                    "lineage",
                    "E_AUDIT_EVALUATION_ACTOR",
                    f"the evaluation of classifier {cid} by site {site} is recorded as made by {e['actor']}: "
                    "a site reports only its own evaluations, over its own connection",
                    **where,
                )
            c = _live_classifier(st, cid, f"evaluated by {site}", findings, where)
            if c is not None and site in c.evaluations:
                findings.add(
                    "lineage",
                    "E_AUDIT_DUPLICATE_EVALUATION",
                    f"site {site} evaluates classifier {cid} again (first at entry {c.evaluations[site]})",
                    **where,
                )
            elif c is not None:
                c.evaluations[site] = i
        elif t in ("dataset.retired", "classifier.retired"):
            kind = t.split(".")[0]
            aid = f["dataset_id" if kind == "dataset" else "classifier_id"]
            label = f"{kind} {aid} retired"
            table = st.datasets if kind == "dataset" else st.classifiers
            a = table.get(aid)
            if a is None:
                findings.add(
                    "lineage",
                    "E_AUDIT_LINEAGE_UNKNOWN",
                    f"{kind} {aid} is retired but no earlier entry made it",
                    **where,
                )
            elif not a.live:
                findings.add(
                    "lineage",
                    "E_AUDIT_LINEAGE_RETIRED",
                    f"{kind} {aid} is retired again (first at entry {a.retired_index})",
                    severity=WARNING,
                    **where,
                )
            else:
                a.retired_index, a.retired_reason = i, f.get("reason")
        elif t == "cert.revoked":
            label = f"certificate {str(f['serial'])[:12]} revoked ({f['reason']})"
            st.revocations.append((i, e))
        elif t == "key.rotated":
            label = f"key {f['key']} rotated"
        elif t == "crl.loaded":
            label = f"CRL {f['crl_number']} loaded ({f.get('revoked', '?')} revoked)"
            st.crls.append((i, f))
        st.events.append(Event(i, e["time"], t, e["actor"], label))

    # -- after the whole log -------------------------------------------------
    for m in st.modules.values():
        for r in m.requests:
            if m.deleted_index is None:
                findings.add(
                    "deletions",
                    "E_AUDIT_DELETION_MISSING",
                    f"deletion of module {m.module_id} was requested at entry {r} but no "
                    "module.deleted entry carries it out",
                    entry=r,
                    entry_type="module.deletion_requested",
                    module_id=m.module_id,
                )
    for table in (st.datasets, st.classifiers):
        for a in table.values():
            if not a.live:
                continue
            for ref in a.modules:
                ms = st.modules.get(ref["module_id"])
                if ms is not None and ms.deleted_index is not None:
                    findings.add(
                        "lineage",
                        "E_AUDIT_LIVE_DELETED",
                        f"{a.kind} {a.artifact_id} is live (never retired) but its lineage holds module "
                        f"{ms.module_id}, deleted at entry {ms.deleted_index}",
                        entry=a.index,
                        entry_type=CREATED_BY[a.kind],
                        module_id=ms.module_id,
                    )
    return st


def _live_classifier(st, cid: str, what: str, findings, where: dict):
    """The classifier ``cid`` if an earlier entry trained it and it is not retired; else a finding and None."""
    c = st.classifiers.get(cid)
    if c is None:
        findings.add(
            "lineage",
            "E_AUDIT_LINEAGE_UNKNOWN",
            f"classifier {cid} is {what} but no earlier entry trained it",
            **where,
        )
    elif not c.live:
        findings.add(
            "lineage",
            "E_AUDIT_LINEAGE_RETIRED",
            f"classifier {cid} is {what} after it was retired (entry {c.retired_index})",
            **where,
        )
    else:
        return c
    return None
