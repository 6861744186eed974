"""`site-node` as real processes against a real `aggregator serve` (loopback, mTLS, TLS 1.3).

Every site step is a `python -m site_node ...` process; the CA signs each CSR with
`ffsecure pki sign-csr`. Data: scikit-learn's digits (shipped, no download), each
site keeping some classes; generator: the federation's tiny cvae, one epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ffsecure import pki
from ffsecure.ledger import validate_entry
from tests.conftest import cli_env
from tests.federation_fixture import START_ENTRIES, build_federation

REPO = Path(__file__).resolve().parents[2]
DIGITS = [str(i) for i in range(10)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Aggregator:
    """`aggregator serve` on a fixed loopback port, so sites find it again after a restart."""

    def __init__(self, fed, port: int):
        self.fed, self.port = fed, port
        text = fed.config_path.read_text()
        fed.config_path.write_text(
            text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
        )
        self.address = f"127.0.0.1:{port}"
        self.proc = None
        self.logs: list[Path] = []

    def start(self) -> Aggregator:
        port_file = self.fed.home.root / "serve.port"
        port_file.unlink(missing_ok=True)
        log_path = self.fed.root / f"serve-{len(self.logs)}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aggregator",
                    "serve",
                    "--config",
                    str(self.fed.config_path),
                ],
                cwd=REPO,
                env=cli_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"aggregator serve did not start:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.05)
        return self

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        self.proc = None
        return rc


def site_node(*args, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "site_node", *map(str, args)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"site-node {args[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def site_json(*args, **kw) -> dict:
    return json.loads(site_node(*args, "--json", **kw).stdout)


def write_site_config(
    root: Path, site_id: str, address: str, classes, *, extra: str = "", attempts: int = 40
) -> Path:
    d = root / site_id
    d.mkdir(parents=True, exist_ok=True)
    path = d / "site.toml"
    path.write_text(f"""\
[site]
federation_id = "fedtest"
site_id = "{site_id}"
state_dir = "state"

[aggregator]
endpoint = "{address}"
server_name = "localhost"
max_attempts = {attempts}
base_delay_s = 0.2
max_delay_s = 1.0
{extra}
[data]
source = "digits"
classes = {json.dumps(list(classes))}

[train]
size = "tiny"
epochs = 1
threads = 1

