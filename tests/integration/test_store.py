"""The store and ledger on both backends (SQLite files, a real PostgreSQL server): registration,
receipts, crypto-shredding, export, tampering.

The ``store`` and ``home`` fixtures run each test against ``sqlite`` and ``postgres``
(tests/pg_fixture.py); ``raw`` reads and tampers with a backend's rows and blobs
behind the store's back. A test about SQLite's files pins ``backend`` to ``sqlite``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aggregator.export import write_bundle
from aggregator.home import AggregatorHome, LogSigner, load_or_create_kek, load_or_create_log_key
from aggregator.store import home_config, open_home_store, open_store
from ffsecure import canonical
from ffsecure.errors import ConfigError, FFSecureError, LedgerError, NotFoundError, StoreError
from ffsecure.ledger import (
    leaf_hash,
    make_entry,
    open_checkpoint,
    verify_bundle_log,
    verify_consistency,
    verify_inclusion,
)
from tests.pg_fixture import use_postgres

ORIGIN = "ffsecure.local/test-fed/log"
BACKENDS = ["sqlite", "postgres"]
SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def _ca_pem() -> bytes:
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def module_args(
    site: str = "st-mary", weights: bytes | None = None, module_id: str | None = None
) -> dict:
    module_id = module_id or secrets.token_hex(16)
    weights = weights if weights is not None else secrets.token_bytes(2048)
    manifest = canonical.dumps(
        {
            "module_id": module_id,
            "site_id": site,
            "classes": [0, 1],
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
        }
    )
    meta = canonical.dumps({"signature": "c2ln", "cert_chain": ["-----BEGIN CERTIFICATE-----"]})
    entry = make_entry(
        "module.registered",
        f"site:{site}",
        {
            "module_id": module_id,
            "site_id": site,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
        },
    )
    return dict(
        module_id=module_id,
        site_id=site,
        manifest_bytes=manifest,
        package_meta=meta,
        weights=weights,
        entry=entry,
    )


class RawSQLite:
    """The SQLite store's rows and blob files, read and changed behind the store's back."""

    def __init__(self, home: AggregatorHome):
        self.home = home

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        con = sqlite3.connect(self.home.store_db)
        try:
            rows = con.execute(sql, params).fetchall()
            con.commit()
            return rows
        finally:
            con.close()

    def blobs(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.home.blobs.iterdir()}

    def stored_bytes(self) -> bytes:
        """Every byte of the database's files on disk."""
        return b"".join(
            f.read_bytes() for f in self.home.root.iterdir() if f.name.startswith("store.sqlite")
        )


class RawPostgres:
    """The PostgreSQL store's rows, read and changed over the test's own connection."""

    def __init__(self, dsn: str, cluster):
        self.dsn, self.cluster = dsn, cluster

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as con:
            cur = con.execute(sql.replace("?", "%s"), params)
            return (
                [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in cur]
                if cur.description
                else []
            )

    def blobs(self) -> dict[str, bytes]:
        return dict(self.execute("SELECT name, data FROM blobs"))

    def stored_bytes(self) -> bytes:
        """Every byte of the live files of the store's tables, once flushed (CHECKPOINT)."""
        self.execute("CHECKPOINT")
        data = b""
        for table in ("modules", "artifacts", "blobs"):
            (rel,) = self.execute(f"SELECT pg_relation_filepath('{table}')")[0]
            base = self.cluster.root / "data" / rel
            for f in sorted(base.parent.glob(base.name + "*")):
                data += f.read_bytes()
        return data


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def home(tmp_path, backend, request) -> AggregatorHome:
    h = AggregatorHome.at(tmp_path / "agg")
    if backend == "postgres":
        h.ensure_dirs()
        use_postgres(h.config, request.getfixturevalue("pg_dsn"))
    return h


