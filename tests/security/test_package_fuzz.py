"""Property tests: mutated envelopes and packages are always refused with a typed error.

Whatever bytes an attacker sends, the only outcomes are "verified, unchanged"
or an :class:`~ffsecure.errors.FFSecureError` with a stable code: never a
crash with another exception type, never acceptance of altered bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ffsecure import envelope, package, pki
from ffsecure.errors import FFSecureError
from ffsecure.generators import build, to_safetensors
from tests.unit.test_federation import make_manifest

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Setup:
    def __init__(self, tmp):
        self.ca = pki.init_ca(tmp, "fed-test")
        self.crl = self.ca.crl()
        self.private, public = envelope.generate_keypair("x25519")
        agg = {
            "endpoint": "127.0.0.1:7443",
            "hpke_public_key": envelope.b64encode(public),
            "hpke_key_id": envelope.key_id(public),
            "hpke_suite": "x25519",
        }
        base = make_manifest()
        self.fed = make_manifest(aggregator={**base.aggregator, **agg})
        cert, key = self.ca.issue_site("st-fuzz")
        weights = to_safetensors(build("cvae", self.fed.generator["config"]))
        manifest = package.build_manifest(
            federation=self.fed, site_id="st-fuzz", weights=weights, classes=[0, 1], seed=1
        )
        self.pkg_bytes = package.sign_package(manifest, weights, key, cert).to_bytes()
        self.sealed = envelope.seal(
            self.pkg_bytes, public, federation_id="fed-test", key_id=self.fed.hpke_key_id
        )

    def receive(self, sealed: bytes) -> package.VerifiedModule:
        """The aggregator's registration path, from envelope bytes to a verified module."""
        plain = envelope.open_sealed(
            sealed,
            self.private,
            federation_id="fed-test",
            key_id=self.fed.hpke_key_id,
            max_bytes=self.fed.max_module_bytes,
        )
        return self.verify(plain)

    def verify(self, pkg_bytes: bytes) -> package.VerifiedModule:
        pkg = package.SignedPackage.from_bytes(pkg_bytes, max_bytes=self.fed.max_module_bytes)
        return package.verify_package(pkg, federation=self.fed, ca_cert=self.ca.cert, crl=self.crl)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return Setup(tmp_path_factory.mktemp("fuzz"))


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 30), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 30), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 30), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 30), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 30), st.integers(1, 64)),
    st.tuples(st.just("append"), st.just(0), st.integers(1, 64)),
)


def mutate(data: bytes, ops, *, focus: int = 0) -> bytes:
    """Apply ``ops``; positions below ``focus`` bias towards the header region."""
    out = bytearray(data)
    for op, pos, val in ops:
        n = max(len(out), 1)
        i = pos % (focus if focus and pos % 2 else n)
        if op == "flip" and out:
            out[i % len(out)] ^= val
        elif op == "set" and out:
            out[i % len(out)] = val
        elif op == "truncate":
            del out[i % n :]
        elif op == "insert":
            out.insert(i % n, val)
        elif op == "delete":
            del out[i % n : i % n + val]
        elif op == "append":
            out.extend(bytes([val]) * val)
    return bytes(out)


def test_untouched_bytes_verify(setup):
    assert setup.receive(setup.sealed).site_id == "st-fuzz"


@SETTINGS
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_envelope_is_always_refused(setup, ops):
    bad = mutate(setup.sealed, ops, focus=200)
    assume(bad != setup.sealed)
    with pytest.raises(FFSecureError) as info:
        setup.receive(bad)
    assert info.value.code.startswith("E_")


@SETTINGS
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_package_is_always_refused(setup, ops):
    """Even without the envelope, the signature and hashes catch every change."""
    bad = mutate(setup.pkg_bytes, ops, focus=2000)
    assume(bad != setup.pkg_bytes)
    with pytest.raises(FFSecureError) as info:
        setup.verify(bad)
    assert info.value.code.startswith("E_")


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_the_parsers(setup, data):
    for parse in (
        lambda d: envelope.parse_header(d),
        lambda d: package.SignedPackage.from_bytes(d, max_bytes=1 << 20),
    ):
        try:
            parse(data)
        except FFSecureError as exc:
            assert exc.code.startswith("E_")
