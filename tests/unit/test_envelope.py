"""HPKE envelope: round trips for both suites and every refusal with its code."""

from __future__ import annotations

import stat
import struct

import pytest

from ffsecure import canonical, envelope
from ffsecure.errors import FFSecureError

FED = "fed-env"


@pytest.fixture(scope="module", params=["x25519", "mlkem768-x25519"])
def keys(request):
    private, public = envelope.generate_keypair(request.param)
    return request.param, private, public, envelope.key_id(public)


def _seal(keys, data=b"signed package bytes" * 10, fed=FED):
    suite, _, public, kid = keys
    return envelope.seal(data, public, federation_id=fed, key_id=kid, suite=suite)


def _code(info):
    return info.value.code


def test_round_trip(keys):
    suite, private, public, kid = keys
    data = bytes(range(256)) * 40
    sealed = _seal(keys, data)
    assert data not in sealed
    assert envelope.open_sealed(sealed, private, federation_id=FED, key_id=kid) == data
    assert _seal(keys, data) != sealed  # fresh encapsulation every time
    header, _, _ = envelope.parse_header(sealed)
    assert (header.suite, header.federation_id, header.key_id) == (suite, FED, kid)
    assert envelope.suite_of_public_key(public) == suite
    assert envelope.public_from_private(private, suite) == public


def test_empty_plaintext_round_trip(keys):
    _, private, _, kid = keys
    sealed = _seal(keys, b"")
    assert envelope.open_sealed(sealed, private, federation_id=FED, key_id=kid) == b""


def test_wrong_private_key_is_refused(keys):
    suite, _, _, kid = keys
    other_private, _ = envelope.generate_keypair(suite)
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(_seal(keys), other_private, federation_id=FED, key_id=kid)
    assert _code(info) == "E_KEY_ID"


def test_other_federation_is_refused(keys):
    _, private, _, kid = keys
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(_seal(keys), private, federation_id="fed-other", key_id=kid)
    assert _code(info) == "E_FEDERATION_MISMATCH"


def test_other_key_id_is_refused(keys):
    _, private, _, _ = keys
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(_seal(keys), private, federation_id=FED, key_id="0" * 64)
    assert _code(info) == "E_KEY_ID"


def test_every_flipped_body_byte_is_refused(keys):
    _, private, _, kid = keys
    sealed = _seal(keys, b"x" * 64)
    header_end = envelope.PREFIX_LEN + struct.unpack(">H", sealed[5:7])[0]
    positions = list(range(header_end, len(sealed)))
    # all of the short body for x25519; a spread of positions for the 1 KiB hybrid encapsulation
    for pos in positions[:: max(1, len(positions) // 200)] + [len(sealed) - 1]:
        bad = bytearray(sealed)
        bad[pos] ^= 0x01
        with pytest.raises(FFSecureError) as info:
            envelope.open_sealed(bytes(bad), private, federation_id=FED, key_id=kid)
        assert _code(info) == "E_ENVELOPE_OPEN", pos


def test_rewritten_header_fails_to_open(keys):
    """The header is bound into HPKE's info: relabelling it cannot open."""
    suite, private, public, kid = keys
    sealed = envelope.seal(b"data", public, federation_id="fed-a", key_id=kid, suite=suite)
    _, header_bytes, body = envelope.parse_header(sealed)
    forged_header = envelope.EnvelopeHeader(suite, "fed-b", kid).to_bytes()
    forged = (
        envelope.MAGIC
        + bytes([1])
        + struct.pack(">H", len(forged_header))
        + forged_header
        + bytes(body)
    )
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(forged, private, federation_id="fed-b", key_id=kid)
    assert _code(info) == "E_ENVELOPE_OPEN"


def _with_header(obj, body=b"\x00" * 64):
    header = canonical.dumps(obj)
    return envelope.MAGIC + bytes([1]) + struct.pack(">H", len(header)) + header + body


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"FFS",
        b"XXXX\x01\x00\x00",
        b"FFSE\x02\x00\x00",
        b"FFSE\x01\xff\xff" + b"{}",
        b"FFSE\x01\x00\x10{}",
        b"FFSE\x01\x00\x02{}",
        b'FFSE\x01\x00\x09{"v": 1}',
    ],
)
def test_malformed_envelopes_are_refused(keys, data):
    _, private, _, kid = keys
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(data, private, federation_id=FED, key_id=kid)
    assert _code(info) == "E_ENVELOPE_FORMAT"


def test_short_body_is_refused(keys):
    suite, private, _, kid = keys
    data = _with_header({"v": 1, "suite": suite, "federation_id": FED, "key_id": kid}, b"\x00" * 8)
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(data, private, federation_id=FED, key_id=kid)
    assert _code(info) == "E_ENVELOPE_FORMAT"


def test_unknown_suite_is_refused(keys):
    _, private, _, kid = keys
    data = _with_header({"v": 1, "suite": "rot13", "federation_id": FED, "key_id": kid})
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(data, private, federation_id=FED, key_id=kid)
    assert _code(info) == "E_ENVELOPE_SUITE"
    with pytest.raises(FFSecureError) as info:
        envelope.generate_keypair("p256")
    assert _code(info) == "E_ENVELOPE_SUITE"


def test_key_of_wrong_shape_is_refused(keys):
    suite, _, public, kid = keys
    with pytest.raises(FFSecureError) as info:
        envelope.seal(b"x", public[:-1], federation_id=FED, key_id=kid, suite=suite)
    assert _code(info) == "E_KEY_FORMAT"
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(_seal(keys), b"\x01" * 7, federation_id=FED, key_id=kid)
    assert _code(info) == "E_KEY_FORMAT"
    with pytest.raises(FFSecureError) as info:
        envelope.seal(b"x", public, federation_id=FED, key_id="f" * 64, suite=suite)
    assert _code(info) == "E_KEY_ID"


def test_oversized_envelope_is_refused_before_parsing(keys):
    _, private, _, kid = keys
    sealed = _seal(keys, b"z" * 10_000)
    with pytest.raises(FFSecureError) as info:
        envelope.open_sealed(sealed, private, federation_id=FED, key_id=kid, max_bytes=1000)
    assert _code(info) == "E_TOO_LARGE"


def test_key_file_round_trip_is_0600(tmp_path, keys):
    suite, private, _, kid = keys
    path = tmp_path / "hpke.key"
    envelope.write_key_file(path, private, suite)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert envelope.read_key_file(path) == (suite, private, kid)
    path.write_bytes(b'{"v":1}')
    with pytest.raises(FFSecureError) as info:
        envelope.read_key_file(path)
    assert _code(info) == "E_KEY_FORMAT"


def test_hpke_primitive_matches_rfc9180_vector():
    """Known answer: RFC 9180 appendix A.1.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
    AES-128-GCM, base mode), sequence 0. The vector uses a non-empty aad, which only
    the binding's aad-taking entry point accepts; the envelope uses the same primitive
    with an empty aad."""
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl
    from cryptography.hazmat.primitives import hpke
    from cryptography.hazmat.primitives.asymmetric import x25519

    sk = x25519.X25519PrivateKey.from_private_bytes(
        bytes.fromhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    )
    enc = bytes.fromhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    ct = bytes.fromhex(
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    pt = rust_openssl.hpke._decrypt_with_aad(
        suite, enc + ct, sk, info=b"Ode on a Grecian Urn", aad=b"Count-0"
    )
    assert pt == b"Beauty is truth, truth beauty"
    assert hpke.KEM.X25519.enc_length() == len(enc)
