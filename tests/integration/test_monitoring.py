"""Monitoring against real processes: serve's Prometheus endpoint, the site's textfile, status.

A real ``aggregator serve`` (mTLS on loopback, SQLite store) runs with
``[metrics] listen = "127.0.0.1:0"``. A site registers a module with a real
``site-node run --once`` (tiny cvae on scikit-learn's digits), which also
writes its node-exporter textfile; another site's upload is refused
(a package naming another site) and a third upload hits the upload rate limit.
The endpoint is scraped over HTTP and parsed with prometheus_client's own
parser; after serve stops, ``aggregator status`` shows the refusal per site.
The same gauges and per-site section are checked once more against a home
whose ``[store]`` is a real PostgreSQL server (tests/pg_fixture.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.store import open_home_store
from site_node.client import AggregatorError, RetryPolicy
from tests.conftest import REPO, cli_env
from tests.faults.aggregator_proc import AggregatorProcess, free_port, pin_port
from tests.federation_fixture import START_ENTRIES, build_federation
from tests.integration.test_site_node import (
    DIGITS,
    aggregator_json,
    setup_site_in_process,
    site_node,
    write_site_config,
)
from tests.pg_fixture import use_postgres

P = "ffsecure_aggregator_"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition text, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return samples(resp.read().decode())


def listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on (its socket inodes matched against /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def aggregator(*args, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *map(str, args)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def fed(tmp_path):
    return build_federation(
        tmp_path / "fed",
        labels=DIGITS,
        sites=("st-john",),
        chunk_bytes=16 * 1024,
        commit_every_bytes=16 * 1024,
        uploads_per_minute=0.01,  # each site: its burst, then nothing for 100 s
        upload_burst=1,
    )


def test_serve_metrics_site_textfile_and_status_show_accepted_and_refused_uploads(fed, tmp_path):
    with fed.config_path.open("a") as f:
        f.write('\n[metrics]\nlisten = "127.0.0.1:0"\n')
    address = pin_port(fed.config_path, free_port())
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    cfg = write_site_config(
        tmp_path,
        "st-mary",
        address,
        [0, 1],
        extra=f'\n[monitoring]\ntextfile_dir = "{textfiles}"\n',
    )
    setup_site_in_process(fed, cfg, train=False)
    with AggregatorProcess(fed.config_path, tmp_path / "serve.log") as agg:
        port = int((fed.home.root / "metrics.port").read_text())
        before = scrape(port)
        assert before[(P + "ledger_size", frozenset())] == START_ENTRIES
        assert before[(P + "modules_active", frozenset())] == 0

        site_node("run", "--config", cfg, "--once")  # trains, uploads: accepted

        retry = RetryPolicy(max_attempts=1)
        sealed, pkg = fed.make_package("st-john", manifest_site="st-mary")
        with fed.client("st-john", address, retry=retry) as c:
            with pytest.raises(AggregatorError) as refused:
                c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-john")
            sealed2, pkg2 = fed.make_package("st-john", seed=1)
            with pytest.raises(AggregatorError) as limited:
                c.upload(sealed2, module_id=pkg2.manifest.module_id, site_id="st-john")
        assert limited.value.code == "E_RATE_LIMIT"
        code = refused.value.code
        assert code not in ("E_RATE_LIMIT", "E_AGGREGATOR") and code.startswith("E_")

        after = scrape(port)
        assert after[(P + "uploads_accepted_total", frozenset({("site", "st-mary")}))] == 1
        john = {("site", "st-john")}
        assert after[(P + "uploads_refused_total", frozenset(john | {("code", code)}))] == 1
        assert after[(P + "uploads_refused_total", frozenset(john | {("code", "E_RATE_LIMIT")}))]
        assert after[(P + "rate_limited_total", frozenset(john | {("limit", "uploads")}))] == 1
        assert after[(P + "upload_bytes_received_total", frozenset())] >= len(sealed)
        assert after[(P + "ledger_size", frozenset())] == START_ENTRIES + 1  # + module.registered
        assert after[(P + "modules_active", frozenset())] == 1
        reg = (P + "site_last_registration_timestamp_seconds", frozenset({("site", "st-mary")}))
        assert after[reg] > 0
        for gauge in ("certificate_days_left", "ca_days_left", "crl_days_left"):
            assert 0 < after[(P + gauge, frozenset())] < 3700, gauge
        assert 0 <= after[(P + "crl_age_seconds", frozenset())] < 3600
        assert listening_ports(agg.proc.pid) == {int(address.rsplit(":", 1)[1]), port}
        assert agg.stop() == 0
    assert not (fed.home.root / "metrics.port").exists()

    site_file = samples((textfiles / "ffsecure_site.prom").read_text())
    mary = frozenset({("site", "st-mary")})
    assert site_file[("ffsecure_site_modules_registered", mary)] == 1
    assert site_file[("ffsecure_site_last_cycle_success", mary)] == 1
    cycle = site_file[("ffsecure_site_last_cycle_timestamp_seconds", mary)]
    assert site_file[("ffsecure_site_last_success_timestamp_seconds", mary)] == cycle
    for gauge in ("certificate", "ca", "crl"):
        assert site_file[(f"ffsecure_site_{gauge}_days_left", mary)] > 0, gauge
    assert not any(name == "ffsecure_site_last_refusal_info" for name, _ in site_file)
    assert oct((textfiles / "ffsecure_site.prom").stat().st_mode & 0o777) == "0o644"

    status = aggregator_json("status", "--dir", fed.home.root)
    sites = {s["site_id"]: s for s in status["sites"]}
    assert sites["st-mary"]["modules"] == {"active": 1, "deleted": 0}
    assert sites["st-mary"]["last_refusal"] is None and sites["st-mary"]["last_contact"]
    john_status = sites["st-john"]
    assert john_status["modules"] == {"active": 0, "deleted": 0}
    assert john_status["last_refusal"]["code"] == "E_RATE_LIMIT"  # the newest refusal
    assert john_status["last_refusal"]["method"] == "UploadModule"
    assert [e["what"] for e in status["expiry"]] == [
        "aggregator certificate",
        "CA certificate",
        "CRL",
    ]
    assert all(e["state"] in ("ok", "warn") and e["days_left"] > 0 for e in status["expiry"])
    text = aggregator("status", "--config", fed.config_path)  # the older spelling: same home
    assert text.returncode == 0, text.stderr
    assert "st-john: last contact " in text.stdout
    assert "last refusal: E_RATE_LIMIT (UploadModule) at " in text.stdout
    assert "CRL: expires " in text.stdout


def test_metrics_are_off_by_default_and_a_non_loopback_bind_is_refused(fed, tmp_path):
    address = pin_port(fed.config_path, free_port())
    with AggregatorProcess(fed.config_path, tmp_path / "serve.log") as agg:
        assert listening_ports(agg.proc.pid) == {int(address.rsplit(":", 1)[1])}
        assert not (fed.home.root / "metrics.port").exists()
        agg.proc.send_signal(signal.SIGTERM)
        assert agg.proc.wait(timeout=60) == 0

    proc = aggregator("serve", "--dir", fed.home.root, "--metrics-listen", f"0.0.0.0:{free_port()}")
    assert proc.returncode == 1
    assert "error[E_METRICS_LISTEN]" in proc.stderr and "not a loopback address" in proc.stderr
    assert "allow_non_loopback" in proc.stderr
    assert not (fed.home.root / "serve.port").exists()  # nothing served


@pytest.mark.parametrize("program", ["ffsecure", "site_node", "aggregator"])
def test_a_bogus_log_level_is_a_usage_error_listing_the_levels(program):
    proc = subprocess.run(
        [sys.executable, "-m", program, "--log-level", "bogus", "status"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "'bogus' is not one of 'debug', 'info', 'warning', 'error', 'critical'" in proc.stderr


def test_status_takes_dir_or_the_older_config_spelling_and_refuses_two_homes(fed, tmp_path):
    open_home_store(fed.home).close()  # what serve creates at its first start
    by_config = aggregator("status", "--config", fed.config_path, "--json")  # --dir: above
    assert by_config.returncode == 0, by_config.stderr
    assert json.loads(by_config.stdout)["federation_id"] == "fedtest"
    other = tmp_path / "other"
    other.mkdir()
    both = aggregator("status", "--dir", other, "--config", fed.config_path)
    assert both.returncode == 2 and "name different homes" in both.stderr
    neither = aggregator("status")
    assert neither.returncode == 2 and "give --dir DIR" in neither.stderr


def test_gauges_and_the_per_site_status_read_a_postgres_store(tmp_path, pg_dsn):
    fed = build_federation(tmp_path / "fed", sites=("st-mary", "st-john"))
    use_postgres(fed.config_path, pg_dsn)
    with fed.config_path.open("a") as f:
        f.write('\n[metrics]\nlisten = "127.0.0.1:0"\n')
    address = pin_port(fed.config_path, free_port())
    with AggregatorProcess(fed.config_path, tmp_path / "serve.log") as agg:
        port = int((fed.home.root / "metrics.port").read_text())
        before = scrape(port)
        assert before[(P + "ledger_size", frozenset())] == START_ENTRIES
        assert before[(P + "modules_active", frozenset())] == 0
        retry = RetryPolicy(max_attempts=1)
        sealed, pkg = fed.make_package("st-mary")
        with fed.client("st-mary", address, retry=retry) as c:
            c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
        forged, pkg2 = fed.make_package("st-john", manifest_site="st-mary")
        with (
            fed.client("st-john", address, retry=retry) as c,
            pytest.raises(AggregatorError) as refused,
        ):
            c.upload(forged, module_id=pkg2.manifest.module_id, site_id="st-john")
        after = scrape(port)
        assert after[(P + "ledger_size", frozenset())] == START_ENTRIES + 1  # + module.registered
        assert after[(P + "modules_active", frozenset())] == 1
        assert after[(P + "modules_deleted", frozenset())] == 0
        reg = (P + "site_last_registration_timestamp_seconds", frozenset({("site", "st-mary")}))
        assert after[reg] > 0
        assert agg.stop() == 0
    assert not fed.home.store_db.exists()  # everything went to PostgreSQL
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT site_id, last_refusal_code FROM site_activity ORDER BY 1")
        assert rows.fetchall() == [("st-john", refused.value.code), ("st-mary", None)]

    status = aggregator_json("status", "--dir", fed.home.root)
    sites = {s["site_id"]: s for s in status["sites"]}
    assert sites["st-mary"]["modules"] == {"active": 1, "deleted": 0}
    assert sites["st-mary"]["last_contact"] and sites["st-mary"]["last_refusal"] is None
    assert sites["st-john"]["modules"] == {"active": 0, "deleted": 0}
    assert sites["st-john"]["last_refusal"]["code"] == refused.value.code
    assert sites["st-john"]["last_refusal"]["method"] == "UploadModule"
    assert status["ledger"]["size"] == START_ENTRIES + 1
