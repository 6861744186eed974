"""summary.json and the closing table of ``ffsecure demo``, built from what the CLIs printed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ffsecure import __version__

METHODS = ("federatedfactory", "centralized", "fedavg")
PHASES = [
    "data",
    "pki",
    "serve",
    "enroll",
    "sites",
    "monitoring",
    "aggregate",
    "evaluate",
    "baselines",
    "forget",
    "evaluate_after",
    "baselines_after",
    "audit",
    "pictures",
    "total",
]
FILES = {
    "summary": "summary.json",
    "metrics": "metrics.txt",
    "report": "report.html",
    "audit_bundle": "audit-bundle",
    "samples": "samples.png",
    "accuracy_chart": "accuracy.png",
    "ca": "ca",
    "aggregator": "aggregator",
    "sites": "sites",
    "logs": "logs",
}


def build_summary(
    cfg, facts: dict[str, Any], phases: dict[str, float], work: Path
) -> dict[str, Any]:
    """The facts of one run, for people and scripts (the closing table shows the same)."""
    deletion = facts.get("deletion") or {}
    after = facts.get("after") or {}
    deleted = deletion.get("module_id")
    sites = {sid: {k: v for k, v in f.items()} for sid, f in facts["sites"].items()}
    audit = facts.get("audit") or {}
    return {
        "version": __version__,
        "settings": cfg.to_dict(),
        "dataset": facts.get("dataset"),
        "sites": sites,
        "accuracy": {
            when: {m: v for m, v in facts["accuracy"][when].items() if v is not None}
            for when in ("before", "after")
        },
        "site_evaluation": facts.get("site_evaluation", {}),
        "deleted": {
            "site_id": deletion.get("site_id"),
            "module_id": deleted,
            "reason": deletion.get("reason"),
            "entries": deletion.get("entries"),
        },
        "classifier_before": facts.get("before"),
        "classifier_after": after or None,
        "deleted_in_current_lineage": (deleted in (after.get("modules") or []))
        if deleted
        else None,
        "status_after": facts.get("status_after"),
        "audit": {
            "ok": audit.get("ok"),
            "verdict": audit.get("verdict"),
            "exit_status": audit.get("exit_status"),
            "findings": audit.get("findings"),
            "checks": audit.get("checks"),
            "trusted_checkpoints": audit.get("trusted_checkpoints"),
        },
        "phase_seconds": dict(phases),
        "bytes_sent": {sid: f.get("bytes_sent") for sid, f in facts["sites"].items()},
        "files": {
            k: str(work / v) for k, v in FILES.items() if (work / v).exists() or k == "summary"
        },
    }


def _acc(summary: dict, when: str, method: str) -> str:
    v = (summary["accuracy"].get(when) or {}).get(method)
    return "n/a" if not v or v.get("accuracy") is None else f"{v['accuracy']:.4f}"


def _size(n: int | None) -> str:
    if n is None:
        return "n/a"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def closing_tables(summary: dict) -> list:
    """Rich tables: methods before/after, sites, phases; then the verdict and paths as text."""
    # rich only when rendering: keeps `ffsecure --help` fast
    from rich.table import Table

    ds = summary.get("dataset") or {}
    deleted = summary["deleted"]
    t = Table(title=f"test accuracy ({ds.get('name')}, {ds.get('test')} images)")
    t.add_column("method")
    t.add_column("all sites", justify="right")
    t.add_column(f"{deleted.get('site_id')} forgotten", justify="right")
    for m in METHODS:
        if m in summary["accuracy"]["before"] or m in summary["accuracy"]["after"]:
            t.add_row(m, _acc(summary, "before", m), _acc(summary, "after", m))

    s = Table(title="sites (accuracy on each site's own test images; ✗ = forgotten)")
    with_dp = any(f.get("epsilon") is not None for f in summary["sites"].values())
    for col in (
        "site",
        "classes",
        "images",
        "module",
        *(("DP epsilon, mechanism",) if with_dp else ()),
        "sent",
        "train s",
        "acc before",
        "acc after",
    ):
        s.add_column(
            col, justify="left" if col in ("site", "classes", "module") else "right", no_wrap=True
        )
    names = ds.get("classes") or []
    ev = summary.get("site_evaluation") or {}
    for sid, f in summary["sites"].items():
        cls = "+".join(names[k] if k < len(names) else str(k) for k in f.get("classes", []))
        mod = (f.get("module_id") or "")[:8]
        if sid == deleted.get("site_id"):
            mod += " ✗"
        b = (ev.get("before") or {}).get(sid, {}).get("accuracy")
        a = (ev.get("after") or {}).get(sid, {}).get("accuracy")
        eps = f.get("epsilon")
        dp_cell = (
            ("-" if eps is None else f"{eps:.3g}, {f.get('dp_mechanism')}",) if with_dp else ()
        )
        s.add_row(
            sid,
            cls,
            str(f.get("n_train")),
            mod,
            *dp_cell,
            _size(f.get("bytes_sent")),
            f"{f.get('train_s', 0):.1f}",
            "n/a" if b is None else f"{b:.4f}",
            "n/a" if a is None else f"{a:.4f}",
        )

    p = Table(title="phases (wall seconds)")
    p.add_column("phase")
    p.add_column("s", justify="right")
    secs = summary["phase_seconds"]
    for name in sorted(secs, key=lambda n: PHASES.index(n) if n in PHASES else len(PHASES)):
        p.add_row(name, f"{secs[name]:.1f}")
    return [t, s, p]


def _shown(path: str) -> str:
    """A path relative to the current folder when it lies below it, else as given."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def closing_lines(summary: dict) -> list[str]:
    audit = summary["audit"]
    d = summary["deleted"]
    lines = []
    for when in ("before", "after"):
        acc = summary["accuracy"].get(when) or {}
        ff, cen = acc.get("federatedfactory"), acc.get("centralized")
        if ff and cen and cen.get("accuracy"):
            lines.append(
                f"FederatedFactory / centralized accuracy {when} the deletion: "
                f"{ff['accuracy'] / cen['accuracy']:.3f}"
            )
    lines += [
        f"deleted: {d['site_id']} module {d['module_id']} "
        f"({'still in' if summary['deleted_in_current_lineage'] else 'absent from'} "
        "the current classifier's lineage)",
        f"audit verdict: {'OK' if audit['ok'] else 'FAILED'}"
        + (f" ({len(audit['findings'])} findings)" if audit.get("findings") else ""),
    ]
    dp_check = next((c for c in audit.get("checks") or [] if c["name"] == "dp-claims"), None)
    if dp_check is not None and dp_check["status"] != "skipped":
        lines.append(f"audit dp-claims: {dp_check['status']} ({dp_check['detail']})")
    for key, label in (
        ("summary", "summary"),
        ("report", "audit report"),
        ("audit_bundle", "audit bundle"),
        ("samples", "sample grid"),
        ("accuracy_chart", "accuracy chart"),
        ("aggregator", "aggregator home"),
        ("sites", "sites"),
        ("ca", "CA"),
        ("logs", "logs"),
    ):
        if key in summary["files"]:
            lines.append(f"{label + ':':<17}{_shown(summary['files'][key])}")
    return lines
