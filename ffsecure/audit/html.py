"""Render an audit result as one self-contained HTML page (inline CSS and SVG, no script).

The page opens from disk with nothing else: no external fonts, styles, images
or scripts. Sections: the verdict and the checks, the findings, the witnesses' cosignature
times (when the auditor named witnesses), a timeline of
the federation (inline SVG), a table per site, the lineage of the current
classifier, and each deletion with its inclusion proof against the latest
signed checkpoint. Every string from the bundle is escaped.
"""

from __future__ import annotations

from html import escape

from ffsecure import __version__
from ffsecure.audit.verify import AuditResult
from ffsecure.audit.witnesses import WitnessStatus
from ffsecure.dp import record_privacy_unit
from ffsecure.errors import FFSecureError, LedgerError
from ffsecure.federation import FederationManifest
from ffsecure.ledger.merkle import verify_inclusion
from ffsecure.privacy.policy import THRESHOLDS, effective_policy
from ffsecure.privacy.report import DATA_DEPENDENT, dp_covers
from ffsecure.records.entries import EntryType
from ffsecure.records.lineage import read_commitment
from ffsecure.timefmt import format_duration, now_rfc3339, parse_rfc3339, rfc3339

# A backslash at the end of a line joins it to the next (the report's bytes stay as they were).
CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--ink:#1f2328;--mute:#656d76;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,\
"Helvetica Neue",Arial,sans-serif;
 color:var(--ink);background:#fff}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 10px;padding-bottom:4px;
 border-bottom:1px solid var(--line)}h3{font-size:15px;margin:18px 0 6px}
