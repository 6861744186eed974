"""Federation manifest: TOML -> CA-signed manifest -> verified typed record."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ffsecure import canonical, envelope, federation, pki
from ffsecure.errors import FFSecureError
from ffsecure.generators import default_config
from ffsecure.ledger import make_vkey

LABELS = ["normal", "benign", "malignant"]
SHAPE = (1, 16, 16)


def aggregator_keys(suite: str = "x25519") -> dict:
    _, public = envelope.generate_keypair(suite)
    return {
        "endpoint": "127.0.0.1:7443",
        "hpke_public_key": envelope.b64encode(public),
        "hpke_key_id": envelope.key_id(public),
        "hpke_suite": suite,
        "log_public_key": make_vkey(
            "example.org/ffsecure/log", Ed25519PrivateKey.generate().public_key()
        ),
        "log_origin": "example.org/ffsecure/log",
    }


def make_manifest(
    federation_id: str = "fed-test",
    *,
    dp_required: bool = False,
    suite: str = "x25519",
    **overrides,
) -> federation.FederationManifest:
    fields = dict(
        federation_id=federation_id,
        label_space=list(LABELS),
        image_shape=SHAPE,
        generator={
            "family": "cvae",
            "config": default_config(
                "cvae", image_shape=SHAPE, num_classes=len(LABELS), size="tiny"
            ),
        },
        dp_policy={
            "required": dp_required,
            "max_epsilon": 8.0 if dp_required else None,
            "delta": 1e-5 if dp_required else None,
        },
        limits={"max_module_bytes": 16 << 20},
        aggregator=aggregator_keys(suite),
        privacy_policy=None,
    )
    fields.update(overrides)
    return federation.FederationManifest(**fields)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return pki.init_ca(tmp_path_factory.mktemp("ca"), "fed-test")


def _code(info):
    return info.value.code


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_signed_manifest_round_trip(ca, suite):
    manifest = make_manifest(suite=suite, privacy_policy={"max_membership_auroc": 0.6})
    data = federation.create_signed_manifest(manifest, ca)
    assert canonical.loads_canonical(data)  # the file itself is canonical JSON
    loaded = federation.load_signed_manifest(data, ca.cert)
    assert loaded == manifest
    assert loaded.num_classes == 3 and loaded.hpke_suite == suite
    assert envelope.key_id(loaded.hpke_public_key) == loaded.hpke_key_id
    assert loaded.privacy_policy == {"max_membership_auroc": 0.6}


def test_a_pinned_privacy_unit_is_signed_and_its_absence_keeps_the_old_bytes(ca):
    """dp_policy.privacy_unit is optional: a manifest without it signs the bytes it signed
    before the key existed (so old manifests and their signatures still verify)."""
    old = make_manifest(dp_required=True)
    old_bytes = federation.create_signed_manifest(old, ca)
    assert b"privacy_unit" not in old_bytes
    assert federation.load_signed_manifest(old_bytes, ca.cert) == old
    policy = {**old.dp_policy, "privacy_unit": "patient"}
    pinned = make_manifest(dp_required=True, dp_policy=policy)
    loaded = federation.load_signed_manifest(federation.create_signed_manifest(pinned, ca), ca.cert)
    assert loaded.dp_policy["privacy_unit"] == "patient" and loaded == pinned
    # the unit is signed: a bundle's exporter cannot drop it and keep the signature
    obj = json.loads(federation.create_signed_manifest(pinned, ca))
    del obj["signed"]["dp_policy"]["privacy_unit"]
    with pytest.raises(FFSecureError) as info:
        federation.load_signed_manifest(canonical.dumps(obj), ca.cert)
    assert _code(info) == "E_MANIFEST_SIGNATURE"


@pytest.mark.parametrize("unit", ["study", "Patient", "", 1, None])
def test_an_unknown_pinned_privacy_unit_is_refused(unit):
    with pytest.raises(FFSecureError) as info:
        make_manifest(
            dp_policy={"required": False, "max_epsilon": None, "delta": None, "privacy_unit": unit}
        )
    assert _code(info) == "E_MANIFEST_SCHEMA" and "privacy_unit" in info.value.message


def test_altered_manifest_fails_signature(ca):
    data = federation.create_signed_manifest(make_manifest(), ca)
    obj = json.loads(data)
    obj["signed"]["label_space"].append("extra")
    with pytest.raises(FFSecureError) as info:
        federation.load_signed_manifest(canonical.dumps(obj), ca.cert)
    assert _code(info) == "E_MANIFEST_SIGNATURE"


def test_manifest_signed_by_another_ca_is_refused(ca, tmp_path):
    other = pki.init_ca(tmp_path / "other", "fed-test")
    data = federation.create_signed_manifest(make_manifest(), other)
    with pytest.raises(FFSecureError) as info:
        federation.load_signed_manifest(data, ca.cert)
    assert _code(info) == "E_MANIFEST_SIGNATURE"


def test_forged_signature_bytes_are_refused(ca):
    data = federation.create_signed_manifest(make_manifest(), ca)
    obj = json.loads(data)
    sig = bytearray(base64.b64decode(obj["signatures"][0]["sig"]))
    sig[-1] ^= 1
    obj["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(FFSecureError) as info:
        federation.load_signed_manifest(canonical.dumps(obj), ca.cert)
    assert _code(info) == "E_MANIFEST_SIGNATURE"


def test_manifest_for_another_federation_is_refused(ca, tmp_path):
    with pytest.raises(FFSecureError) as info:
        federation.create_signed_manifest(make_manifest("fed-other"), ca)
    assert _code(info) == "E_FEDERATION_MISMATCH"


def test_non_canonical_or_malformed_file_is_refused(ca):
    data = federation.create_signed_manifest(make_manifest(), ca)
    with pytest.raises(FFSecureError) as info:
        federation.load_signed_manifest(json.dumps(json.loads(data), indent=1).encode(), ca.cert)
    assert _code(info) == "E_NOT_CANONICAL"
    with pytest.raises(FFSecureError) as info:
        federation.load_signed_manifest(canonical.dumps({"signed": {}}), ca.cert)
    assert _code(info) == "E_MANIFEST_SCHEMA"
    with pytest.raises(FFSecureError) as info:
        federation.load_signed_manifest(b"[" * 10_000, ca.cert)
    assert _code(info) == "E_JSON_DEPTH"


@pytest.mark.parametrize(
    "override",
    [
        {"label_space": []},
        {"label_space": ["a", "a", "b"]},
        {"image_shape": (2, 16, 16)},
        {"image_shape": (1, 18, 16)},
        {"image_shape": (1, 128, 128)},
        {"dp_policy": {"required": True, "max_epsilon": None, "delta": 1e-5}},
        {"dp_policy": {"required": False, "max_epsilon": -1.0, "delta": None}},
        {"dp_policy": {"required": False, "max_epsilon": None, "delta": 1.5}},
        {"limits": {"max_module_bytes": 10}},
        {"limits": {"max_module_bytes": 1 << 40}},
        {"limits": {"max_module_bytes": 1 << 20, "other": 1}},
        {
            "generator": {
                "family": "cvae",
                "config": default_config("cvae", image_shape=SHAPE, num_classes=5, size="tiny"),
            }
        },
        {"privacy_policy": {"nested": {"a": 1}}},
        {"created_at": "yesterday"},
    ],
)
def test_bad_fields_are_refused(override):
    with pytest.raises(FFSecureError) as info:
        make_manifest(**override)
    assert _code(info) == "E_MANIFEST_SCHEMA"


@pytest.mark.parametrize(
    "field, value",
    [
        ("endpoint", "no-port"),
        ("endpoint", "host:99999"),
        ("hpke_suite", "rsa"),
        ("hpke_public_key", "not base64!"),
        ("hpke_public_key", base64.b64encode(b"x" * 31).decode()),
        ("hpke_key_id", "0" * 64),
        ("log_public_key", "example.org+00000000+AAAA"),
        ("log_origin", ""),
        ("endpoint", "host:\u00b2"),
        ("endpoint", "host:\uff18\uff14\uff14\uff13"),
        ("endpoint", "host:8443\n"),
    ],
)
def test_bad_aggregator_fields_are_refused(field, value):
    agg = aggregator_keys()
    agg[field] = value
    with pytest.raises(FFSecureError) as info:
        make_manifest(aggregator=agg)
    assert _code(info) == "E_MANIFEST_SCHEMA"


def test_unknown_generator_family_is_refused():
    with pytest.raises(FFSecureError) as info:
        make_manifest(generator={"family": "gan", "config": {}})
    assert _code(info) == "E_MANIFEST_SCHEMA"


def _write_toml(tmp_path, extra: str = "", aggregator: str | None = None):
    agg = aggregator_keys()
    federation.write_public_keys(
        tmp_path / "public-keys.json",
        hpke_public_key=base64.b64decode(agg["hpke_public_key"]),
        hpke_suite="x25519",
        log_public_key=agg["log_public_key"],
        log_origin=agg["log_origin"],
    )
    if aggregator is None:
        aggregator = 'endpoint = "agg.example:7443"\npublic_keys = "public-keys.json"'
    text = f"""
