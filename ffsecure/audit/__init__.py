"""Offline audit of an exported ledger bundle: checks -> findings, and a readable HTML report.

``load_bundle(dir)`` reads the bundle once; ``audit_bundle(bundle, ca_pem=...)``
runs every check (docs/auditor-guide.md) and returns an :class:`AuditResult`
whose findings name the entries at fault; ``render_html(result)`` draws the
self-contained report. Nothing here talks to the aggregator.
"""

from ffsecure.audit.bundle import Bundle, BundleError, load_bundle
from ffsecure.audit.findings import CHECKS, CheckSummary, Finding
from ffsecure.audit.html import render_html
from ffsecure.audit.trusted import TrustedCheckpoint, read_trusted
from ffsecure.audit.verify import AuditResult, audit_bundle

__all__ = [
    "Bundle",
    "BundleError",
    "load_bundle",
    "CHECKS",
    "CheckSummary",
    "Finding",
    "AuditResult",
    "audit_bundle",
    "render_html",
    "TrustedCheckpoint",
    "read_trusted",
]