[daemon]
poll_interval_s = 0.5
retry_interval_s = 0.5
""")
    return path


def enroll_and_install(fed, root: Path, site_id: str, cfg: Path) -> None:
    """enroll (key + CSR) -> CA signs with `ffsecure pki sign-csr` -> install-cert."""
    out = site_json("enroll", "--config", cfg)
    key = Path(out["key"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = root / site_id / "site.pem"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ffsecure",
            "pki",
            "sign-csr",
            out["csr"],
            "--ca-dir",
            fed.ca.directory,
            "--out",
            cert,
            "--site-id",
            site_id,
        ],
        cwd=REPO,
        env=cli_env(),
        check=True,
        capture_output=True,
    )
    info = site_json(
        "install-cert",
        "--config",
        cfg,
        "--cert",
        cert,
        "--ca",
        fed.home.ca_cert,
        "--federation",
        fed.home.federation,
    )
    assert info["identity"] == f"ffsecure://fedtest/site/{site_id}"


class InProcessAggregator:
    """The same server in the test process (cheap restarts) on a fixed port."""

    def __init__(self, fed, port: int):
        self.fed = fed
        text = fed.config_path.read_text()
        fed.config_path.write_text(
            text.replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
        )
        self.address = f"127.0.0.1:{port}"
        self.running = None

    def start(self) -> InProcessAggregator:
        from aggregator.config import load_config
        from aggregator.server import start

        self.running = start(load_config(self.fed.config_path))
        return self

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop(grace=1.0)
            self.running = None


def setup_site_in_process(fed, cfg_path: Path, *, train: bool = True):
    """enroll + CA signature + install-cert + train through the library (the step under test runs as
    a process)."""
    import torch

    from site_node import trust as trustlib
    from site_node.config import load_config
    from site_node.state import StateDir
    from site_node.training import train_module

    torch.set_num_threads(1)
    cfg = load_config(cfg_path)
    StateDir(cfg.state_dir).ensure()
    csr = pki.make_key_and_csr(cfg.key_path, federation_id=cfg.federation_id, site_id=cfg.site_id)
    cert_file = cfg_path.parent / "site.pem"
    cert_file.write_bytes(pki.cert_pem(fed.ca.sign_csr(csr, role="site", site_id=cfg.site_id)))
    t = trustlib.install(
        cfg, cert_file=cert_file, ca_file=fed.home.ca_cert, federation_file=fed.home.federation
    )
    record = train_module(cfg, t) if train else None
    return cfg, t, record


def upload_in_process(cfg, t) -> None:
    from site_node import sync
    from site_node import trust as trustlib
    from site_node.state import StateDir

    state = StateDir(cfg.state_dir)
    with trustlib.make_client(cfg, t) as client:
        for record in sync.pending(state):
            sync.upload_module(state, client, t, record, limits=cfg.dp_limits)


def aggregator_json(*args) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", *map(str, args), "--json"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"aggregator {args[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return json.loads(proc.stdout)


def ledger_entries(fed, address: str) -> list[dict]:
    """Every entry of the aggregator's log, read over mTLS with a fresh test site's credentials."""
    if "auditor-site" not in fed.sites:
        fed.add_site("auditor-site")
    with fed.client("auditor-site", address) as c:
        _, size = c.get_checkpoint()
        return [validate_entry(c.get_inclusion_proof(i, size)[1]) for i in range(size)]


@pytest.fixture
def fed(tmp_path):
    return build_federation(
        tmp_path / "fed",
        labels=DIGITS,
        sites=(),
        chunk_bytes=16 * 1024,
        commit_every_bytes=16 * 1024,
    )


def test_two_sites_enroll_train_upload_status_forget(fed, tmp_path):
    agg = Aggregator(fed, free_port()).start()
    try:
        sites = {"st-a": [0, 1, 2, 3, 4], "st-b": [5, 6, 7, 8, 9]}
        cfgs = {s: write_site_config(tmp_path, s, agg.address, c) for s, c in sites.items()}
        modules = {}
        for s, cfg in cfgs.items():
            enroll_and_install(fed, tmp_path, s, cfg)
            trained = site_json("train", "--config", cfg)
            assert trained["classes"] == sites[s] and trained["epsilon"] is None
            up = site_json("upload", "--config", cfg)["uploaded"]
            assert (
                len(up) == 1
                and up[0]["receipt_verified"]
                and up[0]["module_id"] == trained["module_id"]
            )
            modules[s] = trained["module_id"]
            record = json.loads(
                (tmp_path / s / "state" / "modules" / modules[s] / "module.json").read_text()
            )
            assert record["status"] == "registered" and record["receipt"]["module_id"] == modules[s]
            assert not (tmp_path / s / "state" / "modules" / modules[s] / "sealed.bin").exists()
        status = site_json("status", "--config", cfgs["st-a"])
        # the aggregator's entries of its start, then the two modules
        assert status["consistent"] and status["checkpoint"]["size"] == START_ENTRIES + 2
        assert status["checkpoint"]["stored_size"] == START_ENTRIES + 1  # its own receipt's tree
        assert [(m["module_id"], m["status"], m["included"]) for m in status["modules"]] == [
            (modules["st-a"], "registered", True)
        ]

        # a site cannot delete another site's module
        refused = site_node(
            "forget",
            "--config",
            cfgs["st-a"],
            "--module",
            modules["st-b"],
            "--reason",
            "x",
            "--yes",
            "--json",
            check=False,
        )
        assert (
            refused.returncode == 1
            and json.loads(refused.stderr.strip().splitlines()[-1])["error"]["code"]
            == "E_NOT_OWNER"
        )

        gone = site_json(
            "forget",
            "--config",
            cfgs["st-a"],
            "--module",
            modules["st-a"],
            "--reason",
            "consent withdrawn",
            "--yes",
        )
        types = [e["type"] for e in gone["entries"]]
        assert gone["verified"] and types[:2] == ["module.deletion_requested", "module.deleted"]
        assert types[2:] == []  # nothing was synthesized from it yet
        entries = ledger_entries(fed, agg.address)
        assert [
            e["facts"]["module_id"] for e in entries if e["type"] == "module.deletion_requested"
        ] == [modules["st-a"]]
        registered = [e["facts"]["module_id"] for e in entries if e["type"] == "module.registered"]
        deleted = [e["facts"]["module_id"] for e in entries if e["type"] == "module.deleted"]
        assert sorted(registered) == sorted(modules.values()) and deleted == [modules["st-a"]]
        after = site_json("status", "--config", cfgs["st-a"])
        assert after["modules"][0]["status"] == "deleted"
        assert after["checkpoint"]["size"] >= START_ENTRIES + 3
        # st-b's stored checkpoint (from its receipt, the second module) is a prefix of today's log
        b = site_json("status", "--config", cfgs["st-b"])
        assert b["checkpoint"]["stored_size"] == START_ENTRIES + 2 and b["modules"][0]["included"]
    finally:
        assert agg.stop() == 0


def test_upload_resumes_after_aggregator_is_killed_without_a_duplicate(fed, tmp_path):
    agg = Aggregator(fed, free_port()).start()
    try:
        # 24 KiB/s and 4 KiB chunks: the tiny module takes several seconds to stream
        cfg = write_site_config(
            tmp_path,
            "st-a",
            agg.address,
            [0, 1, 2],
            extra="chunk_bytes = 4096\nmax_upload_bytes_per_s = 24576\n",
            attempts=120,
        )
        module_id = setup_site_in_process(fed, cfg)[2].module_id
        upload = subprocess.Popen(
            [sys.executable, "-m", "site_node", "upload", "--config", str(cfg), "--json"],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        staging = fed.home.root / "uploads" / "st-a"
        deadline = time.monotonic() + 60
        committed = 0
        while committed == 0:  # wait until the aggregator has fsynced part of the upload
            assert time.monotonic() < deadline and upload.poll() is None, (
                "upload never started streaming"
            )
            for state_file in staging.glob("*/state.json") if staging.exists() else []:
                with contextlib.suppress(json.JSONDecodeError, OSError, KeyError):
                    committed = json.loads(state_file.read_text())["committed_offset"]
            time.sleep(0.05)
        assert agg.stop(signal.SIGKILL) == -signal.SIGKILL
        time.sleep(1.0)  # the site now retries against a dead port
        agg.start()
        out, err = upload.communicate(timeout=180)
        assert upload.returncode == 0, err
        result = json.loads(out)["uploaded"][0]
        assert (
            result["module_id"] == module_id
            and result["receipt_verified"]
            and not result["existing"]
        )
        assert result["attempts"] >= 2 and max(result["resumed_from"]) > 0, result
        entries = ledger_entries(fed, agg.address)
        assert [e["facts"]["module_id"] for e in entries if e["type"] == "module.registered"] == [
            module_id
        ]
        # re-running upload neither re-sends nor duplicates
        assert site_json("upload", "--config", cfg)["uploaded"] == []
        entries = ledger_entries(fed, agg.address)
        assert [e["type"] for e in entries] == [
            "federation.loaded",
            "crl.loaded",
            "module.registered",
        ]
    finally:
        agg.stop()


@pytest.mark.parametrize(
    "forged_size",
    [
        pytest.param(1, marks=pytest.mark.slow, id="shorter"),
        pytest.param(2, id="same-size"),
        pytest.param(3, marks=pytest.mark.slow, id="longer"),
    ],
)
def test_status_raises_the_alarm_when_the_aggregator_rewrites_its_log(fed, tmp_path, forged_size):
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1])
        site_cfg, t, _ = setup_site_in_process(fed, cfg)
        upload_in_process(site_cfg, t)
        fed.add_site("st-x")
        honest = START_ENTRIES + 2  # one more entry: the stored tree has this size
        with fed.client("st-x", agg.address) as c:
            sealed, pkg = fed.make_package("st-x", classes=[3])
            c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-x")
        assert site_json("status", "--config", cfg)["checkpoint"]["size"] == honest  # exit 0
        agg.stop()

        # The operator swaps in another history signed by the same log key: a fresh store
        # holding other modules, shorter than, as long as, or longer than what the site saw.
        for p in fed.home.root.glob("store.sqlite*"):
            p.unlink()
        for p in (fed.home.root / "blobs").glob("*"):
            p.unlink()
        agg.start()
        with fed.client("st-x", agg.address) as c:
            for k in range(forged_size):
                sealed, pkg = fed.make_package("st-x", classes=[k])
                c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-x")
            assert c.get_checkpoint()[1] == forged_size + START_ENTRIES  # after its start's
        proc = site_node("status", "--config", cfg, "--json", check=False)
        assert proc.returncode == 3, (proc.stdout, proc.stderr)
        error = json.loads(proc.stderr.strip().splitlines()[-1])["error"]
        assert error["code"] == "E_LOG_FORK" and "ALARM" in error["hint"]
        # the evidence is kept: the stored checkpoint still says the honest size
        assert f"\n{honest}\n" in (tmp_path / "st-a" / "state" / "checkpoint.note").read_text()
    finally:
        agg.stop()


def test_status_tells_a_damaged_local_receipt_from_a_rewritten_log(fed, tmp_path):
    import base64

    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1])
        site_cfg, t, record = setup_site_in_process(fed, cfg)
        upload_in_process(site_cfg, t)
        assert site_json("status", "--config", cfg)["modules"][0]["included"] is True
        path = tmp_path / "st-a" / "state" / "modules" / record.module_id / "module.json"
        good = path.read_text()

        def status_error(text: str) -> dict:
            path.write_text(text)
            proc = site_node("status", "--config", cfg, "--json", check=False)
            assert proc.returncode == 1, (proc.stdout, proc.stderr)
            return json.loads(proc.stderr.strip().splitlines()[-1])["error"]

        # an entry that still decodes, but not to what the log signed: the file changed here, the
        # log did not
        rec = json.loads(good)
        entry = base64.b64decode(rec["receipt"]["entry"])
        rec["receipt"]["entry"] = base64.b64encode(
            entry.replace(b"module.registered", b"module.registerex")
        ).decode()
        error = status_error(json.dumps(rec))
        assert error["code"] == "E_STATE_CORRUPT", error
        assert f"stored receipt of module {record.module_id}" in error["message"]
        assert "no longer verifies against its own signed checkpoint" in error["message"]
        assert "backup" in error["hint"] and "ALARM" not in error["hint"]
        # a character outside the alphabet is refused, not skipped by a lenient decoder
        rec["receipt"]["entry"] = "!" + json.loads(good)["receipt"]["entry"]
        error = status_error(json.dumps(rec))
        assert (
            error["code"] == "E_STATE_CORRUPT"
            and "entry is not canonical base64" in error["message"]
        )
        # a record that is not JSON at all names its file
        error = status_error(good[: len(good) // 2])
        assert error["code"] == "E_STATE_CORRUPT" and str(path) in error["message"]
        # restored from backup, status checks it against the log again
        path.write_text(good)
        assert site_json("status", "--config", cfg)["modules"][0]["included"] is True
    finally:
        agg.stop()


def test_daemon_trains_on_new_data_survives_downtime_and_stops_on_sigterm(fed, tmp_path):
    agg = InProcessAggregator(
        fed, free_port()
    )  # not started: the daemon first meets a dead aggregator
    cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1, 2], attempts=2)
    setup_site_in_process(fed, cfg, train=False)
    state = tmp_path / "st-a" / "state"
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "site_node", "run", "--config", str(cfg)],
            cwd=REPO,
            env=cli_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def events() -> list[dict]:
        return [
            json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
        ]

    def wait_for(pred, what: str, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while not pred():
            assert daemon.poll() is None, (
                f"daemon exited {daemon.returncode}:\n{log_path.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}:\n{log_path.read_text()[-3000:]}"
            )
            time.sleep(0.2)

    def statuses() -> list[str]:
        return [
            json.loads(p.read_text())["status"] for p in sorted(state.glob("modules/*/module.json"))
        ]

    try:
        wait_for(
            lambda: any(e.get("event") == "upload_deferred" for e in events()), "a deferred upload"
        )
        assert statuses() == ["sealed"]
        agg.start()
        wait_for(lambda: statuses() == ["registered"], "the upload after the aggregator came up")
        (state / "train.now").touch()  # asked to train again
        wait_for(lambda: sorted(statuses()) == ["registered", "registered"], "a second module")
        assert not (state / "train.now").exists()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        ev = events()
        assert {"started", "train_due", "upload_deferred", "upload_done", "stopped"} <= {
            e.get("event") for e in ev
        }
        assert {e["reason"] for e in ev if e.get("event") == "train_due"} == {
            "first_run",
            "trigger_file",
        }
        assert all({"time", "level", "logger", "msg"} <= set(e) for e in ev)
        entries = ledger_entries(fed, agg.address)
        assert len([e for e in entries if e["type"] == "module.registered"]) == 2
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        agg.stop()


def test_daemon_sigterm_mid_training_stops_at_the_next_epoch_and_writes_nothing(fed, tmp_path):
    cfg = write_site_config(tmp_path, "st-a", f"127.0.0.1:{free_port()}", [0, 1, 2], attempts=1)
    cfg.write_text(
        cfg.read_text().replace("epochs = 1", "epochs = 100000")
    )  # hours: only SIGTERM ends it
    setup_site_in_process(fed, cfg, train=False)
    state = tmp_path / "st-a" / "state"
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "site_node", "run", "--config", str(cfg)],
            cwd=REPO,
            env=cli_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while '"train_start"' not in log_path.read_text():
            assert daemon.poll() is None and time.monotonic() < deadline, log_path.read_text()[
                -3000:
            ]
            time.sleep(0.1)
        time.sleep(0.5)  # inside the epochs
        t0 = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log_path.read_text()[-3000:]
        assert time.monotonic() - t0 < 30
        events = [
            json.loads(line)["event"]
            for line in log_path.read_text().splitlines()
            if line.startswith("{")
        ]
        assert (
            events[-1] == "stopped"
            and "module_trained" not in events
            and "upload_start" not in events
        )
        assert not any(state.glob("modules/*")) and not (state / "data.json").exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_evaluate_keeps_the_metrics_local_unless_asked_to_send_them(fed, tmp_path):
    from click.testing import CliRunner

    from aggregator.cli import cli as aggregator_cli

    def operator(*args) -> dict:
        res = CliRunner().invoke(
            aggregator_cli, [*map(str, args), "--json"], catch_exceptions=False
        )
        assert res.exit_code == 0, res.output
        lines = res.output.splitlines()  # log lines on stderr may come first
        return json.loads("\n".join(lines[lines.index("{") :]))

    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg = write_site_config(tmp_path, "st-b", agg.address, [5, 6, 7])
        site_cfg, t, record = setup_site_in_process(fed, cfg)
        upload_in_process(site_cfg, t)
        proc = site_node("evaluate", "--config", cfg, "--json", check=False)
        assert proc.returncode == 1 and '"E_NO_CLASSIFIER"' in proc.stderr  # nothing published yet
        agg.stop()
        home = fed.home.root
        ds = operator("synthesize", "--dir", home, "--per-class", 8, "--no-progress")["dataset_id"]
        clf = operator(
            "train",
            "--dir",
            home,
            "--dataset",
            ds,
            "--epochs",
            1,
            "--min-steps",
            0,
            "--threads",
            1,
            "--no-progress",
        )["classifier_id"]
        operator("publish", "--dir", home, clf)
        agg.start()
        ev = site_json("evaluate", "--config", cfg)
        assert (
            ev["classifier_id"] == clf
            and ev["module_ids"] == [record.module_id]
            and ev["published"]
        )
        assert ev["classes"] == [5, 6, 7] and ev["n_test"] == ev["metrics"]["n"] > 0
        assert 0.0 <= ev["metrics"]["accuracy"] <= 1.0 and len(ev["metrics"]["confusion"]) == 10
        assert [
            r for i, r in enumerate(ev["metrics"]["per_class_recall"]) if i not in (5, 6, 7)
        ] == [None] * 7
        saved = tmp_path / "st-b" / "state" / "classifiers" / clf
        assert json.loads((saved / "evaluation.json").read_text())["metrics"] == ev["metrics"]
        assert (
            hashlib.sha256((saved / "weights.safetensors").read_bytes()).hexdigest() == ev["sha256"]
        )
        from aggregator.store import open_home_store

        with open_home_store(fed.home) as store:
            assert ev["report"] == {"sent": False} and store.list_evaluations() == []
        # --send: only the aggregate numbers go back (re-sending:
        # tests/integration/test_evaluation_report.py)
        sent = site_json("evaluate", "--config", cfg, "--send")["report"]
        assert (
            sent["sent"]
            and not sent["existing"]
            and sent["fields"] == ["n_test", "accuracy", "auroc", "per_class_recall"]
        )
        assert (
            json.loads((saved / "evaluation.json").read_text())["report"]["index"] == sent["index"]
        )
        agg.stop()
        (shown,) = operator("status", "--dir", home)["current_classifier"]["site_evaluations"]
        assert (
            shown["site_id"] == "st-b"
            and shown["index"] == sent["index"]
            and not shown["confusion_sent"]
        )
        assert shown["accuracy"] == ev["metrics"]["accuracy"] and shown["n_test"] == ev["n_test"]
    finally:
        agg.stop()


def test_train_uses_dp_when_the_site_asks_and_reports_epsilon_per_epoch(fed, tmp_path):
    from ffsecure.dp import compute_epsilon
    from ffsecure.package import SignedPackage
    from site_node import trust as trustlib
    from site_node.config import load_config
    from site_node.training import train_module

    cfg_path = write_site_config(tmp_path, "st-a", "127.0.0.1:1", [0, 1])
    dp_lines = '\n[dp]\ntarget_epsilon = 5.0\ndelta = 1e-4\nmechanism = "dp-sgd"\n'
    cfg_path.write_text(cfg_path.read_text() + dp_lines)  # what this test checks: DP-SGD
    setup_site_in_process(fed, cfg_path, train=False)
    cfg = load_config(cfg_path)
    seen = []
    record = train_module(
        cfg, trustlib.load(cfg), progress=lambda e, n, loss, eps: seen.append((e, n, eps))
    )
    dp = record.train["dp"]
    assert 0 < dp["epsilon"] <= 5.0 and dp["delta"] == 1e-4 and dp["target_epsilon"] == 5.0
    assert [e for e, _, _ in seen] == [1] and all(
        eps is not None and eps <= 5.0 for _, _, eps in seen
    )
    # the signed manifest carries the claim, and the claim recomputes from its own parameters
    pkg = SignedPackage.from_bytes(
        (tmp_path / "st-a" / "state" / "modules" / record.module_id / "package.ffpk").read_bytes()
    )
    assert pkg.manifest.dp == dp
    assert compute_epsilon(
        noise_multiplier=dp["noise_multiplier"],
        sample_rate=dp["sample_rate"],
        steps=dp["steps"],
        delta=dp["delta"],
        accountant=dp["accountant"],
    ) == pytest.approx(dp["epsilon"], rel=1e-9)


def test_train_refuses_a_site_per_image_when_the_federation_pins_patient_dp(
    fed, tmp_path, monkeypatch
):
    """The signed dp_policy.privacy_unit = "patient" against site.toml's default "image": the
    site refuses before it hashes or reads any data, with the fix, and writes nothing."""
    from click.testing import CliRunner

    import site_node.training as training
    from site_node.cli import cli
    from tests.security import forge

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the config was refused")

    policy = {"required": True, "max_epsilon": 8.0, "delta": 1e-5, "privacy_unit": "patient"}
    forge.require_dp(fed, policy)
    cfg_path = write_site_config(tmp_path, "st-a", "127.0.0.1:1", [0, 1])
    setup_site_in_process(fed, cfg_path, train=False)
    state = tmp_path / "st-a" / "state"
    monkeypatch.setattr(training, "data_fingerprint", no_data)
    monkeypatch.setattr(training, "load_site_data", no_data)
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg_path), "--json"])
    error = json.loads(res.output.strip().splitlines()[-1])["error"]
    assert res.exit_code != 0 and error["code"] == "E_CONFIG", res.output
    assert "data.privacy_unit: 'image'" in error["message"] and "'patient'" in error["message"]
    assert 'privacy_unit = "patient"' in error["hint"] and "dicom:" in error["hint"]
    assert list((state / "modules").iterdir()) == [] and not (state / "data.json").exists()


def test_install_cert_refuses_another_sites_certificate_and_a_foreign_manifest(fed, tmp_path):
    from click.testing import CliRunner

    from site_node.cli import cli

    def run(*args):
        return CliRunner().invoke(cli, [*map(str, args), "--json"], catch_exceptions=False)

    def code(res) -> str:
        return json.loads(res.output.strip().splitlines()[-1])["error"]["code"]

    cfg = write_site_config(tmp_path, "st-a", "127.0.0.1:1", [0])
    enrolled = run("enroll", "--config", cfg)
    assert enrolled.exit_code == 0
    out = json.loads(
        enrolled.stdout
    )  # stderr warns that the key is unencrypted (no passphrase file)
    assert code(run("enroll", "--config", cfg)) == "E_CONFIG"  # never overwrites the key
    # a certificate the CA issued for another key (same site id)
    other = fed.add_site("st-a")
    res = run(
        "install-cert",
        "--config",
        cfg,
        "--cert",
        other.cert_path,
        "--ca",
        fed.home.ca_cert,
        "--federation",
        fed.home.federation,
    )
    assert res.exit_code == 1 and code(res) == "E_KEY_MISMATCH"
    # a certificate for another site
    res = run(
        "install-cert",
        "--config",
        cfg,
        "--cert",
        fed.add_site("st-b").cert_path,
        "--ca",
        fed.home.ca_cert,
        "--federation",
        fed.home.federation,
    )
    assert res.exit_code == 1 and code(res) == "E_IDENTITY"
    # the right certificate but a manifest signed by another CA
    cert = tmp_path / "st-a.pem"
    cert.write_bytes(
        pki.cert_pem(fed.ca.sign_csr(Path(out["csr"]).read_bytes(), role="site", site_id="st-a"))
    )
    forged = build_federation(tmp_path / "forged", labels=DIGITS, sites=())
    res = run(
        "install-cert",
        "--config",
        cfg,
        "--cert",
        cert,
        "--ca",
        fed.home.ca_cert,
        "--federation",
        forged.home.federation,
    )
    assert res.exit_code == 1 and code(res) == "E_MANIFEST_SIGNATURE"
    state = tmp_path / "st-a" / "state"
    assert (
        not (state / "site.pem").exists() and not (state / "federation.json").exists()
    )  # nothing installed
    # commands that need the installed files say what to run
    assert code(run("upload", "--config", cfg)) == "E_NOT_INSTALLED"
    assert (
        run(
            "install-cert",
            "--config",
            cfg,
            "--cert",
            cert,
            "--ca",
            fed.home.ca_cert,
            "--federation",
            fed.home.federation,
        ).exit_code
        == 0
    )
    assert (state / "site.pem").exists() and stat.S_IMODE(state.stat().st_mode) == 0o700
    # train with the progress bar (epoch, loss, epsilon) and the human summary
    res = CliRunner().invoke(cli, ["train", "--config", str(cfg)], catch_exceptions=False)
    assert res.exit_code == 0 and "epoch   1/1" in res.output and "loss" in res.output, res.output
    assert "trained module" in res.output and "no DP" in res.output
    offline = json.loads(run("status", "--config", cfg, "--offline").output)
    assert [m["status"] for m in offline["modules"]] == ["trained"] and offline[
        "stored_checkpoint"
    ] is None
    # forget is destructive: without --yes it asks (on stderr, also under --json); "n" or no answer
    # aborts before the aggregator (here: nothing listening) is contacted
    mid = offline["modules"][0]["module_id"]
    for extra, answer in (([], "n\n"), (["--json"], None)):
        res = CliRunner().invoke(
            cli,
            ["forget", "--config", str(cfg), "--module", mid, "--reason", "x", *extra],
            input=answer,
        )
        assert (
            res.exit_code == 1 and "cannot be undone" in res.stderr and "Aborted" in res.stderr
        ), res.output
        assert res.stdout == ""
    # a file swapped in the state directory afterwards is caught before use
    (state / "federation.json").write_bytes(forged.home.federation.read_bytes())
    assert code(run("upload", "--config", cfg)) == "E_MANIFEST_SIGNATURE"
