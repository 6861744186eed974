"""The per-site and expiry parts of ``aggregator status``.

Per site: the last contact and the last refusal that ``serve`` recorded
(:mod:`aggregator.site_activity`, ``Store.list_site_activity``) and the
site's modules by status (``Store.list_modules``); a site that registered a
module but never called since this store recorded contacts still appears,
with no contact time.

Expiry: the aggregator's TLS certificate, the CA certificate and the CRL in
the home, each through :mod:`ffsecure.pki.expiry` (the one rule, shared with
the Prometheus gauges): ``warn`` under 30 days, ``expired`` after.
"""

from __future__ import annotations

from aggregator.home import AggregatorHome
from aggregator.store.base import Store
from ffsecure import pki
from ffsecure.pki.expiry import Expiry, cert_expiry, crl_expiry


def site_overview(store: Store) -> list[dict]:
    """One dict per site: site_id, last_contact, modules {active, deleted}, last_refusal."""
    sites: dict[str, dict] = {}

    def site(site_id: str) -> dict:
        return sites.setdefault(
            site_id,
            {
                "site_id": site_id,
                "last_contact": None,
                "modules": {"active": 0, "deleted": 0},
                "last_refusal": None,
            },
        )

    for m in store.list_modules():
        site(m.site_id)["modules"][m.status] += 1
    for row in store.list_site_activity():
        out = site(row.site_id)
        out["last_contact"] = row.last_contact
        if row.last_refusal_code is not None:
            out["last_refusal"] = {
                "code": row.last_refusal_code,
                "method": row.last_refusal_method,
                "time": row.last_refusal_time,
            }
    return [sites[k] for k in sorted(sites)]


def home_expiries(home: AggregatorHome) -> list[Expiry]:
    """Expiry of the aggregator's certificate, the CA and the CRL (those present in the home)."""
    out: list[Expiry] = []
    ca = pki.load_cert(home.ca_cert.read_bytes())
    if home.tls_cert.is_file():
        out.append(cert_expiry(pki.load_cert(home.tls_cert.read_bytes()), "aggregator certificate"))
    out.append(cert_expiry(ca, "CA certificate"))
    if home.crl.is_file():
        out.append(crl_expiry(pki.load_crl(home.crl.read_bytes(), ca)))
    return out