federation_id = "fed-test"
label_space = ["normal", "benign", "malignant"]
image_shape = [1, 16, 16]
{extra}
[generator]
family = "cvae"
size = "tiny"

[dp_policy]
required = true
max_epsilon = 8.0
delta = 1e-5

[limits]
max_module_bytes = 1048576

[aggregator]
{aggregator}
"""
    path = tmp_path / "federation.toml"
    path.write_text(text)
    return path, agg


def test_toml_to_manifest(tmp_path, ca):
    path, agg = _write_toml(tmp_path)
    manifest = federation.manifest_from_toml(path)
    assert manifest.aggregator["hpke_key_id"] == agg["hpke_key_id"]
    assert manifest.aggregator["endpoint"] == "agg.example:7443"
    assert manifest.dp_policy == {"required": True, "max_epsilon": 8.0, "delta": 1e-5}
    assert manifest.generator["config"] == default_config(
        "cvae", image_shape=SHAPE, num_classes=3, size="tiny"
    )
    assert (
        federation.load_signed_manifest(federation.create_signed_manifest(manifest, ca), ca.cert)
        == manifest
    )


def test_toml_pins_the_privacy_unit_in_the_dp_policy(tmp_path, ca):
    path, _ = _write_toml(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("delta = 1e-5\n", 'delta = 1e-5\nprivacy_unit = "patient"\n'))
    manifest = federation.manifest_from_toml(path)
    assert manifest.dp_policy == {
        "required": True,
        "max_epsilon": 8.0,
        "delta": 1e-5,
        "privacy_unit": "patient",
    }
    path.write_text(text.replace("delta = 1e-5\n", 'delta = 1e-5\nprivacy_unit = "study"\n'))
    with pytest.raises(FFSecureError) as info:
        federation.manifest_from_toml(path)
    assert _code(info) == "E_CONFIG" and "privacy_unit" in info.value.message
    path.write_text(text.replace("delta = 1e-5\n", 'delta = 1e-5\nunit = "patient"\n'))
    with pytest.raises(FFSecureError) as info:
        federation.manifest_from_toml(path)
    assert _code(info) == "E_CONFIG" and "'privacy_unit'" in info.value.message


def test_toml_with_inline_keys(tmp_path):
    agg = aggregator_keys()
    inline = "\n".join(
        f'{k} = "{agg[k]}"'
        for k in ("endpoint", "hpke_public_key", "hpke_suite", "log_public_key", "log_origin")
    )
    path, _ = _write_toml(tmp_path, aggregator=inline)
    assert federation.manifest_from_toml(path).aggregator == agg


@pytest.mark.parametrize(
    "extra, aggregator",
    [
        ("colour = 'blue'", None),
        ("", 'endpoint = "a:1"\npublic_keys = "missing.json"'),
        ("", 'endpoint = "a:1"\nhpke_suite = "x25519"'),
        ("", 'endpoint = "a:1"\npublic_keys = "public-keys.json"\nsurprise = 1'),
        ("[privacy_policy]\nmax_membership_auroc = 2\n[privacy_policy.x]\ny = 1", None),
        ("this is not toml", None),
    ],
)
def test_bad_toml_is_refused(tmp_path, extra, aggregator):
    path, _ = _write_toml(tmp_path, extra=extra, aggregator=aggregator)
    with pytest.raises(FFSecureError) as info:
        federation.manifest_from_toml(path)
    assert _code(info) == "E_CONFIG"


def test_public_keys_file_is_validated(tmp_path):
    (tmp_path / "public-keys.json").write_text('{"v":1}')
    with pytest.raises(FFSecureError) as info:
        federation.load_public_keys(tmp_path / "public-keys.json")
    assert _code(info) == "E_CONFIG"


def test_cli_create_and_verify(tmp_path):
    """The CLI in-process (the generator import is already paid for by this test module)."""
    from click.testing import CliRunner

    from ffsecure.cli import cli

    def run(*args, ok=True):
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result

    run("pki", "init", "--federation-id", "fed-test", "--dir", str(tmp_path / "ca"))
    path, agg = _write_toml(tmp_path)
    out = tmp_path / "federation.json"
    run(
        "federation",
        "create",
        "--config",
        str(path),
        "--ca-dir",
        str(tmp_path / "ca"),
        "--out",
        str(out),
    )
    shown = json.loads(
        run(
            "federation", "verify", str(out), "--ca", str(tmp_path / "ca" / "ca.pem"), "--json"
        ).stdout
    )
    assert shown["hpke_key_id"] == agg["hpke_key_id"] and shown["label_space"] == LABELS
    other = pki.init_ca(tmp_path / "other", "fed-test")
    (tmp_path / "other.pem").write_bytes(other.cert_pem)
    refused = run("federation", "verify", str(out), "--ca", str(tmp_path / "other.pem"), ok=False)
    assert "error[E_MANIFEST_SIGNATURE]" in refused.output


def test_a_privacy_policy_with_an_optional_report_is_refused_at_create_and_at_load(tmp_path, ca):
    """`required = false` would let a module without a report pass every limit: refused by
    `federation create` (TOML), and a manifest a CA signed with it anyway does not load."""
    path, _ = _write_toml(
        tmp_path, extra="[privacy_policy]\nrequired = false\nmax_membership_auroc = 0.6\n"
    )
    with pytest.raises(FFSecureError) as info:
        federation.manifest_from_toml(path)
    assert _code(info) == "E_CONFIG" and "required = false is refused" in info.value.message
    path, _ = _write_toml(tmp_path, extra="[privacy_policy]\nmax_membership_auroc = 0.6\n")
    assert federation.manifest_from_toml(path).privacy_policy == {"max_membership_auroc": 0.6}
    body = make_manifest(privacy_policy={"max_membership_auroc": 0.6}).to_dict()
    body["privacy_policy"] = {"required": False, "max_membership_auroc": 0.6}
    signed = federation.ca_sign(body, ca, federation.SIGNATURE_CONTEXT)
    with pytest.raises(FFSecureError) as info:
        federation.load_signed_manifest(signed, ca.cert)
    assert _code(info) == "E_MANIFEST_SCHEMA" and "required = false is refused" in (
        info.value.message
    )


def test_the_newest_recorded_manifest_is_the_latest_created_not_the_last_recorded():
    from ffsecure.federation import newest_recorded

    def rec(index, created):
        return (index, {"created_at": created, "federation_sha256": f"{index:064x}"})

    a, b = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"
    newest, rollbacks = newest_recorded([rec(0, a), rec(3, b), rec(7, a)])
    assert newest == rec(3, b) and rollbacks == [(rec(7, a), rec(3, b))]
    # a tie goes to the later record; going forward again is no rollback
    newest, rollbacks = newest_recorded([rec(0, a), rec(2, a), rec(5, b)])
    assert newest == rec(5, b) and rollbacks == []
    newest, _ = newest_recorded([rec(1, b), rec(4, b)])
    assert newest == rec(4, b)
    assert newest_recorded([]) == (None, [])


def test_the_manifest_in_force_is_judged_against_the_newest_record_by_one_rule():
    from ffsecure.federation import (
        MISDATED,
        STALE,
        UNRECORDED,
        SignedManifest,
        recorded_problem,
    )

    signed = SignedManifest(make_manifest(created_at="2026-02-01T00:00:00Z"), "ab" * 32)
    same = {"federation_sha256": "ab" * 32, "created_at": "2026-02-01T00:00:00Z"}
    assert recorded_problem(signed, (3, same), modules=5) is None
    assert recorded_problem(signed, None, modules=0) is None  # nothing registered: nothing judged
    assert recorded_problem(signed, None, modules=1) == UNRECORDED
    assert recorded_problem(signed, (3, {**same, "federation_sha256": "cd" * 32}), 0) == STALE
    assert recorded_problem(signed, (3, {**same, "created_at": "2099-01-01T00:00:00Z"}), 0) == (
        MISDATED
    )


def test_the_manifests_that_bind_a_registration_are_the_last_and_the_newest_before_it():
    a = (0, {"federation_sha256": "a" * 64, "created_at": "2026-01-02T00:00:00Z"})
    b = (3, {"federation_sha256": "b" * 64, "created_at": "2026-01-01T00:00:00Z"})
    c = (6, {"federation_sha256": "c" * 64, "created_at": "2026-01-03T00:00:00Z"})
    # b (older) was put back at entry 3: it is what the aggregator enforced, and a, the
    # newest the CA signed by then, still binds too; c, newer, replaces both
    at = federation.in_force_at([a, b, c], [1, 2, 4, 7])
    assert at == {1: (a,), 2: (a,), 4: (b, a), 7: (c,)}
    assert federation.in_force_at([b], [0, 1, 2]) == {}  # registered before any record
    assert federation.in_force_at([], [5]) == {}
