"""The site state directory: layout, module records, the lock; which failures the daemon retries."""

from __future__ import annotations

import stat

import pytest

from ffsecure.errors import FFSecureError, NotFoundError
from site_node.client import refusal
from site_node.daemon import is_transient
from site_node.state import ModuleRecord, StateDir, StateError, StateLockedError
from site_node.training import TrainingStopped

MID = "0123456789abcdef0123456789abcdef"


def test_layout_is_private_and_records_round_trip(tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    for d in (state.root, state.keys_dir, state.modules_dir, state.classifiers_dir):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    rec = ModuleRecord(
        module_id=MID,
        status="trained",
        created_at="2026-11-23T12:00:00Z",
        classes=[0, 2],
        n_train=10,
        data_fingerprint="ab" * 32,
        train={"epochs": 1, "dp": None},
    )
    state.save_module(rec)
    assert state.load_module(MID) == rec
    rec.status, rec.upload_id = "sealed", "cd" * 16
    state.save_module(rec)
    assert [r.status for r in state.modules()] == ["sealed"]
    with pytest.raises(NotFoundError):
        state.load_module("f" * 32)
    with pytest.raises(FFSecureError) as err:  # an id can never be a path
        state.module_dir("../../etc")
    assert err.value.code == "E_MODULE_ID"
    with pytest.raises(ValueError):
        state.save_module(ModuleRecord(MID, "lost", "2026-11-23T12:00:00Z", [0], 1, "x"))


def test_lock_refuses_a_second_command(tmp_path):
    state = StateDir(tmp_path / "state")
    with state.locked():
        with pytest.raises(StateError) as err, StateDir(tmp_path / "state").locked():
            pass
        assert err.value.code == "E_STATE_LOCKED"
    with state.locked():  # released
        pass


def test_not_installed_says_what_to_run(tmp_path):
    with pytest.raises(StateError) as err:
        StateDir(tmp_path / "state").ensure().require_installed()
    assert err.value.code == "E_NOT_INSTALLED" and "install-cert" in err.value.hint


@pytest.mark.parametrize(
    "code, transient",
    [
        ("E_RPC_UNAVAILABLE", True),
        ("E_RPC_DEADLINE_EXCEEDED", True),
        ("E_RATE_LIMIT", True),
        ("E_UPLOAD_BUSY", True),
        ("E_DP_ACCOUNTING_TIMEOUT", True),
        ("E_SIGNATURE", False),
        ("E_POLICY_DP", False),
        ("E_IMPERSONATION", False),
    ],
)
def test_daemon_retries_only_transient_failures(code, transient):
    # the failure as the site's client reads it from the aggregator's trailing metadata
    assert is_transient(refusal(code, "x")) is transient


def test_a_held_lock_and_a_stopped_training_are_transient_local_failures(tmp_path):
    state = StateDir(tmp_path / "state")
    with state.locked(), pytest.raises(StateLockedError) as err, state.locked():
        pass
    assert is_transient(err.value) and err.value.code == "E_STATE_LOCKED"
    assert is_transient(TrainingStopped("stopped")) and TrainingStopped.code == "E_STOPPED"
    assert not is_transient(StateError("missing", code="E_NOT_INSTALLED"))


def test_daemon_refuses_to_start_on_a_node_that_is_not_installed(tmp_path):
    from site_node.config import parse_config
    from site_node.daemon import EXIT_ERROR, Daemon

    cfg = parse_config(
        '[site]\nfederation_id = "f"\nsite_id = "s"\n[data]\nsource = "digits"\n',
        tmp_path / "site.toml",
    )
    assert Daemon(cfg, max_cycles=1).run() == EXIT_ERROR
    assert not (tmp_path / "state" / "modules").exists() or not any(
        (tmp_path / "state" / "modules").iterdir()
    )


def test_systemd_unit_matches_the_daemon(repo_root):
    """deploy/systemd/site-node.service runs `site-node run`, stops it with SIGTERM, reloads with
    SIGHUP, and does not restart into an alarm (the daemon's EXIT_ALARM)."""
    import configparser

    from site_node.cli import COMMANDS
    from site_node.daemon import EXIT_ALARM

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((repo_root / "deploy" / "systemd" / "site-node.service").read_text())
    svc = unit["Service"]
    argv = svc["ExecStart"].split()
    assert argv[0].endswith("/site-node") and argv[1] == "run" and argv[1] in COMMANDS
    assert argv[2] == "--config" and argv[3].endswith(".toml")
    assert svc["KillSignal"] == "SIGTERM" and "-HUP" in svc["ExecReload"]
    assert svc["RestartPreventExitStatus"].split() == [str(EXIT_ALARM)]
    assert svc["UMask"] == "0077" and svc["StateDirectoryMode"] == "0700"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
