"""The pieces of monitoring that need no server: listen rules, activity throttling, the textfile."""

from __future__ import annotations

import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.home import AggregatorHome
from aggregator.metrics import parse_listen
from aggregator.site_activity import CONTACT_EVERY_S, SiteActivity
from aggregator.store import open_home_store
from ffsecure.errors import ConfigError, PolicyError
from site_node.config import parse_config
from site_node.state import ModuleRecord, StateDir, refusal
from site_node.textfile import FILE_NAME, CycleOutcome, write_site_textfile


@pytest.mark.parametrize(
    "listen, host, port",
    [("127.0.0.1:9464", "127.0.0.1", 9464), ("localhost:0", "localhost", 0), ("[::1]:9", "::1", 9)],
)
def test_loopback_metrics_addresses_are_accepted(listen, host, port):
    assert parse_listen(listen, allow_non_loopback=False) == (host, port)


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "10.1.2.3:9464", "metrics.example:9464"])
def test_a_non_loopback_metrics_address_needs_the_explicit_setting(listen):
    with pytest.raises(ConfigError) as exc:
        parse_listen(listen, allow_non_loopback=False)
    assert exc.value.code == "E_METRICS_LISTEN" and "allow_non_loopback" in exc.value.hint
    assert parse_listen(listen, allow_non_loopback=True)[1] == 9464


@pytest.mark.parametrize("listen", ["9464", ":9464", "127.0.0.1:http", "127.0.0.1:70000"])
def test_a_malformed_metrics_address_is_refused(listen):
    with pytest.raises(ConfigError) as exc:
        parse_listen(listen, allow_non_loopback=True)
    assert exc.value.code == "E_METRICS_LISTEN"


def test_site_activity_writes_once_a_minute_unless_the_refusal_code_changes(tmp_path):
    home = AggregatorHome.at(tmp_path / "agg")
    now = [1000.0]
    with open_home_store(home, origin="test.example/log", create=True) as store:
        activity = SiteActivity(store, threading.RLock(), clock=lambda: now[0])
        activity.contact("st-mary")
        (row,) = store.list_site_activity()
        assert row.last_refusal_code is None
        first_contact = row.last_contact
        activity.refusal("st-mary", "E_RATE_LIMIT", "UploadModule")  # new code: written at once
        (row,) = store.list_site_activity()
        assert (row.last_refusal_code, row.last_refusal_method) == ("E_RATE_LIMIT", "UploadModule")
        activity.refusal("st-mary", "E_CERT_REVOKED", "GetCheckpoint")
        assert store.list_site_activity()[0].last_refusal_code == "E_CERT_REVOKED"
        activity.refusal("st-mary", "E_CERT_REVOKED", "GetCheckpoint")  # same code: throttled
        activity.contact("st-mary")
        stamp = store.list_site_activity()[0].last_refusal_time
        now[0] += CONTACT_EVERY_S
        activity.contact("st-mary")
        (row,) = store.list_site_activity()
        assert row.last_contact >= first_contact and row.last_refusal_time == stamp
        activity.contact("not a site id")  # logged, never raised, never written
        assert [r.site_id for r in store.list_site_activity()] == ["st-mary"]


def _site(tmp_path, textfile: bool = True):
    extra = f'[monitoring]\ntextfile_dir = "{tmp_path / "tf"}"\n' if textfile else ""
    text = f'[site]\nfederation_id = "f"\nsite_id = "st-mary"\n[data]\nsource = "digits"\n{extra}'
    (tmp_path / "tf").mkdir(exist_ok=True)
    cfg = parse_config(text, tmp_path / "site.toml")
    StateDir(cfg.state_dir).ensure()
    return cfg


def _samples(path):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(path.read_text())
        for s in f.samples
    }


def test_textfile_names_the_newest_refusal_and_keeps_the_last_success(tmp_path):
    cfg = _site(tmp_path)
    state = StateDir(cfg.state_dir)
    path = write_site_textfile(cfg, CycleOutcome(ok=True))
    assert path == tmp_path / "tf" / FILE_NAME
    ok = _samples(path)
    success = ok[("ffsecure_site_last_success_timestamp_seconds", (("site", "st-mary"),))]
    for i, code in enumerate(["E_POLICY", "E_PRIVACY_POLICY"]):
        record = ModuleRecord(f"{i:032x}", "refused", "2026-01-01T00:00:00Z", [0], 10, "fp")
        record.error = {**refusal(PolicyError("no", code=code), by="site")}
        record.error["time"] = f"2026-01-0{i + 1}T00:00:00Z"  # the second is the newer
        state.save_module(record)
    failed = _samples(write_site_textfile(cfg, CycleOutcome(ok=False)))
    mary = ("site", "st-mary")
    assert failed[("ffsecure_site_last_cycle_success", (mary,))] == 0
    assert failed[("ffsecure_site_last_success_timestamp_seconds", (mary,))] == success
    refusal_key = (
        "ffsecure_site_last_refusal_info",
        (("by", "site"), ("code", "E_PRIVACY_POLICY"), mary),
    )
    assert failed[refusal_key] == 1
    assert failed[("ffsecure_site_modules_registered", (mary,))] == 0
    assert all(dict(labels).get("site") == "st-mary" for _, labels in failed)


def test_no_textfile_without_a_textfile_dir(tmp_path):
    cfg = _site(tmp_path, textfile=False)
    assert write_site_textfile(cfg, CycleOutcome(ok=True)) is None
    assert list((tmp_path / "tf").iterdir()) == []
