"""A loaded CRL is identified (number, DER hash) and recorded, even after a failed write."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from aggregator import auth
from aggregator.auth import CrlSource
from ffsecure import pki
from ffsecure.pki import CRLError


@pytest.fixture()
def ca(tmp_path):
    return pki.init_ca(tmp_path / "ca", "fed-crl")


def test_crl_info_names_the_number_and_the_der_hash(ca):
    crl = pki.load_crl(ca.crl_pem(), ca.cert)
    info = pki.crl_info(crl)
    assert info.number == 1 and info.revoked == 0 and len(info.sha256) == 64
    facts = info.facts(ca.cert)
    assert facts["issuer_sha256"] == pki.cert_fingerprint(ca.cert) and facts["crl_number"] == 1
    assert facts["this_update"].endswith("Z") and facts["next_update"] > facts["this_update"]
    assert pki.crl_info(pki.load_crl(ca.publish_crl())).number == 2


def test_a_crl_without_a_number_cannot_be_identified(ca):
    now = pki.utcnow()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .sign(ca._key, hashes.SHA256())
    )
    with pytest.raises(CRLError) as info:
        pki.crl_info(pki.load_crl(crl.public_bytes(serialization.Encoding.PEM), ca.cert))
    assert info.value.code == "E_CRL" and "CRL number" in info.value.message


def test_a_crl_that_cannot_be_recorded_is_applied_and_recorded_later(
    ca, tmp_path, monkeypatch, caplog
):
    path = tmp_path / "crl.pem"
    pki.write_public_file(path, ca.crl_pem())
    recorded, fail = [], [True]

    def on_load(crl):
        if fail[0]:
            raise OSError(28, "No space left on device")
        recorded.append(pki.crl_info(crl).number)

    source = CrlSource(path, ca.cert, on_load=on_load)
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    with caplog.at_level("ERROR", logger="aggregator.auth"):
        crl = source.current()
        source.current()  # within the retry delay: no new attempt, no new log
    assert crl is not None and pki.crl_info(crl).number == 1 and recorded == []
    assert [r.event for r in caplog.records] == ["crl_record_failed"]
    fail[0] = False
    clock[0] += auth.RECORD_RETRY_S
    source.current()
    source.current()  # recorded once, not again
    assert recorded == [1]
    pki.write_public_file(path, ca.publish_crl())
    assert pki.crl_info(source.current()).number == 2 and recorded == [1, 2]
    with pytest.raises(OSError):  # at start-up a failed record stops the start
        fail[0] = True
        pki.write_public_file(path, ca.publish_crl())
        source.record_now()
