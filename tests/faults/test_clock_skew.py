"""Clock skew between a site and the aggregator.

A manifest carries the site's clock (``created_at``). The aggregator, on its
own clock, accepts a creation time up to ``ffsecure.timefmt.CLOCK_SKEW``
(5 min) in the future and refuses anything later (``E_MANIFEST_TIME``). The
signing certificate is checked at ``created_at``; certificates are issued
backdated by ``ffsecure.pki.BACKDATE`` (5 min), so a site whose clock is up
to 5 min behind can use a certificate issued a moment ago, and a manifest
dated before its certificate existed is refused (``E_CERT_EXPIRED``: a
backdating guard). Each case goes over real mTLS to a running aggregator;
the window edges are checked exactly with the aggregator's clock injected.
"""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from ffsecure import package, pki, timefmt
from site_node.client import RetryPolicy
from tests.federation_fixture import build_federation
from tests.security import forge
from tests.security.forge import Refusal, chunks, send

NO_RETRY = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    return build_federation(tmp_path_factory.mktemp("skew"))


@pytest.fixture(scope="module")
def srv(fed):
    with fed.serve() as running:
        yield running


def _at(offset: dt.timedelta) -> str:
    return pki.rfc3339(pki.utcnow() + offset)


@pytest.mark.parametrize(
    "offset_min, code",
    [
        (+4, None),  # site clock 4 min ahead: inside the window
        (-4, None),  # 4 min behind, certificate issued just now (backdated 5 min)
        (+6, "E_MANIFEST_TIME"),  # 6 min ahead: outside the window
        (+60 * 24, "E_MANIFEST_TIME"),
        (-10, "E_CERT_EXPIRED"),  # dated before the (fresh) certificate existed
    ],
)
def test_site_clock_skew_over_mtls(fed, srv, offset_min, code):
    site = "st-mary"
    creds = fed.sites[site]
    sealed, d = _package(fed, site, creds, _at(dt.timedelta(minutes=offset_min)))
    size = srv.runtime.store.size()
    with fed.client(site, srv.address, retry=NO_RETRY) as c:
        got = send(c.stub, chunks(sealed))
    if code is None:
        assert not isinstance(got, Refusal), got
        assert got.module_id == d["module_id"] and srv.runtime.store.size() == size + 1
    else:
        assert isinstance(got, Refusal) and got.code == code, got
        assert (
            got.status in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED)
            and got.hint
        )
        assert srv.runtime.store.size() == size


def _package(fed, site, creds, created_at):
    weights = forge.federation_weights(fed)
    m = package.build_manifest(
        federation=fed.manifest,
        site_id=site,
        weights=weights,
        classes=[0],
        seed=0,
        created_at=created_at,
    )
    pkg = package.sign_package(m, weights, creds.key, creds.cert)
    return forge.seal(fed, pkg.to_bytes()), m.to_dict()


def test_window_edges_on_the_aggregator_clock(fed):
    """Exactly CLOCK_SKEW ahead is accepted; one second more is refused."""
    creds = fed.sites["st-john"]
    now = pki.utcnow().replace(microsecond=0)
    for ahead, ok in (
        (timefmt.CLOCK_SKEW, True),
        (timefmt.CLOCK_SKEW + dt.timedelta(seconds=1), False),
    ):
        weights = forge.federation_weights(fed)
        m = package.build_manifest(
            federation=fed.manifest,
            site_id="st-john",
            weights=weights,
            classes=[0],
            seed=0,
            created_at=pki.rfc3339(now + ahead),
        )
        pkg = package.sign_package(m, weights, creds.key, creds.cert)
        if ok:
            package.verify_package(pkg, federation=fed.manifest, ca_cert=fed.ca.cert, now=now)
        else:
            with pytest.raises(package.ManifestTimeError):
                package.verify_package(pkg, federation=fed.manifest, ca_cert=fed.ca.cert, now=now)
