"""Module package: build, sign, serialize, verify; one negative test per error code."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import struct

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from safetensors.torch import save as st_save

from ffsecure import canonical, package, pki
from ffsecure.errors import FFSecureError
from ffsecure.generators import build, default_config, to_safetensors
from ffsecure.records.ids import MODULE_ID
from tests.dp_records import mean_embedding_record
from tests.unit.test_federation import SHAPE, make_manifest

DP_CLAIM = {
    "target_epsilon": 4.0,
    "epsilon": 3.9,
    "delta": 1e-6,
    "noise_multiplier": 1.1,
    "sample_rate": 0.01,
    "steps": 300,
    "max_grad_norm": 1.0,
    "accountant": "prv",
}


@dataclasses.dataclass
class World:
    ca: pki.CA
    fed: object
    fed_dp: object
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    weights: bytes


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    ca = pki.init_ca(tmp_path_factory.mktemp("ca"), "fed-test")
    fed = make_manifest()
    fed_dp = make_manifest(dp_required=True)
    cert, key = ca.issue_site("st-mary")
    weights = to_safetensors(build("cvae", fed.generator["config"]))
    return World(ca, fed, fed_dp, cert, key, weights)


def _code(info):
    return info.value.code


def make_pkg(
    w: World, *, fed=None, weights=None, key=None, cert=None, **kw
) -> package.SignedPackage:
    fed = fed or w.fed
    weights = w.weights if weights is None else weights
    kw.setdefault("site_id", "st-mary")
    kw.setdefault("classes", [0, 2])
    kw.setdefault("seed", 7)
    manifest = package.build_manifest(federation=fed, weights=weights, **kw)
    return package.sign_package(manifest, weights, key or w.key, cert or w.cert)


def raw_container(manifest_obj: dict, weights: bytes, key, cert) -> bytes:
    """A container whose manifest is whatever dict we give (signed correctly)."""
    mbytes = canonical.dumps(manifest_obj)
    sig = key.sign(package._message(mbytes), ec.ECDSA(hashes.SHA256()))
    chain = pki.cert_pem(cert)
    return (
        package.MAGIC
        + b"\x01"
        + struct.pack(">I", len(mbytes))
        + mbytes
        + struct.pack(">I", len(sig))
        + sig
        + struct.pack(">I", len(chain))
        + chain
        + struct.pack(">Q", len(weights))
        + weights
    )


def verify(w: World, data_or_pkg, *, fed=None, crl=None, now=None):
    pkg = data_or_pkg
    if isinstance(data_or_pkg, (bytes, bytearray)):
        pkg = package.SignedPackage.from_bytes(
            data_or_pkg, max_bytes=(fed or w.fed).max_module_bytes
        )
    return package.verify_package(
        pkg,
        federation=fed or w.fed,
        ca_cert=w.ca.cert,
        crl=crl if crl is not None else w.ca.crl(),
        now=now,
    )


def expect(code, fn, *args, **kwargs):
    with pytest.raises(FFSecureError) as info:
        fn(*args, **kwargs)
    assert _code(info) == code, info.value


# ------------------------------------------------------------------ round trips


def test_round_trip_verifies(world):
    pkg = make_pkg(world)
    data = pkg.to_bytes()
    assert len(data) == pkg.size
    again = package.SignedPackage.from_bytes(data)
    assert again == pkg
    verified = verify(world, data)
    assert verified.module_id == pkg.manifest.module_id
    assert verified.identity == pki.Identity("fed-test", "site", "st-mary")
    assert verified.cert_fingerprint == pki.cert_fingerprint(world.cert)
    assert verified.manifest_sha256 == hashlib.sha256(pkg.manifest_bytes).hexdigest()
    assert verified.manifest.weights_sha256 == hashlib.sha256(world.weights).hexdigest()
    assert package.ModuleManifest.from_bytes(pkg.manifest_bytes) == pkg.manifest


def test_dp_module_round_trip(world):
    pkg = make_pkg(world, fed=world.fed_dp, dp=DP_CLAIM, privacy_report={"membership_auroc": 0.52})
    verified = verify(world, pkg.to_bytes(), fed=world.fed_dp)
    assert verified.manifest.dp == DP_CLAIM
    assert verified.manifest.privacy_report == {"membership_auroc": 0.52}


def test_package_meta_verifies_offline_without_weights(world):
    pkg = make_pkg(world)
    meta = package.package_meta(pkg)
    assert world.weights[:64] not in meta
    checked = package.verify_package_meta(meta, ca_cert=world.ca.cert, crl=world.ca.crl())
    assert checked.manifest == pkg.manifest
    obj = canonical.loads_canonical(meta)
    obj["manifest"]["seed"] = 8
    expect("E_SIGNATURE", package.verify_package_meta, canonical.dumps(obj), ca_cert=world.ca.cert)


def test_module_ids():
    ids = {package.new_module_id() for _ in range(100)}
    assert len(ids) == 100 and all(MODULE_ID.matches(i) for i in ids)
    for bad in ["", "A" * 32, "0" * 31, "0" * 33, "../" + "0" * 29, 12, "0" * 32 + "\n"]:
        expect("E_MODULE_ID", package.check_module_id, bad)


def test_rotation_keeps_old_modules_verifiable(tmp_path, world):
    ca = pki.init_ca(tmp_path, "fed-test")
    old_cert, old_key = ca.issue_site("st-rot")
    created = pki.utcnow() - dt.timedelta(minutes=1)
    w = dataclasses.replace(world, ca=ca)
    old_pkg = make_pkg(
        w, site_id="st-rot", key=old_key, cert=old_cert, created_at=pki.rfc3339(created)
    )
    new_cert, new_key = ca.issue_site("st-rot")
    crl = pki.load_crl(ca.revoke(old_cert, "superseded"), ca.cert)
    assert verify(w, old_pkg, crl=crl).identity.site_id == "st-rot"
    assert verify(w, make_pkg(w, site_id="st-rot", key=new_key, cert=new_cert), crl=crl)
    # a new module signed with the superseded certificate is refused
    expect(
        "E_CERT_REVOKED",
        verify,
        w,
        make_pkg(w, site_id="st-rot", key=old_key, cert=old_cert),
        crl=crl,
    )


# --------------------------------------------------------- one test per code


def test_e_signature(world):
    pkg = make_pkg(world)
    bad = dataclasses.replace(pkg, signature=pkg.signature[:-1] + bytes([pkg.signature[-1] ^ 1]))
    expect("E_SIGNATURE", verify, world, bad)
    other = make_pkg(world, seed=8)  # signed manifest for other bytes
    expect("E_SIGNATURE", verify, world, dataclasses.replace(pkg, signature=other.signature))


def test_e_cert_chain(world, tmp_path):
    other = pki.init_ca(tmp_path, "fed-test")
    cert, key = other.issue_site("st-mary")
    expect("E_CERT_CHAIN", verify, world, make_pkg(world, key=key, cert=cert))


def test_e_cert_chain_comes_before_the_dates_a_package_claims(world, tmp_path):
    """Another CA with this federation's id and CA name: E_CERT_CHAIN even when backdated before our
    CA."""
    other = pki.init_ca(tmp_path, "fed-test")
    assert (
        other.cert.subject == world.ca.cert.subject
    )  # the issuer name alone cannot tell them apart
    cert, key = other.issue_site("st-mary")
    backdated = make_pkg(world, key=key, cert=cert, created_at="2001-01-01T00:00:00Z")
    expect("E_CERT_CHAIN", verify, world, backdated)
    expect(
        "E_CERT_CHAIN",
        pki.verify_cert,
        cert,
        ca_cert=world.ca.cert,
        at=world.ca.cert.not_valid_after_utc + dt.timedelta(days=1),
    )
    own = make_pkg(
        world, created_at="2001-01-01T00:00:00Z"
    )  # our own certificate: the dates decide
    expect("E_CERT_EXPIRED", verify, world, own)


def test_e_cert_revoked(tmp_path, world):
    ca = pki.init_ca(tmp_path, "fed-test")
    cert, key = ca.issue_site("st-bad")
    w = dataclasses.replace(world, ca=ca)
    pkg = make_pkg(w, site_id="st-bad", key=key, cert=cert)
    assert verify(w, pkg)
    ca.revoke(cert, "key_compromise")
    expect("E_CERT_REVOKED", verify, w, pkg)


def test_e_cert_expired(world):
    cert, key = world.ca.issue_site("st-short", days=1)
    later = pki.utcnow() + dt.timedelta(days=3)
    pkg = make_pkg(world, site_id="st-short", key=key, cert=cert, created_at=pki.rfc3339(later))
    expect("E_CERT_EXPIRED", verify, world, pkg, now=later)


def _site_cert_with_eku(ca: pki.CA, eku):
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = serialization.load_pem_private_key((ca.directory / "ca.key").read_bytes(), None)
    now = pki.utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "st-mary")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("ffsecure://fed-test/site/st-mary")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def test_e_cert_usage(world):
    cert, key = _site_cert_with_eku(world.ca, [ExtendedKeyUsageOID.SERVER_AUTH])
    expect("E_CERT_USAGE", verify, world, make_pkg(world, key=key, cert=cert))


def test_e_identity_for_aggregator_cert(world):
    cert, key = world.ca.issue_aggregator("agg.example")
    expect("E_IDENTITY", verify, world, make_pkg(world, key=key, cert=cert))


def test_e_site_mismatch(world):
    expect("E_SITE_MISMATCH", verify, world, make_pkg(world, site_id="st-george"))


def test_e_federation_mismatch(world):
    other_fed = make_manifest("fed-other")
    pkg = make_pkg(world, fed=other_fed)  # signed by a fed-test site for fed-other
    expect("E_FEDERATION_MISMATCH", verify, world, pkg)
    expect("E_FEDERATION_MISMATCH", package.check_policy, pkg.manifest, world.fed)


def test_e_weights_hash(world):
    pkg = make_pkg(world)
    tampered = bytearray(pkg.weights)
    tampered[-1] ^= 1
    expect("E_WEIGHTS_HASH", verify, world, dataclasses.replace(pkg, weights=bytes(tampered)))
    expect("E_WEIGHTS_HASH", verify, world, dataclasses.replace(pkg, weights=pkg.weights + b"\0"))
    expect(
        "E_WEIGHTS_HASH", package.sign_package, pkg.manifest, bytes(tampered), world.key, world.cert
    )


def _retyped(weights_model, convert) -> bytes:
    state = {k: convert(k, v) for k, v in weights_model.model.state_dict().items()}
    return st_save({k: v for k, v in state.items() if v is not None})


def test_e_tensor_shape(world):
    other = build("cvae", default_config("cvae", image_shape=SHAPE, num_classes=5, size="tiny"))
    expect("E_TENSOR_SHAPE", verify, world, make_pkg(world, weights=to_safetensors(other)))


def test_e_tensor_dtype(world):
    gen = build("cvae", world.fed.generator["config"])
    weights = _retyped(gen, lambda k, v: v.to(torch.float16).contiguous())
    expect("E_TENSOR_DTYPE", verify, world, make_pkg(world, weights=weights))


def test_e_tensor_name(world):
    gen = build("cvae", world.fed.generator["config"])
    first = next(iter(gen.model.state_dict()))
    weights = _retyped(gen, lambda k, v: None if k == first else v.contiguous())
    expect("E_TENSOR_NAME", verify, world, make_pkg(world, weights=weights))


def test_e_safetensors_header(world):
    for weights in [b"\xff" * 64, struct.pack("<Q", 1 << 40) + b"{}", struct.pack("<Q", 2) + b"[]"]:
        expect("E_SAFETENSORS_HEADER", verify, world, make_pkg(world, weights=weights))


def test_e_policy_classes(world):
    expect("E_POLICY_CLASSES", verify, world, make_pkg(world, classes=[0, 3]))
    expect("E_POLICY_CLASSES", verify, world, make_pkg(world, classes=[-1]))


def test_e_policy_dp(world):
    fed = world.fed_dp
    expect("E_POLICY_DP", verify, world, make_pkg(world, fed=fed, dp=None), fed=fed)
    expect(
        "E_POLICY_DP",
        verify,
        world,
        make_pkg(world, fed=fed, dp={**DP_CLAIM, "epsilon": 8.5}),
        fed=fed,
    )
    expect(
        "E_POLICY_DP",
        verify,
        world,
        make_pkg(world, fed=fed, dp={**DP_CLAIM, "delta": 1e-4}),
        fed=fed,
    )
    # a federation without a DP requirement accepts both
    assert verify(world, make_pkg(world, dp=None))
    assert verify(world, make_pkg(world, dp={**DP_CLAIM, "epsilon": 50.0}))


def test_e_policy_generator(world):
    other = default_config("cvae", image_shape=SHAPE, num_classes=3, size="default")
    gen = build("cvae", other)
    pkg = make_pkg(
        world, weights=to_safetensors(gen), generator={"family": "cvae", "config": other}
    )
    expect("E_POLICY_GENERATOR", verify, world, dataclasses.replace(pkg))


def test_e_policy_shape(world):
    pkg = make_pkg(world)
    obj = pkg.manifest.to_dict()
    obj["image_shape"] = [1, 20, 20]
    data = raw_container(obj, world.weights, world.key, world.cert)
    expect("E_POLICY_SHAPE", verify, world, data)


def test_e_too_large(world):
    small = make_manifest(limits={"max_module_bytes": 4096})
    pkg = make_pkg(world, fed=small)
    expect("E_TOO_LARGE", verify, world, pkg, fed=small)
    expect("E_TOO_LARGE", package.SignedPackage.from_bytes, pkg.to_bytes(), max_bytes=4096)


def test_e_module_id_in_signed_bytes(world):
    obj = make_pkg(world).manifest.to_dict()
    obj["module_id"] = "../../etc/passwd"
    expect(
        "E_MODULE_ID",
        package.SignedPackage.from_bytes,
        raw_container(obj, world.weights, world.key, world.cert),
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o.pop("seed"),
        lambda o: o.update(extra=1),
        lambda o: o.update(v=2),
        lambda o: o.update(classes=[]),
        lambda o: o.update(classes=["0"]),
        lambda o: o.update(weights_sha256="XYZ"),
        lambda o: o.update(weights_bytes=0),
        lambda o: o.update(dp={"epsilon": "1"}),
        lambda o: o.update(dp={"epsilon": 1.0, "delta": 1e-5, "nested": {"a": 1}}),
        lambda o: o.update(seed=-1),
        lambda o: o.update(site_id="St Mary"),
        lambda o: o.update(created_at="2026-01-01"),
        lambda o: o.update(generator={"family": "cvae"}),
        lambda o: o.update(privacy_report=[1]),
    ],
)
def test_e_manifest_schema(world, change):
    obj = make_pkg(world).manifest.to_dict()
    change(obj)
    expect(
        "E_MANIFEST_SCHEMA",
        package.SignedPackage.from_bytes,
        raw_container(obj, world.weights, world.key, world.cert),
    )


def test_e_manifest_time(world):
    future = pki.rfc3339(pki.utcnow() + dt.timedelta(hours=1))
    expect("E_MANIFEST_TIME", verify, world, make_pkg(world, created_at=future))


def test_e_not_canonical_manifest(world):
    pkg = make_pkg(world)
    spaced = pkg.manifest_bytes.replace(b",", b", ", 1)
    sig = world.key.sign(package._message(spaced), ec.ECDSA(hashes.SHA256()))
    bad = dataclasses.replace(pkg, manifest_bytes=spaced, signature=sig)
    expect("E_NOT_CANONICAL", verify, world, bad)


def test_e_cert_format(world):
    pkg = make_pkg(world)
    expect("E_CERT_FORMAT", verify, world, dataclasses.replace(pkg, cert_chain_pem=b"garbage"))
    two = pkg.cert_chain_pem + pki.cert_pem(world.ca.cert)
    expect("E_CERT_FORMAT", verify, world, dataclasses.replace(pkg, cert_chain_pem=two))


def test_e_key_when_key_and_cert_differ(world):
    other_key = ec.generate_private_key(ec.SECP256R1())
    manifest = package.build_manifest(
        federation=world.fed, site_id="st-mary", weights=world.weights, classes=[0], seed=1
    )
    expect("E_KEY", package.sign_package, manifest, world.weights, other_key, world.cert)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:3],
        lambda d: b"XXXX" + d[4:],
        lambda d: d[:4] + b"\x02" + d[5:],
        lambda d: d + b"\x00",
        lambda d: d[:-1],
        lambda d: d[:5] + struct.pack(">I", 0xFFFFFFFF) + d[9:],
        lambda d: d[:5] + struct.pack(">I", len(d)) + d[9:],
        lambda d: d[:12],
    ],
)
def test_e_package_format(world, mutate):
    data = make_pkg(world).to_bytes()
    expect("E_PACKAGE_FORMAT", package.SignedPackage.from_bytes, mutate(data))


def test_a_federation_that_pins_the_dp_mechanism_refuses_modules_of_the_other(world):
    fed = make_manifest(
        dp_required=True,
        dp_policy={
            "required": True,
            "max_epsilon": 8.0,
            "delta": 1e-5,
            "mechanism": "mean-embedding",
        },
    )
    mean_embedding = mean_embedding_record(
        epsilon=7.995, noise_multiplier=0.6011962890625, n_features=2000
    )
    assert verify(world, make_pkg(world, fed=fed, dp=mean_embedding), fed=fed)
    expect("E_POLICY_DP", verify, world, make_pkg(world, fed=fed, dp=DP_CLAIM), fed=fed)


def test_a_federation_that_pins_patient_dp_refuses_claims_per_image(world):
    """dp_policy.privacy_unit = "patient": every DP claim must say it protects a patient; a
    record without the key (written before it existed) is per image and is refused too."""
    policy = {"required": True, "max_epsilon": 8.0, "delta": 1e-5, "privacy_unit": "patient"}
    fed = make_manifest(dp_required=True, dp_policy=policy)
    per_patient = {**DP_CLAIM, "privacy_unit": "patient"}
    assert verify(world, make_pkg(world, fed=fed, dp=per_patient), fed=fed)
    for per_image in ({**DP_CLAIM, "privacy_unit": "image"}, DP_CLAIM):
        with pytest.raises(FFSecureError) as info:
            verify(world, make_pkg(world, fed=fed, dp=per_image), fed=fed)
        assert _code(info) == "E_POLICY_DP"
        assert "'image'" in info.value.message and "'patient'" in info.value.message
        assert 'privacy_unit = "patient"' in info.value.hint and "dicom:" in info.value.hint
    # a federation that pins nothing, or pins "image", takes a claim per image or per patient
    unpinned = make_manifest(dp_required=True)
    image_pin = make_manifest(dp_required=True, dp_policy={**policy, "privacy_unit": "image"})
    for fed in (unpinned, image_pin):
        for claim in (DP_CLAIM, per_patient):
            assert verify(world, make_pkg(world, fed=fed, dp=claim), fed=fed)


def test_a_patient_pin_without_required_dp_binds_dp_claims_only(world):
    """As the pinned mechanism and the signed bounds: required = false leaves DP to the site,
    but a module that claims DP must claim it per patient."""
    policy = {"required": False, "max_epsilon": 8.0, "delta": 1e-5, "privacy_unit": "patient"}
    fed = make_manifest(dp_policy=policy)
    assert verify(world, make_pkg(world, fed=fed, dp=None), fed=fed)
    assert verify(
        world, make_pkg(world, fed=fed, dp={**DP_CLAIM, "privacy_unit": "patient"}), fed=fed
    )
    expect("E_POLICY_DP", verify, world, make_pkg(world, fed=fed, dp=DP_CLAIM), fed=fed)
