"""Report rendering escapes everything from the bundle; bundle loading refuses what is not a
bundle."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ffsecure import canonical
from ffsecure.audit import BundleError, audit_bundle, load_bundle, render_html
from ffsecure.ledger.checkpoint import Checkpoint, make_vkey, sign_checkpoint
from ffsecure.ledger.merkle import MemoryTree, leaf_hash
from ffsecure.records.entries import make_entry

ORIGIN = "example.org/html-test/log"
EVIL = "<script>alert('x')</script>\"><img src=x>"


def write_bundle(root, entries):
    key = Ed25519PrivateKey.generate()
    data = [canonical.dumps(e) for e in entries]
    (root / "checkpoints").mkdir(parents=True)
    (root / "log.vkey").write_text(make_vkey(ORIGIN, key.public_key()) + "\n")
    (root / "entries.jsonl").write_bytes(b"".join(d + b"\n" for d in data))
    tree = MemoryTree([leaf_hash(d) for d in data])
    (root / "checkpoints" / str(len(data))).write_text(
        sign_checkpoint(Checkpoint(ORIGIN, len(data), tree.root()), ORIGIN, key)
    )
    return root


def test_strings_from_the_bundle_are_escaped(tmp_path):
    mid = "ab" * 16
    entries = [
        make_entry(
            "module.registered",
            "site:evil",
            {
                "module_id": mid,
                "site_id": "evil",
                "manifest_sha256": "1" * 64,
                "weights_sha256": "2" * 64,
            },
        ),
        make_entry("module.deletion_requested", "site:evil", {"module_id": mid, "reason": EVIL}),
        make_entry(
            "module.deleted",
            "aggregator",
            {"module_id": mid, "reason": EVIL, "destroyed": ["wrapped_dek", "blob"]},
        ),
        # an exporter can write any bytes into entries.jsonl: make_entry would refuse this id
        {
            **make_entry("classifier.published", "operator:o", {"classifier_id": "c" * 32}),
            "facts": {"classifier_id": EVIL[:20]},
        },
    ]
    bundle = write_bundle(tmp_path / "b", entries)
    result = audit_bundle(load_bundle(bundle), ca_pem=None)
    html = render_html(result)
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&gt;&lt;img src=x&gt;" in html
    assert result.verdict == "FAILED"  # no CA, no module record, an entry with a hostile id
    codes = {f.code for f in result.findings}
    assert {"E_AUDIT_CA", "E_AUDIT_MODULE_RECORD", "E_AUDIT_ENTRY"} <= codes
    # the log part itself verified, so the deletion carries its inclusion proof
    assert (
        result.log.verified and "Inclusion proof</b> (RFC 9162) of entry 2 in checkpoint 4" in html
    )


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError) as exc:
        load_bundle(tmp_path / "absent")
    assert exc.value.code == "E_AUDIT_BUNDLE"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "log.vkey").write_text("x")
    with pytest.raises(BundleError, match="lacks entries.jsonl, checkpoints"):
        load_bundle(tmp_path / "half")


def test_truncated_entries_file_is_refused(tmp_path):
    bundle = write_bundle(
        tmp_path / "b",
        [make_entry("key.rotated", "aggregator", {"key": "tls", "new_key_id": "k2"})],
    )
    data = (bundle / "entries.jsonl").read_bytes()
    (bundle / "entries.jsonl").write_bytes(data[:-1])
    with pytest.raises(BundleError, match="newline"):
        load_bundle(bundle)


def test_malformed_module_record_is_a_finding_not_a_crash(tmp_path):
    mid = "cd" * 16
    bundle = write_bundle(
        tmp_path / "b",
        [
            make_entry(
                "module.registered",
                "site:s",
                {
                    "module_id": mid,
                    "site_id": "s",
                    "manifest_sha256": "1" * 64,
                    "weights_sha256": "2" * 64,
                },
            )
        ],
    )
    (bundle / "modules").mkdir()
    (bundle / "modules" / f"{mid}.json").write_bytes(b'{"b":1, "a":2}\n')
    (bundle / "modules" / "README").write_text("stray")
    result = audit_bundle(load_bundle(bundle), ca_pem=None)
    recs = [f for f in result.findings if f.code == "E_AUDIT_MODULE_RECORD"]
    assert any(f.entry == 0 and f.module_id == mid and "not canonical" in f.message for f in recs)
    assert any("README" in f.message and f.severity == "warning" for f in recs)
