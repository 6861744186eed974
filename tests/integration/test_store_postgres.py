"""What only the PostgreSQL store has: a DSN (TLS settings passed to libpq, a password never
shown), a schema made once by whichever server starts first, and appends that several
processes serialize on the log's advisory lock without ever giving one index two entries."""

from __future__ import annotations

import secrets
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from aggregator.config import parse_config
from aggregator.home import LogSigner
from aggregator.store import PostgresStore, open_store
from aggregator.store.postgres import TABLES, redact_dsn
from ffsecure.errors import StoreError
from ffsecure.ledger import make_entry
from tests.integration.test_store import module_args

ORIGIN = "ffsecure.local/pg/log"


def _refuses_tls(listener: socket.socket) -> None:
    """Answer one client's SSLRequest with 'N' (no TLS here), as a non-TLS server does."""
    conn, _ = listener.accept()
    with conn:
        conn.recv(8)
        conn.sendall(b"N")
        conn.recv(1024)


def test_the_configured_sslmode_reaches_libpq_and_the_password_is_never_shown(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threading.Thread(target=_refuses_tls, args=(listener,), daemon=True).start()
    (tmp_path / "db-ca.pem").write_text("unused: the server refuses TLS first\n")
    dsn = (
        f"host=127.0.0.1 port={port} dbname=ffs user=agg password=s3cret "
        f"sslmode=verify-full sslrootcert={tmp_path / 'db-ca.pem'} connect_timeout=10"
    )
    cfg = parse_config(f'[store]\nbackend = "postgres"\ndsn = "{dsn}"\n', home=tmp_path)
    signer = LogSigner.generate(ORIGIN)
    with pytest.raises(StoreError) as info:
        open_store(cfg, origin=ORIGIN, kek=secrets.token_bytes(32), log_signer=signer)
    listener.close()
    assert info.value.code == "E_STORE_CONNECT" and info.value.hint
    assert "SSL" in info.value.message  # verify-full refused a server without TLS
    assert "s3cret" not in info.value.message and "password=***" in info.value.message
    assert "s3cret" not in redact_dsn("postgresql://agg:s3cret@db/ffs")


def _open(dsn: str, kek: bytes, signer: LogSigner) -> PostgresStore:
    return PostgresStore.open(dsn, origin=ORIGIN, kek=kek, log_signer=signer)


def test_servers_starting_together_make_the_schema_once_and_never_fork_the_log(pg_dsn):
    kek, signer = secrets.token_bytes(32), LogSigner.generate(ORIGIN)
    with ThreadPoolExecutor(4) as pool:  # four connections, as four serve processes would hold
        stores = list(pool.map(lambda _: _open(pg_dsn, kek, signer), range(4)))

    def write(store: PostgresStore, n: int) -> list[int]:
        indices = []
        for i in range(n):
            if i % 2:
                indices.append(store.register_module(**module_args(site="st-mary")).index)
            else:
                revoked = {"serial": secrets.token_hex(4), "reason": "t"}
                indices.append(store.append(make_entry("cert.revoked", "operator:o", revoked))[0])
        return indices

    with ThreadPoolExecutor(4) as pool:
        acked = [i for got in pool.map(write, stores, [12] * 4) for i in got]
    assert sorted(acked) == list(range(48)), "two writers were given the same index"
    summary = stores[0].verify_integrity()
    assert summary["entries"] == 48 and summary["modules"] == 24
    for store in stores:
        store.close()
    with psycopg.connect(pg_dsn) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables == set(TABLES)
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("pg-2",)
        # The primary key refuses a second entry at an index, whatever a writer did.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO entries(idx, type, data) VALUES (3, 'x', 'x')")