.meta{color:var(--mute);font-size:13px}.nowrap{white-space:nowrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.verdict{display:flex;align-items:center;gap:18px;border-radius:8px;padding:16px 20px;\
margin:18px 0 8px;
 color:#fff}
.verdict.ok{background:var(--ok)}.verdict.bad{background:var(--bad)}
.verdict .big{font-size:28px;font-weight:700;letter-spacing:.5px}
.verdict .why{font-size:14px;opacity:.95}
table{border-collapse:collapse;width:100%;margin:6px 0 10px}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600;font-size:13px}
.pill{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;\
color:#fff}
.pill.ok{background:var(--ok)}.pill.failed,.pill.error,.pill.deleted{background:var(--bad)}
.pill.warning,.pill.revoked{background:var(--warn)}.pill.skipped{background:#8c959f}
.pill.active,.pill.live,.pill.published{background:#0969da}.pill.retired{background:#8c959f}
.findings li{margin:4px 0}.where{font-weight:600}
.lineage{display:flex;gap:14px;align-items:stretch;flex-wrap:wrap}
.node{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:var(--bg);\
min-width:220px}
.node h4{margin:0 0 6px;font-size:14px}.arrow{align-self:center;font-size:22px;color:var(--mute)}
.mods{display:flex;flex-direction:column;gap:8px}
.proof{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 14px;\
margin:10px 0}
.proof ol{margin:4px 0 4px 18px;padding:0}
.kv{color:var(--mute)}
details summary{cursor:pointer;color:#0969da}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
footer{margin-top:36px;color:var(--mute);font-size:12px}
"""

MAX_TABLE_EVENTS = 2000

LANES = [
    ("modules", "modules", (EntryType.MODULE_REGISTERED,)),
    ("datasets", "datasets", (EntryType.DATASET_SYNTHESIZED, EntryType.DATASET_RETIRED)),
    (
        "classifiers",
        "classifiers",
        (
            EntryType.CLASSIFIER_TRAINED,
            EntryType.CLASSIFIER_PUBLISHED,
            EntryType.CLASSIFIER_EVALUATED,
            EntryType.CLASSIFIER_RETIRED,
        ),
    ),
    ("deletions", "deletions", (EntryType.MODULE_DELETION_REQUESTED, EntryType.MODULE_DELETED)),
    (
        "revocations",
        "certificates, keys & policy",
        (
            EntryType.CERT_REVOKED,
            EntryType.KEY_ROTATED,
            EntryType.CRL_LOADED,
            EntryType.FEDERATION_LOADED,
        ),
    ),
]
COLORS: dict[str, str] = {
    EntryType.MODULE_REGISTERED: "#0969da",
    EntryType.DATASET_SYNTHESIZED: "#8250df",
    EntryType.DATASET_RETIRED: "#8c959f",
    EntryType.CLASSIFIER_TRAINED: "#1a7f37",
    EntryType.CLASSIFIER_PUBLISHED: "#1a7f37",
    EntryType.CLASSIFIER_RETIRED: "#8c959f",
    EntryType.CLASSIFIER_EVALUATED: "#0969da",
    EntryType.MODULE_DELETION_REQUESTED: "#bc4c00",
    EntryType.MODULE_DELETED: "#cf222e",
    EntryType.CERT_REVOKED: "#9a6700",
    EntryType.KEY_ROTATED: "#9a6700",
    EntryType.CRL_LOADED: "#6e7781",
    EntryType.FEDERATION_LOADED: "#6e7781",
}


def _e(value) -> str:
    return escape(str(value), quote=True)


def _short(h: str | None, n: int = 12) -> str:
    return "—" if not h else (h[:n] + "…" if len(h) > n else h)


def _pill(kind: str, text: str | None = None) -> str:
    return f'<span class="pill {_e(kind)}">{_e(text or kind)}</span>'


# --------------------------------------------------------------- sections


def _verdict(r: AuditResult) -> str:
    latest = r.log.latest
    if r.ok:
        verified = sum(m.signature_ok for m in r.modules.values())
        skipped = [c.name for c in r.checks if c.status == "skipped"]
        why = (
            f"No check failed: the log of {len(r.log.entry_bytes)} entries "
            "is exactly what the log key signed"
            f"; {verified} of {len(r.modules)} module signatures verify; "
            "no live classifier uses a deleted module."
            + (f" Skipped: {', '.join(skipped)}." if skipped else "")
            + (f" {len(r.warnings)} warning(s) below." if r.warnings else "")
        )
    else:
        why = (
            f"{len(r.errors)} finding(s) — see the list below. "
            "Do not rely on this log until they are explained."
        )
    head = (
        f'<div class="verdict {"ok" if r.ok else "bad"}"><div class="big">{r.verdict}</div>'
        f'<div class="why">{_e(why)}</div></div>'
    )
    fed = r.federation
    meta = [
        f"log <code>{_e(latest.origin) if latest else '?'}</code>",
        f"tree size <b>{latest.size if latest else '?'}</b>",
        f"root <code>{_e(latest.root_hash.hex()) if latest else '?'}</code>",
    ]
    if fed is not None:
        meta.insert(0, f"federation <b>{_e(fed.federation_id)}</b>")
    if r.ca_fingerprint:
        meta.append(f"CA <code>{_e(_short(r.ca_fingerprint, 16))}</code>")
    return head + f'<p class="meta">{" · ".join(meta)}</p>'


def _checks(r: AuditResult) -> str:
    rows = "".join(
        f"<tr><td><b>{_e(c.name)}</b><div class='meta'>{_e(c.to_dict()['proves'])}</div></td>"
        f"<td>{_pill(c.status)}</td><td>{_e(c.detail)}</td></tr>"
        for c in r.checks
    )
    return (
        "<h2>Checks</h2><table><tr><th>check (what it proves)</th><th>status</th>"
        f"<th>detail</th></tr>{rows}</table>"
    )


_WITNESS_PILL = {
    WitnessStatus.FRESH: "ok",
    WitnessStatus.STALE: "error",
    WitnessStatus.FUTURE: "error",
    WitnessStatus.INVALID: "error",
    WitnessStatus.ABSENT: "skipped",
}


def _witnesses(r: AuditResult) -> str:
    report = r.witnesses
    if report is None:
        return (
            "<h2>Witnesses</h2><p>No witness key was given. Without witnesses (and without "
            "checkpoints kept from earlier) neither a split view nor a rollback to an older "
            "signed state of the log can be detected.</p>"
        )
    if report.checkpoint is None:
        return "<h2>Witnesses</h2><p>The bundle has no signed checkpoint to cosign.</p>"
    rows = "".join(
        f"<tr><td><code>{_e(row.name)}</code></td><td>{_e(row.when())}</td>"
        f"<td>{_pill(_WITNESS_PILL[row.status], str(row.status))}</td></tr>"
        for row in report.rows
    )
    return (
        f"<h2>Witnesses</h2><p class='meta'>checkpoint {report.checkpoint}: a quorum of "
        f"{report.quorum} cosignatures made within {_e(format_duration(report.max_age))} "
        f"before {_e(rfc3339(report.checked_at))} is required; {report.fresh} counted.</p>"
        "<table><tr><th>witness</th><th>cosigned at</th><th>status</th></tr>"
        f"{rows}</table>"
    )


def _findings(r: AuditResult) -> str:
    if not r.findings:
        return "<h2>Findings</h2><p>None.</p>"
    items = "".join(
        f"<li>{_pill(f.severity)} <code>{_e(f.code)}</code> "
        f"<span class='where'>{_e(f.where())}</span> — "
        f"{_e(f.message)}</li>"
        for f in r.findings
    )
    return f'<h2>Findings</h2><ul class="findings">{items}</ul>'


def _timeline(r: AuditResult) -> str:
    events = r.replay.events
    n = len(r.log.entry_bytes)
    if n == 0:
        return "<h2>Timeline</h2><p>The log is empty.</p>"
    width, left, right, lane_h, top = 1120, 150, 20, 46, 24
    height = top + lane_h * len(LANES) + 44
    span = width - left - right

    def x(i: float) -> float:
        return left + (span * (i + 0.5) / n)

    bad_entries = {f.entry for f in r.findings if f.entry is not None and f.severity == "error"}
    parts = [
        f'<svg role="img" aria-label="timeline of the federation" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    ]
    for k, (_, title, _types) in enumerate(LANES):
        y = top + lane_h * k + lane_h / 2
        parts.append(
            f'<rect x="{left}" y="{y - lane_h / 2 + 3}" width="{span}" height="{lane_h - 6}" '
            f'fill="{"#f6f8fa" if k % 2 == 0 else "#ffffff"}"/>'
        )
        parts.append(
            f'<text x="{left - 10}" y="{y + 4}" text-anchor="end" font-size="13" fill="#1f2328">'
            f"{_e(title)}</text>"
        )
    axis_y = top + lane_h * len(LANES) + 6
    parts.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{left + span}" y2="{axis_y}" stroke="#8c959f"/>'
    )
    for cp in r.log.checkpoints:
        if 0 < cp.size <= n:
            cx = x(cp.size - 0.5)
            parts.append(
                f'<line x1="{cx:.1f}" y1="{top}" x2="{cx:.1f}" y2="{axis_y}" stroke="#0969da" '
                f'stroke-dasharray="2 3" stroke-opacity="0.45">'
                f"<title>signed checkpoint {cp.size}</title></line>"
            )
    step = max(1, n // 12)
    for i in range(0, n, step):
        parts.append(
            f'<text x="{x(i):.1f}" y="{axis_y + 16}" text-anchor="middle" font-size="11" '
            f'fill="#656d76">{i}</text>'
        )
    parts.append(
        f'<text x="{left}" y="{axis_y + 32}" font-size="11" fill="#656d76">entry index → '
        f"(dashed: signed checkpoints)</text>"
    )
    lane_of: dict[str, int] = {t: k for k, (_, _, types) in enumerate(LANES) for t in types}
    drawn: set[tuple[str, int]] = set()
    for ev in events:
        lane = lane_of.get(ev.type)
        if lane is None:
            continue
        cx, cy = x(ev.index), top + lane_h * lane + lane_h / 2
        column = (ev.type, int(cx / 3))  # long logs: one marker per type and 3-pixel column
        if column in drawn and ev.index not in bad_entries:
            continue
        drawn.add(column)
        color = COLORS.get(ev.type, "#57606a")
        tip = f"<title>#{ev.index} {_e(ev.time)} — {_e(ev.label)} ({_e(ev.actor)})</title>"
        if ev.type in (
            EntryType.MODULE_DELETED,
            EntryType.DATASET_RETIRED,
            EntryType.CLASSIFIER_RETIRED,
            EntryType.CERT_REVOKED,
        ):
            shape = (
                f'<path d="M{cx - 6:.1f},{cy - 6:.1f} L{cx + 6:.1f},{cy + 6:.1f} '
                f"M{cx - 6:.1f},{cy + 6:.1f} "
                f'L{cx + 6:.1f},{cy - 6:.1f}" stroke="{color}" stroke-width="3">{tip}</path>'
            )
        elif ev.type == EntryType.CLASSIFIER_PUBLISHED:
            shape = (
                f'<polygon points="{cx:.1f},{cy - 8:.1f} {cx + 7:.1f},{cy + 6:.1f} '
                f'{cx - 7:.1f},{cy + 6:.1f}" '
                f'fill="{color}">{tip}</polygon>'
            )
        elif ev.type == EntryType.CLASSIFIER_EVALUATED:
            shape = (
                f'<polygon points="{cx:.1f},{cy - 7:.1f} {cx + 7:.1f},{cy:.1f} '
                f"{cx:.1f},{cy + 7:.1f} "
                f'{cx - 7:.1f},{cy:.1f}" fill="{color}">{tip}</polygon>'
            )
        elif ev.type in (EntryType.DATASET_SYNTHESIZED, EntryType.CLASSIFIER_TRAINED):
            shape = (
                f'<rect x="{cx - 6:.1f}" y="{cy - 6:.1f}" width="12" height="12" rx="2" '
                f'fill="{color}">'
                f"{tip}</rect>"
            )
        else:
            hollow = ev.type == EntryType.MODULE_DELETION_REQUESTED
            shape = (
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6.5" fill="{"#fff" if hollow else color}" '
                f'stroke="{color}" stroke-width="2.5">{tip}</circle>'
            )
        parts.append(shape)
        if ev.index in bad_entries:
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="11" fill="none" stroke="#cf222e" '
                f'stroke-width="2"/>'
            )
    for f in r.findings:
        if f.entry is None and f.entries and f.severity == "error":
            lo, hi = min(f.entries), max(f.entries)
            if hi < n:
                parts.append(
                    f'<rect x="{x(lo) - 8:.1f}" y="{top}" width="{x(hi) - x(lo) + 16:.1f}" '
                    f'height="{lane_h * len(LANES)}" fill="#cf222e" fill-opacity="0.08" '
                    'stroke="#cf222e" '
                    f'stroke-opacity="0.5"><title>{_e(f.code)}: {_e(f.where())}</title></rect>'
                )
    parts.append("</svg>")
    legend = (
        "<p class='meta'>● module registered · ○ deletion requested · "
        "■ dataset / classifier made · "
        "▲ classifier published · ◆ classifier evaluated by a site · "
        "✕ deleted, retired or revoked · red ring or band: where a finding "
        "points</p>"
    )
    shown = events[-MAX_TABLE_EVENTS:]
    rows = "".join(
        f"<tr><td>{ev.index}</td><td class='mono'>{_e(ev.time)}</td>"
        f"<td><code>{_e(ev.type)}</code></td>"
        f"<td>{_e(ev.actor)}</td><td>{_e(ev.label)}</td></tr>"
        for ev in shown
    )
    what = (
        f"all {len(events)} entries"
        if len(shown) == len(events)
        else f"the last {len(shown)} of {len(events)} entries "
        "(the bundle's entries.jsonl holds all)"
    )
    table = (
        f"<details><summary>{what}</summary><table><tr><th>#</th><th>time</th>"
        f"<th>type</th><th>actor</th><th>event</th></tr>{rows}</table></details>"
    )
    return "<h2>Timeline</h2>" + "".join(parts) + legend + table


def _classes(manifest: dict | None, labels: list[str] | None) -> str:
    if not manifest or not isinstance(manifest.get("classes"), list):
        return "—"
    out = []
    for c in manifest["classes"]:
        name = labels[c] if labels and isinstance(c, int) and 0 <= c < len(labels) else None
        out.append(f"{c}" + (f" {name}" if name else ""))
    return _e(", ".join(out))


def _dp(manifest: dict | None, recomputed: float | None = None) -> str:
    dp = (manifest or {}).get("dp")
    if not isinstance(dp, dict):
        return "<span class='meta'>no DP</span>"
    eps, delta = dp.get("epsilon"), dp.get("delta")
    extra = "".join(
        f"<div class='kv'>{_e(k)} {_e(v)}</div>"
        for k, v in sorted(dp.items())
        if k in ("noise_multiplier", "accountant", "steps")
    )
    extra += f"<div class='kv'>per {_e(record_privacy_unit(dp))}</div>"  # absent: per image
    if recomputed is not None:
        extra += f"<div class='kv'>re-accounted ε = {recomputed:.4g}</div>"
    return f"ε = <b>{_e(_num(eps))}</b>, δ = {_e(_num(delta))}{extra}"


def _num(value):
    return f"{value:.4g}" if isinstance(value, float) else value


def _covered_by_dp(manifest: dict, report: dict, fed: FederationManifest | None) -> str:
    """Under a DP claim the federation bounds (``dp_covers``): the thresholds whose figure the
    report leaves to the claim. Read from the verified federation manifest only."""
    policy = fed.privacy_policy if fed is not None else None
    dp_policy = fed.dp_policy if fed is not None else None
    if not dp_covers(manifest.get("dp"), dp_policy) or DATA_DEPENDENT & set(report):
        return ""
    effective = effective_policy(policy) or {}
    covered = [what for key, (what, *_) in THRESHOLDS.items() if effective.get(key) is not None]
    covered = covered or ["measured figures"]
    return (
        f"<div class='meta'>not released, covered by the DP claim: {_e(', '.join(covered))}</div>"
    )


def _privacy(manifest: dict | None, fed: FederationManifest | None) -> str:
    pr = (manifest or {}).get("privacy_report")
    if not isinstance(manifest, dict) or not isinstance(pr, dict) or not pr:
        return "<span class='meta'>—</span>"
    return "".join(
        f"<div><span class='kv'>{_e(k)}</span> {_e(v)}</div>"
        for k, v in sorted(pr.items())
        if k != "v"
    ) + _covered_by_dp(manifest, pr, fed)


def _sites(r: AuditResult) -> str:
    labels = r.federation.label_space if r.federation is not None else None
    by_site: dict[str, list] = {}
    for ms in r.replay.modules.values():
        by_site.setdefault(ms.site_id, []).append(ms)
    if not by_site:
        return "<h2>Sites</h2><p>No module was registered.</p>"
    out = ["<h2>Sites</h2>"]
    for site in sorted(by_site):
        mods = by_site[site]
        active = sum(1 for m in mods if m.deleted_index is None)
        out.append(
            f"<h3>{_e(site)} <span class='meta'>{len(mods)} module(s), {active} active</span></h3>"
        )
        out.append(
            "<table><tr><th>module</th><th>classes</th><th>DP</th><th>privacy report</th>"
            "<th>registered</th><th>signature</th><th>status</th></tr>"
        )
        for ms in mods:
            mc = r.modules.get(ms.module_id)
            manifest = mc.manifest if mc else None
            sig = (
                _pill("ok", "verifies")
                if mc and mc.signature_ok
                else _pill("error", "fails")
                + f"<div class='meta'>{_e(mc.problem if mc else '')}</div>"
            )
            status = (
                _pill("deleted") + f"<div class='meta'>entry {ms.deleted_index}</div>"
                if ms.deleted_index is not None
                else _pill("active")
            )
            if mc and mc.revoked:
                status += " " + _pill("revoked", f"cert revoked: {mc.revoked}")
            out.append(
                f"<tr><td><code title='{_e(ms.module_id)}'>{_e(_short(ms.module_id))}</code></td>"
                f"<td>{_classes(manifest, labels)}</td>"
                f"<td>{_dp(manifest, mc.dp_recomputed if mc else None)}</td>"
                f"<td>{_privacy(manifest, r.federation)}</td>"
                f"<td>entry {ms.registered_index}<div class='meta nowrap'>{_e(ms.time)}</div></td>"
                f"<td>{sig}</td><td>{status}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def _kv(d: dict | None) -> str:
    if not isinstance(d, dict):
        return ""
    return "".join(
        f"<div><span class='kv'>{_e(k)}</span> {_e(v)}</div>"
        for k, v in sorted(d.items())
        if not isinstance(v, (dict, list))
    )


def _evaluations(clf) -> str:
    """Sites that reported evaluating the classifier (the ledger holds a commitment only)."""
    if not clf.evaluations:
        return "<div class='kv'>no site reported an evaluation</div>"
    sites = ", ".join(
        f"{_e(site)} (entry {i})" for site, i in sorted(clf.evaluations.items(), key=lambda x: x[1])
    )
    return (
        f"<div><span class='kv'>evaluated by</span> {sites}</div>"
        "<div class='kv'>(the ledger commits to each site's metrics by a salted hash; "
        "the numbers stay "
        "with the aggregator)</div>"
    )


def _committed(facts: dict) -> str:
    """A line naming the lineage document a committed lineage was read from (else nothing)."""
    commitment = read_commitment(facts.get("lineage"))
    if commitment is None:
        return ""
    return (
        f"<div class='kv mono'>lineage document {_e(_short(commitment.sha256, 20))} "
        f"({commitment.count} modules)</div>"
    )


def _lineage(r: AuditResult) -> str:
    clf = r.replay.current_classifier()
    if clf is None:
        return "<h2>Lineage of the current classifier</h2><p>No live classifier.</p>"
    dataset_id = clf.facts.get("dataset_id")
    ds = r.replay.datasets.get(dataset_id) if isinstance(dataset_id, str) else None
    state = "published" if clf.published_index is not None else "live"
    cnode = (
        f"<div class='node'><h4>classifier {_e(clf.artifact_id)} {_pill(state)}</h4>"
        f"<div>trained at entry {clf.index}"
        + (f", published at entry {clf.published_index}" if clf.published_index is not None else "")
        + f"</div><div class='kv mono'>sha256 {_e(_short(clf.facts.get('sha256'), 20))}</div>"
        f"{_kv(clf.facts.get('metrics'))}{_kv(clf.facts.get('config'))}{_evaluations(clf)}</div>"
    )
    dnode = (
        "<div class='node'><h4>dataset missing</h4></div>"
        if ds is None
        else f"<div class='node'><h4>dataset {_e(ds.artifact_id)} "
        f"{_pill('live' if ds.live else 'retired')}</h4>"
        f"<div>synthesized at entry {ds.index}</div>"
        f"<div class='kv mono'>sha256 {_e(_short(ds.facts.get('sha256'), 20))}</div>"
        f"<div><span class='kv'>seed</span> {_e(ds.facts.get('seed', '—'))} "
        f"<span class='kv'>per class</span> {_e(ds.facts.get('per_class', '—'))}</div>"
        f"{_committed(ds.facts)}</div>"
    )
    mods = []
    for ref in clf.modules:
        ms = r.replay.modules.get(ref["module_id"])
        status = (
            "unknown" if ms is None else "deleted" if ms.deleted_index is not None else "active"
        )
        mods.append(
            f"<div class='node'><b>{_e(ms.site_id if ms else '?')}</b> "
            f"<code>{_e(_short(ref['module_id']))}</code> "
            f"{_pill('error' if status != 'active' else 'active', status)}"
            f"<div class='kv mono'>weights {_e(_short(ref.get('weights_sha256'), 20))}</div></div>"
        )
    return (
        "<h2>Lineage of the current classifier</h2><div class='lineage'>"
        + cnode
        + "<div class='arrow'>←</div>"
        + dnode
        + "<div class='arrow'>←</div><div class='mods'>"
        + "".join(mods)
        + "</div></div>"
    )


def _deletions(r: AuditResult) -> str:
    dels = sorted(
        ((m.deleted_index, m) for m in r.replay.modules.values() if m.deleted_index is not None),
        key=lambda pair: pair[0],
    )
    out = ["<h2>Deletions</h2>"]
    if not dels:
        out.append("<p>No module was deleted.</p>")
        return "".join(out)
    latest = r.log.latest
    usable = r.log.verified
    for d, m in dels:
        entry = r.log.entries[d]
        facts = entry["facts"] if entry else {}
        retired = [
            f"{a.kind} {a.artifact_id} (entry {a.retired_index})"
            for table in (r.replay.datasets, r.replay.classifiers)
            for a in table.values()
            if a.retired_index is not None and any(x["module_id"] == m.module_id for x in a.modules)
        ]
        live_users = [
            f"{a.kind} {a.artifact_id}"
            for table in (r.replay.datasets, r.replay.classifiers)
            for a in table.values()
            if a.live and any(x["module_id"] == m.module_id for x in a.modules)
        ]
        out.append(
            f"<div class='proof'><h3>module <code>{_e(m.module_id)}</code> of {_e(m.site_id)}</h3>"
        )
        out.append(
            f"<div>registered at entry {m.registered_index}; "
            + (
                f"deletion requested at entr{'y' if len(m.requests) == 1 else 'ies'} "
                f"{', '.join(map(str, m.requests))}; "
                if m.requests
                else "deleted on the operator's decision; "
            )
            + f"deleted at entry <b>{d}</b> ({_e(m.deleted_time)}), "
            f"reason: {_e(m.deletion_reason)}</div>"
        )
        out.append(
            f"<div>destroyed: <b>{_e(', '.join(map(str, facts.get('destroyed', []))))}</b>"
            " <span class='kv'>weights</span> "
            f"<code>{_e(_short(facts.get('weights_sha256'), 16))}</code>"
            f" <span class='kv'>blob</span> <code>{_e(_short(facts.get('blob_sha256'), 16))}</code>"
            " <span class='kv'>KEK id</span> "
            f"<code>{_e(_short(facts.get('kek_id'), 16))}</code></div>"
        )
        out.append(
            "<div>retired because of it: " + (_e("; ".join(retired)) or "nothing") + "</div>"
        )
        out.append(
            "<div>still live with it: "
            + (_pill("error", "; ".join(live_users)) if live_users else _pill("ok", "none"))
            + "</div>"
        )
        if usable and latest is not None:
            leaf = r.log.leaves[d]
            proof = r.log.tree.inclusion_proof(d, latest.size)
            try:
                verify_inclusion(leaf, d, latest.size, proof, latest.root_hash)
                ok = True
            except LedgerError:
                ok = False
            items = "".join(f"<li><code>{h.hex()}</code></li>" for h in proof)
            out.append(
                "<div style='margin-top:6px'><b>Inclusion proof</b> (RFC 9162) "
                f"of entry {d} in checkpoint "
                f"{latest.size}: {_pill('ok', 'verifies') if ok else _pill('error', 'fails')}"
                f"<div class='kv'>leaf hash <code>{leaf.hex()}</code></div>"
                f"<ol>{items}</ol>"
                f"<div class='kv'>root <code>{latest.root_hash.hex()}</code></div></div>"
            )
        else:
            out.append("<div>No inclusion proof: the log itself did not verify.</div>")
        out.append("</div>")
    return "".join(out)


def _exported(r: AuditResult) -> str:
    """The export time ``bundle.json`` states, shown as what it is: the exporter's unsigned
    word (no check reads it), and only when it is an RFC 3339 time."""
    stated = (r.bundle.summary or {}).get("exported")
    if not isinstance(stated, str):
        return ""
    try:
        when = rfc3339(parse_rfc3339(stated))
    except FFSecureError:
        return ""
    return f"; its unsigned bundle.json says exported {_e(when)} (the exporter's word, not checked)"


def render_html(r: AuditResult) -> str:
    """The whole report page."""
    title = "ffsecure audit report"
    fed = (
        r.federation.federation_id
        if r.federation is not None
        else (r.log.latest.origin if r.log.latest else "")
    )
    body = "".join(
        [
            f"<h1>{_e(title)}{' — ' + _e(fed) if fed else ''}</h1>",
            f"<p class='meta'>bundle <code>{_e(r.bundle.path.name)}</code>"
            + _exported(r)
            + f"; checked {_e(now_rfc3339())} by ffsecure {_e(__version__)} offline</p>",
            _verdict(r),
            _findings(r),
            _checks(r),
            _witnesses(r),
            _timeline(r),
            _sites(r),
            _lineage(r),
            _deletions(r),
            "<footer>Self-contained report: no scripts, fonts or images are loaded. "
            "The checks and what they cannot "
            "prove are described in docs/auditor-guide.md.</footer>",
        ]
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<link rel='icon' href='data:,'><title>{_e(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
