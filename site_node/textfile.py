"""The site's facts for node-exporter's textfile collector: ``<textfile_dir>/ffsecure_site.prom``.

Written after every ``site-node run`` cycle (``--once`` included) when
``[monitoring] textfile_dir`` is set, through
``prometheus_client.write_to_textfile`` with a registry of its own (it writes
a temporary file in the same folder and renames it, so the collector never
reads half a file). The metrics (docs/site-operator.md, "Monitoring"):

* ``ffsecure_site_last_cycle_timestamp_seconds``: when the last cycle ended;
* ``ffsecure_site_last_cycle_success``: 1 when it ended without a failure or
  refusal, else 0;
* ``ffsecure_site_last_success_timestamp_seconds``: when a cycle last ended
  that way (kept across runs in ``STATE/monitoring.json``, since ``run
  --once`` under a timer is a new process each time);
* ``ffsecure_site_last_refusal_info{code, by}``: 1, labelled with the code of
  the newest refused module and who refused it (``site`` or ``aggregator``);
  absent when no module was ever refused;
* ``ffsecure_site_certificate_days_left``, ``ffsecure_site_ca_days_left``,
  ``ffsecure_site_crl_days_left``: :mod:`ffsecure.pki.expiry`'s days left (the
  CRL is the one the aggregator served in this cycle, verified against the
  CA; absent when it could not be fetched or has no nextUpdate);
* ``ffsecure_site_modules_registered``: modules the aggregator registered
  (and that were not deleted since).

Every metric carries one label, ``site``: the site id, the only identifier
written (no module ids, file names or data facts).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from ffsecure import pki
from ffsecure.errors import FFSecureError
from ffsecure.pki.expiry import cert_expiry, crl_expiry
from site_node.config import SiteConfig
from site_node.state import StateDir

log = logging.getLogger("site_node.textfile")

FILE_NAME = "ffsecure_site.prom"
PREFIX = "ffsecure_site_"
_MEMORY = "monitoring.json"
_WHAT = {"certificate": "site certificate", "ca": "CA certificate", "crl": "CRL (nextUpdate)"}


@dataclass(frozen=True)
class CycleOutcome:
    """How a cycle ended: ``ok`` (no failure, no refusal) and the CRL it saw, if any."""

    ok: bool
    crl: x509.CertificateRevocationList | None = None


def _last_success(state: StateDir, ok: bool, now: float) -> float | None:
    path = state.root / _MEMORY
    try:
        last = json.loads(path.read_text()).get("last_success")
    except (OSError, ValueError, AttributeError):
        last = None
    if not isinstance(last, (int, float)) or isinstance(last, bool):
        last = None
    if ok:
        last = now
        tmp = path.with_name(f".{_MEMORY}.tmp")
        tmp.write_text(json.dumps({"last_success": now}) + "\n")
        tmp.replace(path)
    return last


def _last_refusal(state: StateDir) -> dict | None:
    refused = [r.error for r in state.modules() if r.status == "refused" and r.error]
    return max(refused, key=lambda e: str(e.get("time", "")), default=None)


def _days(state: StateDir, crl: x509.CertificateRevocationList | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, path in (("certificate", state.cert), ("ca", state.ca_cert)):
        try:
            cert = pki.load_cert(path.read_bytes())
        except (OSError, FFSecureError):
            continue
        cert_days = cert_expiry(cert, name).days_left
        if cert_days is not None:
            out[name] = cert_days
    if crl is not None:
        days = crl_expiry(crl).days_left
        if days is not None:
            out["crl"] = days
    return out


def write_site_textfile(cfg: SiteConfig, outcome: CycleOutcome) -> Path | None:
    """Write ``ffsecure_site.prom`` for this cycle; None when no textfile_dir is configured."""
    if cfg.textfile_dir is None:
        return None
    state = StateDir(cfg.state_dir)
    now = time.time()
    registry = CollectorRegistry()
    site = cfg.site_id

    def gauge(name: str, doc: str, value: float, **labels: str) -> None:
        g = Gauge(PREFIX + name, doc, ["site", *labels], registry=registry)
        g.labels(site=site, **labels).set(value)

    gauge("last_cycle_timestamp_seconds", "Unix time the last run cycle ended.", now)
    gauge("last_cycle_success", "1 if the last cycle had no failure or refusal.", float(outcome.ok))
    last = _last_success(state, outcome.ok, now)
    if last is not None:
        gauge("last_success_timestamp_seconds", "Unix time of the last successful cycle.", last)
    refusal = _last_refusal(state)
    if refusal is not None:
        code, by = str(refusal.get("code", "")), str(refusal.get("by", ""))
        gauge("last_refusal_info", "The newest refusal of a module.", 1, code=code, by=by)
    for what, days in _days(state, outcome.crl).items():
        gauge(f"{what}_days_left", f"Days until the {_WHAT[what]} expires.", days)
    registered = sum(r.status == "registered" for r in state.modules())
    gauge("modules_registered", "Modules registered and not deleted.", registered)
    path = cfg.textfile_dir / FILE_NAME
    write_to_textfile(str(path), registry)
    path.chmod(0o644)
    return path