@pytest.fixture
def raw(home, backend, request):
    if backend == "postgres":
        return RawPostgres(request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_cluster"))
    return RawSQLite(home)


@pytest.fixture
def store(home):
    s = open_home_store(home, origin=ORIGIN, create=True)
    yield s
    s.close()


def _verify_receipt(r, vkey):
    cp = open_checkpoint(r.checkpoint, vkey)
    assert cp.size == r.tree_size
    verify_inclusion(leaf_hash(r.entry), r.index, r.tree_size, r.inclusion_proof, cp.root_hash)


def test_register_gives_a_verifiable_receipt_and_encrypts_weights(store, home, raw, backend):
    args = module_args()
    r = store.register_module(**args)
    assert (r.index, r.tree_size, r.existing) == (0, 1, False)
    _verify_receipt(r, store.vkey)
    assert store.module_weights(args["module_id"]) == args["weights"]
    (blob,) = raw.blobs().values()
    if backend == "sqlite":
        assert stat.S_IMODE(next(home.blobs.iterdir()).stat().st_mode) == 0o600
    assert args["weights"][:64] not in blob
    row = store.get_module(args["module_id"])
    assert (row.status, row.site_id, row.registered_index) == ("active", "st-mary", 0)
    assert row.manifest == args["manifest_bytes"]
    assert stat.S_IMODE(home.kek_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.log_key.stat().st_mode) == 0o600
    assert store.verify_integrity()["entries"] == 1


def test_registration_is_idempotent_and_refuses_a_different_manifest(store, raw):
    args = module_args()
    first = store.register_module(**args)
    store.append(make_entry("cert.revoked", "operator:alice", {"serial": "0a", "reason": "test"}))
    again = store.register_module(**args)
    assert again.existing and again.index == first.index and again.entry == first.entry
    _verify_receipt(again, store.vkey)
    assert store.size() == 2
    other = module_args(module_id=args["module_id"])
    with pytest.raises(StoreError) as info:
        store.register_module(**other)
    assert info.value.code == "E_DUPLICATE_MODULE"
    assert store.size() == 2 and len(raw.blobs()) == 1


@pytest.mark.parametrize(
    "field, value, code",
    [
        ("module_id", "../../etc/passwd", "E_MODULE_ID"),
        ("site_id", "bad site", "E_SITE_ID"),
        ("manifest_bytes", b'{"a": 1}', "E_NOT_CANONICAL"),
        ("weights", b"other weights", "E_ENTRY"),
    ],
)
def test_bad_registrations_change_nothing(store, raw, field, value, code):
    args = module_args()
    args[field] = value
    with pytest.raises(FFSecureError) as info:
        store.register_module(**args)
    assert info.value.code == code
    assert store.size() == 0 and raw.blobs() == {} and store.list_modules() == []


def test_a_registration_s_precondition_sees_the_site_s_rows_in_the_write_and_can_refuse(
    store, home, raw
):
    """The rule a registration depends on (a site's DP budget) is judged on rows read inside
    the write transaction: every module of the site, deleted ones included, and another
    server's commit (a second store object on the same store) is among them."""
    kept, gone = module_args(), module_args()
    store.register_module(**kept)
    store.register_module(**module_args(site="st-john"))
    store.register_module(**gone)
    store.delete_module(gone["module_id"], actor="site:st-mary", reason="withdrawn")
    other = open_home_store(home)  # another server's connection to the same store
    late = module_args()
    other.register_module(**late)
    seen: list[list[tuple[str, str]]] = []

    def refuse(rows):
        seen.append([(r.module_id, r.status) for r in rows])
        raise StoreError("over budget", code="E_DP_BUDGET")

    before = (store.size(), len(raw.blobs()), store.list_modules())
    new = module_args()
    with pytest.raises(StoreError) as info:
        store.register_module(**new, precondition=refuse)
    assert info.value.code == "E_DP_BUDGET"
    assert seen == [
        [
            (kept["module_id"], "active"),
            (gone["module_id"], "deleted"),
            (late["module_id"], "active"),
        ]
    ]
    assert (store.size(), len(raw.blobs()), store.list_modules()) == before  # nothing written
    # a module already registered is a re-send, not a new release: no precondition
    again = store.register_module(**late, precondition=refuse)
    assert again.existing and len(seen) == 1
    accepted = store.register_module(**new, precondition=seen.append)
    assert not accepted.existing and len(seen[-1]) == 3
    assert store.verify_integrity()["modules"] == 5
    other.close()


def test_delete_crypto_shreds_and_logs_what_was_destroyed(store, home, raw, backend):
    args = module_args()
    mid = args["module_id"]
    store.register_module(**args)
    ((wrapped,),) = raw.execute("SELECT wrapped_dek FROM modules WHERE module_id = ?", (mid,))
    (backup,) = raw.blobs().values()
    req = make_entry(
        "module.deletion_requested", "site:st-mary", {"module_id": mid, "reason": "withdrawn"}
    )
    out = store.delete_module(mid, actor="site:st-mary", reason="withdrawn", request_entry=req)
    assert [i for i, _ in out] == [1, 2]
    deleted = canonical.loads(out[1][1])
    assert deleted["type"] == "module.deleted"
    assert deleted["facts"]["destroyed"] == ["wrapped_dek", "blob"]
    assert deleted["facts"]["module_id"] == mid
    assert raw.blobs() == {}
    with pytest.raises(StoreError) as info:
        store.module_weights(mid)
    assert info.value.code == "E_MODULE_DELETED"
    with pytest.raises(StoreError):
        store.delete_module(mid, actor="operator:bob", reason="again")
    with pytest.raises(StoreError) as info:
        store.register_module(**args)
    assert info.value.code == "E_MODULE_DELETED"
    # The wrapped data key is gone from the live files of the store (SQLite: secure_delete and
    # a WAL checkpoint; PostgreSQL: VACUUM FULL rewrote the tables without the dead row version),
    # so the backed-up blob is unreadable.
    assert len(wrapped) == 60 and wrapped not in raw.stored_bytes()
    assert raw.execute("SELECT COUNT(*) FROM modules WHERE wrapped_dek IS NOT NULL") == [(0,)]
    assert store.get_module(mid).status == "deleted"
    assert store.verify_integrity()["deleted_modules"] == 1
    if backend == "sqlite":
        # A restored blob copy is an orphan: removed at the next open, never decryptable.
        (home.blobs / f"m-{mid}.blob").write_bytes(backup)
        store.close()
        reopened = open_home_store(home)
        assert raw.blobs() == {}
        reopened.close()


def test_unknown_module(store):
    with pytest.raises(NotFoundError):
        store.module_weights("0" * 32)
    with pytest.raises(NotFoundError):
        store.delete_module("0" * 32, actor="operator:bob", reason="x")


def test_artifacts_are_stored_with_their_entries_and_shredded_when_retired(store, raw):
    mid = module_args()
    store.register_module(**mid)
    data = b"synthetic dataset bytes" * 100
    ds_entry = make_entry(
        "dataset.synthesized",
        "operator:alice",
        {
            "dataset_id": "ds-1",
            "modules": [mid["module_id"]],
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    idx, stored = store.put_artifact("dataset", "ds-1", {"n_per_class": 10}, data, ds_entry)
    assert idx == 1 and canonical.loads(stored) == ds_entry
    assert store.artifact_blob("dataset", "ds-1") == data
    row = store.get_artifact("dataset", "ds-1")
    assert (row.status, row.has_blob, row.meta) == ("active", True, {"n_per_class": 10})
    with pytest.raises(StoreError) as info:
        store.put_artifact("dataset", "ds-1", {}, data, ds_entry)
    assert info.value.code == "E_DUPLICATE_ARTIFACT"
    clf = make_entry(
        "classifier.trained",
        "operator:alice",
        {"classifier_id": "c-1", "dataset_id": "ds-1", "sha256": "cd" * 32},
    )
    store.put_artifact("classifier", "c-1", {"arch": "cnn"}, None, clf)
    store.set_artifact_status(
        "classifier",
        "c-1",
        "published",
        make_entry("classifier.published", "operator:alice", {"classifier_id": "c-1"}),
    )
    assert [a.artifact_id for a in store.list_artifacts("classifier", "published")] == ["c-1"]
    store.set_artifact_status(
        "dataset",
        "ds-1",
        "retired",
        make_entry(
            "dataset.retired", "operator:alice", {"dataset_id": "ds-1", "reason": "module deleted"}
        ),
    )
    with pytest.raises(NotFoundError):
        store.artifact_blob("dataset", "ds-1")
    assert list(raw.blobs()) == [f"m-{mid['module_id']}.blob"]
    with pytest.raises(LedgerError):  # entry of the wrong type
        store.set_artifact_status("classifier", "c-1", "retired", ds_entry)
    with pytest.raises(FFSecureError) as info:
        store.put_artifact("model", "x", {}, None, clf)
    assert info.value.code == "E_ARTIFACT_KIND"
    assert store.size() == 5
    store.verify_integrity()


def test_append_refuses_events_that_need_a_store_operation(store):
    args = module_args()
    with pytest.raises(LedgerError):
        store.append(args["entry"])
    assert store.size() == 0


def test_reopen_keeps_state_and_refuses_other_keys(store, home, tmp_path):
    args = module_args()
    store.register_module(**args)
    root = store.root_hash()
    store.close()
    s2 = open_home_store(home)
    assert s2.size() == 1 and s2.root_hash() == root
    assert s2.module_weights(args["module_id"]) == args["weights"]
    s2.close()
    kek = load_or_create_kek(home)
    signer = load_or_create_log_key(home)
    config = home_config(home)
    with pytest.raises(ConfigError) as info:
        open_store(config, origin=ORIGIN, kek=secrets.token_bytes(32), log_signer=signer)
    assert info.value.code == "E_KEK_MISMATCH"
    with pytest.raises(ConfigError) as info:
        open_store(config, origin=ORIGIN, kek=kek, log_signer=LogSigner.generate(ORIGIN))
    assert info.value.code == "E_LOG_KEY_MISMATCH"


def test_key_files_are_never_overwritten_and_a_missing_one_is_named(store, home):
    from aggregator.home import create_kek, load_kek

    kek = home.kek_key.read_bytes()
    with pytest.raises(ConfigError) as info:
        create_kek(home)
    assert info.value.code == "E_KEY_EXISTS"
    assert home.kek_key.read_bytes() == kek and stat.S_IMODE(home.kek_key.stat().st_mode) == 0o600
    store.close()
    other = AggregatorHome.at(home.root.parent / "elsewhere")
    with pytest.raises(ConfigError) as info:
        load_kek(other)
    assert info.value.code == "E_KEY_MISSING"
    with pytest.raises(ConfigError) as info:
        load_or_create_log_key(other)
    assert info.value.code == "E_KEY_MISSING"


def test_a_store_of_another_schema_version_is_refused(store, home, raw):
    store.close()
    raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError) as info:
        open_home_store(home)
    assert info.value.code == "E_STORE_VERSION"


#: Per backend: the schemas of earlier releases, the tables each lacked, and the current one.
_OLDER_SCHEMAS = {
    "sqlite": ([("1", ["evaluations", "site_activity"]), ("2", ["site_activity"])], "3"),
    "postgres": ([("pg-1", ["site_activity"])], "pg-2"),
}


def test_a_store_of_an_older_schema_is_upgraded_in_place(home, raw, backend):
    older, current = _OLDER_SCHEMAS[backend]
    for version, missing in older:
        with open_home_store(home, origin=ORIGIN, create=True) as store:
            receipt = store.register_module(**module_args())
            root = store.root_hash()
        for table in missing:  # what that release wrote: not these tables
            raw.execute(f"DROP TABLE {table}")
        raw.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
        with open_home_store(home) as s2:
            assert s2.root_hash() == root and s2.entry(receipt.index) == receipt.entry
            assert s2.list_evaluations() == [] and s2.list_site_activity() == []
            assert s2.verify_integrity()["evaluations"] == 0
            s2.note_site("st-mary", at="2026-12-06T23:40:12Z")
            assert [r.site_id for r in s2.list_site_activity()] == ["st-mary"], version
        assert raw.execute("SELECT value FROM meta WHERE key = 'schema'") == [(current,)]


def test_site_activity_keeps_one_row_per_site_with_its_newest_refusal(store, home, raw):
    store.register_module(**module_args(site="st-john"))
    size = store.size()
    store.note_site("st-mary", at="2026-12-06T23:40:00Z")
    store.note_site("st-john", at="2026-12-06T23:40:01Z", refusal=("E_SITE_MISMATCH", "Upload"))
    store.note_site("st-john", at="2026-12-06T23:41:00Z")  # a later contact keeps the refusal
    store.note_site("st-mary", at="2026-12-06T23:42:00Z", refusal=("E_RATE_LIMIT", "Upload"))
    store.note_site("st-mary", at="2026-12-06T23:43:00Z", refusal=("E_CERT_REVOKED", "Health"))
    for bad in ("", "St Mary", "../x", "a" * 200):
        with pytest.raises(FFSecureError) as info:
            store.note_site(bad, at="2026-12-06T23:44:00Z")
        assert info.value.code == "E_SITE_ID"
    store.close()
    with open_home_store(home) as s2:  # kept across a restart
        john, mary = s2.list_site_activity()
        assert s2.size() == size  # operational state: nothing enters the ledger
    assert (john.site_id, john.last_contact) == ("st-john", "2026-12-06T23:41:00Z")
    assert (john.last_refusal_code, john.last_refusal_method, john.last_refusal_time) == (
        "E_SITE_MISMATCH",
        "Upload",
        "2026-12-06T23:40:01Z",
    )
    assert (mary.site_id, mary.last_contact, mary.last_refusal_code) == (
        "st-mary",
        "2026-12-06T23:43:00Z",
        "E_CERT_REVOKED",
    )
    assert mary.last_refusal_method == "Health"
    assert raw.execute("SELECT COUNT(*) FROM site_activity") == [(2,)]


def _evaluation(store, site="st-mary", salt="ab" * 16):
    from ffsecure.evalreport import EvaluationReport, ledger_facts

    if not store.list_artifacts("classifier"):
        store.put_artifact(
            "classifier",
            "clf-1",
            {},
            b"weights",
            make_entry(
                "classifier.trained",
                "operator:t",
                {
                    "classifier_id": "clf-1",
                    "dataset_id": "ds-1",
                    "sha256": hashlib.sha256(b"weights").hexdigest(),
                },
            ),
        )
    report = EvaluationReport("clf-1", 4, 0.75, None, (1.0, 0.5))
    entry = make_entry("classifier.evaluated", f"site:{site}", ledger_facts(report, site, salt))
    return report, entry


def test_evaluation_reports_are_kept_with_their_entry_and_checked(store, home, raw):
    report, entry = _evaluation(store)
    with pytest.raises(LedgerError) as info:  # only put_evaluation appends classifier.evaluated
        store.append(entry)
    assert info.value.code == "E_ENTRY"
    for bad in (
        {**entry, "actor": "site:st-john"},
        {**entry, "facts": {**entry["facts"], "site_id": "st-john"}},
    ):
        with pytest.raises(LedgerError):
            store.put_evaluation(
                site_id="st-mary", report=report.to_bytes(), salt="ab" * 16, entry=bad
            )
    size = store.size()
    row, receipt = store.put_evaluation(
        site_id="st-mary", report=report.to_bytes(), salt="ab" * 16, entry=entry
    )
    assert receipt.index == size and not receipt.existing and row.report == report.to_dict()
    _, again = store.put_evaluation(
        site_id="st-mary",
        report=report.to_bytes(),
        salt="cd" * 16,
        entry=_evaluation(store, salt="cd" * 16)[1],
    )
    assert again.existing and again.index == receipt.index and store.size() == size + 1
    assert store.verify_integrity()["evaluations"] == 1
    store.close()
    # the stored numbers no longer match the ledger's commitment
    raw.execute("UPDATE evaluations SET report = ?", (report.to_bytes().replace(b"0.75", b"0.5"),))
    with open_home_store(home) as s2:
        with pytest.raises(StoreError) as info:
            s2.verify_integrity()
        assert info.value.code == "E_STORE_CORRUPT"


def test_the_store_interface_declares_every_operation_the_cli_uses():
    """A PostgreSQL backend implementing ``Store`` gets everything the service and CLI call."""
    from aggregator.store import Store

    for name in (
        "register_module",
        "delete_module",
        "module_weights",
        "put_artifact",
        "append",
        "checkpoint",
        "inclusion_proof",
        "consistency_proof",
        "snapshot",
        "verify_integrity",
        "close",
        "put_evaluation",
        "list_evaluations",
        "note_site",
        "list_site_activity",
    ):
        assert name in Store.__abstractmethods__, name


@SQLITE_ONLY
def test_orphan_blob_from_an_interrupted_write_is_removed_at_open(store, home):
    store.register_module(**module_args())
    orphan = home.blobs / f"m-{'a' * 32}.blob"
    orphan.write_bytes(b"half written")
    (home.blobs / ".m-x.blob.1234.tmp").write_bytes(b"tmp")
    store.close()
    s2 = open_home_store(home)
    assert len(list(home.blobs.iterdir())) == 1 and not orphan.exists()
    s2.verify_integrity()
    s2.close()


def test_proofs_between_checkpoints(store):
    notes = []
    for i in range(9):
        store.register_module(**module_args())
        if i % 3 == 0:
            store.append(
                make_entry("key.rotated", "aggregator", {"key": "tls", "new_key_id": f"k{i}"})
            )
        notes.append(store.checkpoint())
    cps = [open_checkpoint(n, store.vkey) for n in store.checkpoints()]
    assert [c.size for c in cps] == sorted({c.size for c in cps})
    for old in cps:
        for new in cps:
            if old.size <= new.size:
                verify_consistency(
                    old.size,
                    new.size,
                    old.root_hash,
                    new.root_hash,
                    store.consistency_proof(old.size, new.size),
                )
    latest = cps[-1]
    for i in range(latest.size):
        verify_inclusion(
            leaf_hash(store.entry(i)),
            i,
            latest.size,
            store.inclusion_proof(i, latest.size),
            latest.root_hash,
        )
    with pytest.raises(LedgerError):
        store.inclusion_proof(0, latest.size + 1)


# -- export and tampering ----------------------------------------------------


@pytest.fixture
def bundle(store, tmp_path) -> Path:
    mods = [module_args(site=s) for s in ("st-mary", "st-john", "st-mary")]
    for m in mods:
        store.register_module(**m)
    store.delete_module(mods[1]["module_id"], actor="operator:alice", reason="consent withdrawn")
    store.append(
        make_entry("cert.revoked", "operator:alice", {"serial": "0b", "reason": "keyCompromise"})
    )
    return write_bundle(
        store.snapshot(),
        tmp_path / "bundle",
        ca_cert_pem=_ca_pem(),
        crl_pem=b"-----BEGIN X509 CRL-----\n",
    )


def test_export_writes_a_bundle_that_verifies_offline(bundle, store):
    report = verify_bundle_log(bundle)
    assert report.size == store.size() == 5
    assert report.origin == ORIGIN
    assert [c.size for c in report.checkpoints] == [1, 2, 3, 4, 5]
    lines = (bundle / "entries.jsonl").read_bytes().split(b"\n")[:-1]
    assert lines == store.entries(0, 5)
    assert (bundle / "log.vkey").read_text().strip() == store.vkey
    assert (bundle / "ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert (bundle / "crl.pem").exists()
    mods = sorted((bundle / "modules").iterdir())
    assert len(mods) == 3
    for m in mods:
        rec = canonical.loads(m.read_bytes().rstrip(b"\n"))
        assert set(rec) >= {
            "package",
            "package_b64",
            "manifest_sha256",
            "status",
            "registered_index",
        }
        assert "weights" not in rec
        raw = base64.b64decode(rec["package_b64"])
        assert (
            canonical.dumps(rec["package"])
            == raw
            == store.get_module(rec["module_id"]).package_meta
        )
    statuses = sorted(canonical.loads(m.read_bytes().rstrip(b"\n"))["status"] for m in mods)
    assert statuses == ["active", "active", "deleted"]
    with pytest.raises(ConfigError):
        write_bundle(store.snapshot(), bundle, ca_cert_pem=_ca_pem(), crl_pem=None)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / f"copy-{secrets.token_hex(4)}"
    shutil.copytree(bundle, dst)
    return dst


def _fails(path: Path) -> LedgerError:
    with pytest.raises(LedgerError) as info:
        verify_bundle_log(path)
    assert info.value.message and info.value.hint
    return info.value


@SQLITE_ONLY  # the exporter and the verifier; the backend is not involved
def test_flipping_any_byte_of_any_entry_fails(bundle, tmp_path):
    work = _copy(bundle, tmp_path)
    path = work / "entries.jsonl"
    original = path.read_bytes()
    codes = set()
    for i in range(len(original)):
        bad = bytearray(original)
        bad[i] ^= 0x01
        path.write_bytes(bytes(bad))
        codes.add(_fails(work).code)
    assert codes <= {"E_ENTRY", "E_INCONSISTENT"}
    path.write_bytes(original)
    verify_bundle_log(work)


@SQLITE_ONLY  # the exporter and the verifier; the backend is not involved
def test_flipping_any_byte_of_any_checkpoint_fails(bundle, tmp_path):
    work = _copy(bundle, tmp_path)
    for cp in sorted((work / "checkpoints").iterdir()):
        original = cp.read_bytes()
        for i in range(len(original)):
            bad = bytearray(original)
            bad[i] ^= 0x04
            cp.write_bytes(bytes(bad))
            assert _fails(work).code in {
                "E_CHECKPOINT_FORMAT",
                "E_CHECKPOINT_SIGNATURE",
                "E_INCONSISTENT",
            }
        cp.write_bytes(original)
    verify_bundle_log(work)


@SQLITE_ONLY  # the exporter and the verifier; the backend is not involved
def test_dropping_or_reordering_entries_fails(bundle, tmp_path):
    work = _copy(bundle, tmp_path)
    path = work / "entries.jsonl"
    lines = path.read_bytes().split(b"\n")[:-1]
    for i in range(len(lines)):
        path.write_bytes(b"".join(x + b"\n" for x in lines[:i] + lines[i + 1 :]))
        assert "dropped" in _fails(work).message or "do not hash" in _fails(work).message
    for i, j in [(k, k + 1) for k in range(len(lines) - 1)] + [(0, len(lines) - 1)]:
        swapped = list(lines)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        path.write_bytes(b"".join(x + b"\n" for x in swapped))
        assert "do not hash" in _fails(work).message
    extra = lines + [lines[-1]]
    path.write_bytes(b"".join(x + b"\n" for x in extra))
    assert "after the last signed checkpoint" in _fails(work).message


@SQLITE_ONLY  # the exporter and the verifier; the backend is not involved
def test_checkpoint_from_another_key_or_renamed_fails(bundle, tmp_path):
    work = _copy(bundle, tmp_path)
    (work / "log.vkey").write_text(LogSigner.generate(ORIGIN).vkey + "\n")
    assert _fails(work).code == "E_CHECKPOINT_SIGNATURE"
    work = _copy(bundle, tmp_path)
    cps = sorted((work / "checkpoints").iterdir(), key=lambda p: int(p.name))
    cps[0].rename(work / "checkpoints" / "4")
    assert "tree size" in _fails(work).message


# -- the operator CLI ----------------------------------------------------------


def _cli(*args: str):
    import subprocess
    import sys

    from tests.conftest import cli_env

    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )


def test_ledger_cli_checkpoint_export_verify(store, home, tmp_path):
    import json

    store.register_module(**module_args())
    store.close()
    home.ca_cert.write_bytes(_ca_pem())
    out = _cli("ledger", "checkpoint", "--dir", str(home.root), "--json")
    assert out.returncode == 0, out.stderr
    cp = json.loads(out.stdout)
    assert cp["size"] == 1 and open_checkpoint(cp["note"], cp["vkey"]).size == 1
    out = _cli("ledger", "export", "--dir", str(home.root), "--out", str(tmp_path / "b"))
    assert out.returncode == 0, out.stderr
    out = _cli("ledger", "verify", "--bundle", str(tmp_path / "b"), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["size"] == 1, out.stderr
    out = _cli("ledger", "verify", "--dir", str(home.root))
    assert out.returncode == 0 and out.stdout.startswith("ok: entries 1"), out.stderr
    (tmp_path / "b" / "entries.jsonl").write_bytes(b"{}\n")
    out = _cli("ledger", "verify", "--bundle", str(tmp_path / "b"))
    assert out.returncode == 1 and "error[E_ENTRY]" in out.stderr and "hint:" in out.stderr
    os.chmod(home.kek_key, 0o644)
    out = _cli("ledger", "verify", "--dir", str(home.root))
    assert out.returncode == 1 and "E_KEY_PERMISSIONS" in out.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_files_are_private_and_an_open_home_is_tightened(tmp_path, caplog):
    """store.sqlite and its -wal/-shm are 0600 in a 0700 home, whatever the umask; an old 0755/0644
    home is fixed."""
    home = AggregatorHome.at(tmp_path / "agg")
    old_umask = os.umask(0o022)
    try:
        s = open_home_store(home, origin=ORIGIN, create=True)
        s.register_module(**module_args())  # the write leaves a -wal beside the database
        wal, shm = (home.store_db.with_name(home.store_db.name + x) for x in ("-wal", "-shm"))
        assert wal.exists() and shm.exists()
        files = {home.store_db: 0o600, wal: 0o600, shm: 0o600, home.root: 0o700, home.blobs: 0o700}
        assert {p: _mode(p) for p in files} == files
        s.close()
        # what an earlier release left: a 0755 home and 0644 database files
        for path, mode in ((home.root, 0o755), (home.store_db, 0o644), (wal, 0o644), (shm, 0o644)):
            if path.exists():
                os.chmod(path, mode)
        with caplog.at_level("WARNING", logger="ffsecure.files"):
            s = open_home_store(home)
        s.close()
    finally:
        os.umask(old_umask)
    assert _mode(home.root) == 0o700 and _mode(home.store_db) == 0o600
    assert all(_mode(p) == 0o600 for p in (wal, shm) if p.exists())
    tightened = {
        r.path for r in caplog.records if getattr(r, "event", None) == "permissions_tightened"
    }
    assert {str(home.root), str(home.store_db)} <= tightened
