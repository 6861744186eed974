"""`ffsecure demo`: the whole federation through the real CLIs, at its smallest setting.

The demo runs as a process (`python -m ffsecure demo`), which starts the CA,
`aggregator serve` (mTLS on loopback), one `site-node` process per site and
step, and the auditor's commands. The tests read what it leaves behind:
summary.json, the audit bundle (verified again here), the role directories
and the process table (nothing may be left running).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli_env

REPO = Path(__file__).resolve().parents[2]

# Smallest setting: digits (shipped with scikit-learn), 4 sites of 5 classes each
# (every class at two sites), the tiny cvae for 5 epochs, 50 images per class.
SMALL = [
    "--dataset",
    "digits",
    "--sites",
    "4",
    "--classes-per-site",
    "5",
    "--generator-size",
    "tiny",
    "--epochs",
    "5",
    "--samples-per-class",
    "50",
    "--classifier-epochs",
    "2",
    "--classifier-min-steps",
    "20",
    "--fedavg-rounds",
    "2",
]


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(
                (
                    line
                    for line in (d / "status").read_text().splitlines()
                    if line.startswith("State:")
                ),
                "",
            )
        except OSError:
            continue
        if text in cmd and "zombie" not in state:
            pids.append(int(d.name))
    return pids


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo") / "out"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "ffsecure", "demo", "--workdir", str(work), *SMALL, "--json"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, (
        f"demo exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    return work, json.loads(proc.stdout), time.monotonic() - t0


def test_demo_summary_facts(small_demo):
    work, summary, _ = small_demo
    assert json.loads((work / "summary.json").read_text()) == summary

    # the audit passed, checked against every file the sites exported (`site-node receipts
    # export`): 4 receipts, 4 newest checkpoints and the forgotten module's deletion checkpoint
    assert summary["audit"]["ok"] is True and summary["audit"]["exit_status"] == 0
    assert summary["audit"]["findings"] == [] and summary["audit"]["trusted_checkpoints"] == 9

    # the deleted site's module is gone from the current classifier's lineage, the others are in it
    deleted = summary["deleted"]
    assert deleted["site_id"] == "site-4"
    modules = {sid: f["module_id"] for sid, f in summary["sites"].items()}
    assert deleted["module_id"] == modules["site-4"]
    before, after = summary["classifier_before"], summary["classifier_after"]
    assert sorted(before["modules"]) == sorted(modules.values())
    assert deleted["module_id"] not in after["modules"]
    assert sorted(after["modules"]) == sorted(m for s, m in modules.items() if s != "site-4")
    assert summary["deleted_in_current_lineage"] is False
    assert (
        after["replaces"] == before["classifier_id"]
        and after["classifier_id"] != before["classifier_id"]
    )
    assert deleted["entries"][:2] == ["module.deletion_requested", "module.deleted"]
    assert {"classifier.retired", "dataset.retired"} <= set(deleted["entries"])
    assert summary["status_after"]["modules"] == {"live": 3, "deleted": 1}
    assert summary["status_after"]["classes_uncovered"] == []  # site-2 still holds site-4's classes

    # FederatedFactory beats FedAvg on this one-shot pathological split, before and after
    acc = summary["accuracy"]
    for when in ("before", "after"):
        assert set(acc[when]) == {"federatedfactory", "centralized", "fedavg"}
        assert acc[when]["federatedfactory"]["accuracy"] > acc[when]["fedavg"]["accuracy"]
    assert acc["before"]["federatedfactory"]["accuracy"] == before["metrics"]["accuracy"]

    # every site evaluated the published classifier on its own test share, before and after
    for when, clf in (("before", before), ("after", after)):
        ev = summary["site_evaluation"][when]
        assert set(ev) == set(modules)
        assert all(
            e["classifier_id"] == clf["classifier_id"] and 0.0 <= e["accuracy"] <= 1.0
            for e in ev.values()
        )
    assert (
        sum(e["n_test"] for e in summary["site_evaluation"]["before"].values())
        == summary["dataset"]["test"]
    )

    # bytes each site sent: one sealed module each, as the site recorded it
    for sid, sent in summary["bytes_sent"].items():
        record = json.loads(
            (work / "sites" / sid / "state" / "modules" / modules[sid] / "module.json").read_text()
        )
        assert sent > 1000 and record["status"] in ("registered", "deleted")
    for phase in ("pki", "serve", "enroll", "sites", "aggregate", "forget", "audit", "total"):
        assert summary["phase_seconds"][phase] > 0


def test_demo_leaves_each_role_usable_and_nothing_running(small_demo):
    work, summary, _ = small_demo
    assert processes_mentioning(str(work)) == []
    for name in (
        "summary.json",
        "report.html",
        "samples.png",
        "accuracy.png",
        "audit-bundle/entries.jsonl",
        "ca/ca.pem",
        "ca/federation.json",
        "aggregator/aggregator.toml",
        "aggregator/store.sqlite",
        "sites/site-1/site.toml",
        "sites/site-1/state/site.pem",
    ):
        assert (work / name).is_file(), name
    assert (
        "VERIFIED" in (work / "report.html").read_text()
        or summary["audit"]["verdict"] in (work / "report.html").read_text()
    )
    # the auditor's check, run again here on the bundle the demo exported
    audit = subprocess.run(
        [
            sys.executable,
            "-m",
            "ffsecure",
            "audit",
            "verify",
            str(work / "audit-bundle"),
            "--ca",
            str(work / "ca" / "ca.pem"),
            "--json",
        ],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert audit.returncode == 0, audit.stderr
    # the operator can go on with the aggregator's own commands
    status = subprocess.run(
        [sys.executable, "-m", "aggregator", "status", "--dir", str(work / "aggregator"), "--json"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["current_classifier"]["classifier_id"] == summary["classifier_after"]["classifier_id"]
    assert st["modules"] == {"live": 3, "deleted": 1}
    # each site holds its own shard only: disjoint training images, all of its classes
    cfg = tomllib.loads((work / "sites" / "site-1" / "site.toml").read_text())
    assert cfg["data"]["source"].startswith("npz:") and cfg["site"]["site_id"] == "site-1"
    with (
        np.load(work / "sites" / "site-4" / "data.npz") as d4,
        np.load(work / "sites" / "site-2" / "data.npz") as d2,
    ):
        assert sorted(np.unique(d4["train_labels"])) == sorted(np.unique(d2["train_labels"]))
        assert len(d4["train_labels"]) == summary["sites"]["site-4"]["n_train"]


def test_demo_refuses_a_non_empty_workdir(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run(
        [sys.executable, "-m", "ffsecure", "demo", "--workdir", str(tmp_path), *SMALL],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "error[E_EXISTS]" in proc.stderr and "hint:" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_demo_refuses_bad_options_before_writing_anything(tmp_path):
    work = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ffsecure",
            "demo",
            "--workdir",
            str(work),
            *SMALL,
            "--forget-site",
            "site-9",
        ],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "error[E_CONFIG]" in proc.stderr and "site-9" in proc.stderr and "site-4" in proc.stderr
    assert not work.exists()


@pytest.mark.parametrize(
    ("options", "code", "words"),
    [
        (["--dp-mechanism", "dp-sgd"], "E_CONFIG", "needs --dp-epsilon"),
        (
            ["--generator", "ddpm", "--dp-epsilon", "8", "--dp-mechanism", "mean-embedding"],
            "E_DP",
            "cannot train a ddpm module",
        ),
    ],
)
def test_demo_refuses_a_dp_mechanism_it_cannot_run_before_writing_anything(
    tmp_path, options, code, words
):
    work = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "ffsecure", "demo", "--workdir", str(work), *SMALL, *options],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert f"error[{code}]" in proc.stderr and words in proc.stderr and "hint:" in proc.stderr
    assert not work.exists()


def test_resolve_gives_a_pinned_dp_sgd_the_family_s_own_schedule():
    """DP-SGD's figures were measured at the family's schedule, not the demo's short fit."""
    from ffsecure.demo.runner import DemoConfig, resolve
    from ffsecure.generators import default_train_settings

    preset = default_train_settings("cvae", "default", seed=0).epochs
    assert preset != 6
    pinned = resolve(DemoConfig(dataset="pneumoniamnist", dp_epsilon=8.0, dp_mechanism="dp-sgd"))
    assert pinned.epochs == preset
    # auto is the release for the cvae (no epochs in its privacy cost): the demo's 6 epochs
    assert resolve(DemoConfig(dataset="pneumoniamnist", dp_epsilon=8.0)).epochs == 6
    flow = resolve(DemoConfig(dataset="pneumoniamnist", generator="flow", dp_epsilon=8.0))
    assert flow.epochs == default_train_settings("flow", "default", seed=0).epochs
    given = DemoConfig(dataset="pneumoniamnist", dp_epsilon=8.0, dp_mechanism="dp-sgd", epochs=3)
    assert resolve(given).epochs == 3
    assert resolve(DemoConfig(dataset="pneumoniamnist")).epochs == 6


@pytest.mark.slow
def test_demo_runs_a_federation_that_pins_dp_sgd(tmp_path):
    """`--dp-epsilon 8 --dp-mechanism dp-sgd`: the CA signs the pinned mechanism, every site
    trains with DP-SGD (not the cvae's auto release), and the audit re-accounts every claim."""
    from ffsecure.demo.summary import closing_lines, closing_tables

    work = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ffsecure",
            "demo",
            "--workdir",
            str(work),
            *SMALL,
            "--no-baselines",
            "--dp-epsilon",
            "8",
            "--dp-mechanism",
            "dp-sgd",
            "--json",
        ],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    summary = json.loads(proc.stdout)
    signed = json.loads((work / "audit-bundle" / "federation.json").read_text())
    assert signed["signed"]["dp_policy"] == {
        "required": True,
        "max_epsilon": 8.0,
        "delta": 1e-5,
        "mechanism": "dp-sgd",
    }
    assert len(summary["sites"]) == 4
    for sid, facts in summary["sites"].items():
        assert facts["dp_mechanism"] == "dp-sgd", sid
        assert 0 < facts["epsilon"] <= 8.0
        record = json.loads(
            (
                work / "sites" / sid / "state" / "modules" / facts["module_id"] / "module.json"
            ).read_text()
        )
        assert record["train"]["dp"]["mechanism"] == "dp-sgd"
    assert summary["audit"]["ok"] is True and summary["audit"]["findings"] == []
    checks = {c["name"]: c for c in summary["audit"]["checks"]}
    assert checks["dp-claims"]["status"] == "ok"
    assert checks["dp-claims"]["detail"] == "4 of 4 DP claims re-accounted"
    lines = closing_lines(summary)
    assert "audit dp-claims: ok (4 of 4 DP claims re-accounted)" in lines
    table = closing_tables(summary)[1]
    assert table.columns[4].header == "DP epsilon, mechanism"
    assert all(cell.endswith(", dp-sgd") for cell in table.columns[4]._cells)


def test_ctrl_c_stops_every_child(tmp_path):
    """SIGINT while `aggregator serve` and site processes run: the demo stops them all and exits."""
    work = tmp_path / "out"
    # A terminal delivers Ctrl-C to a process whose SIGINT is at its default; a test run started in
    # the background of a non-interactive shell inherits SIGINT ignored, and Python keeps it
    # ignored. Restore the default in the child so the test sees what a person at a terminal sees.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ffsecure", "demo", "--workdir", str(work), *SMALL, "--json"],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 600
        # wait until the sites are enrolling: serve and site-node processes are alive
        while not list((work / "sites").glob("*/state/site.pem")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert (work / "aggregator" / "serve.port").is_file()
        children = processes_mentioning(str(work))
        assert children, "no child process found"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
        assert rc != 0
        time.sleep(0.5)
        assert processes_mentioning(str(work)) == []
        assert not (work / "summary.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_site_and_federation_files_parse_with_the_roles_own_loaders(tmp_path):
    """The demo's federation.toml / site.toml / [evaluation] are read by the real loaders."""
    from ffsecure.demo import layout
    from ffsecure.federation import manifest_from_toml, write_public_keys
    from site_node.config import load_config
    from tests.unit.test_federation import aggregator_keys

    shares = layout.split_test(np.array([0] * 10 + [1] * 7 + [2] * 4), 3, seed=0)
    assert sorted(np.concatenate(shares).tolist()) == list(range(21))
    assert all(len(set(np.array([0] * 10 + [1] * 7 + [2] * 4)[s])) == 3 for s in shares)

    (tmp_path / "d.npz").write_bytes(b"")
    text = layout.site_toml(
        federation_id="demo",
        site_id="site-1",
        endpoint="127.0.0.1:9",
        epochs=3,
        data_path=tmp_path / "d.npz",
        size="tiny",
        seed=7,
        dp_epsilon=4.0,
    )
    (tmp_path / "site.toml").write_text(text)
    cfg = load_config(tmp_path / "site.toml")
    assert cfg.site_id == "site-1" and cfg.data_source == f"npz:{(tmp_path / 'd.npz').resolve()}"
    assert cfg.label_match == "index"
    assert cfg.privacy.check == "federation"  # public data, leaky short fits: the site opts out
    # a --dp-epsilon above a site's default ceiling (8) raises that site's ceiling with it
    for epsilon, ceiling in ((4.0, 8.0), (20.0, 20.0)):
        text = layout.site_toml(
            federation_id="demo",
            site_id="site-1",
            endpoint="127.0.0.1:9",
            epochs=3,
            data_path=tmp_path / "d.npz",
            size="tiny",
            seed=7,
            dp_epsilon=epsilon,
        )
        (tmp_path / "site.toml").write_text(text)
        limits = load_config(tmp_path / "site.toml").dp_limits
        assert limits.max_epsilon == limits.max_total_epsilon == ceiling

    fed = tomllib.loads(
        layout.federation_toml(
            federation_id="demo",
            label_space=["a", "b"],
            image_shape=(1, 16, 16),
            generator="cvae",
            generator_size="tiny",
            endpoint="127.0.0.1:9",
            public_keys="public-keys.json",
            dp_epsilon=4.0,
        )
    )
    assert fed["dp_policy"] == {"required": True, "max_epsilon": 4.0, "delta": 1e-5}
    # --dp-mechanism pins the mechanism in the policy the CA signs; auto writes no key, so a
    # manifest without the option keeps its bytes
    (tmp_path / "federation.toml").write_text(
        layout.federation_toml(
            federation_id="demo",
            label_space=["a", "b"],
            image_shape=(1, 16, 16),
            generator="cvae",
            generator_size="tiny",
            endpoint="127.0.0.1:9",
            public_keys="public-keys.json",
            dp_epsilon=4.0,
            dp_mechanism="dp-sgd",
        )
    )
    agg = aggregator_keys()
    write_public_keys(
        tmp_path / "public-keys.json",
        hpke_public_key=base64.b64decode(agg["hpke_public_key"]),
        hpke_suite="x25519",
        log_public_key=agg["log_public_key"],
        log_origin=agg["log_origin"],
    )
    pinned = manifest_from_toml(tmp_path / "federation.toml")
    assert pinned.dp_policy["mechanism"] == "dp-sgd" and pinned.dp_policy["max_epsilon"] == 4.0
    assert fed["aggregator"]["endpoint"] == "127.0.0.1:9" and fed["image_shape"] == [1, 16, 16]
    ev = tomllib.loads(layout.evaluation_toml("digits", root=None, seed=3))
    assert ev == {"evaluation": {"data": "digits", "seed": 3}}
    ev = tomllib.loads(layout.evaluation_toml("npz:rel/x.npz", root=None, seed=0))
    assert ev["evaluation"]["data"] == f"npz:{Path('rel/x.npz').resolve()}"


def test_supervisor_stops_a_process_group(tmp_path):
    """A child that ignores SIGTERM and has a grandchild is killed with its whole group."""
    from ffsecure.demo.procs import Supervisor

    sup = Supervisor(tmp_path / "logs", grace_s=1.0)
    mark = f"{tmp_path}/grandchild"
    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', sys.argv[1]]); "
        "print('up', flush=True); time.sleep(300)"
    )
    proc, _ = sup.spawn([sys.executable, "-c", code, mark], name="stubborn", stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"up"
    deadline = time.monotonic() + 10
    while len(processes_mentioning(mark)) < 2:  # the child and the grandchild
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sup.stop_all()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while processes_mentioning(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(mark) == []


def test_no_child_outlives_stop_all_when_threads_are_spawning(tmp_path):
    """Job threads that keep starting children while stop_all runs: every child that started is
    stopped, every later start is refused (E_DEMO_STOPPED), and nothing is left running."""
    from ffsecure.demo.procs import DemoError, Supervisor

    sup = Supervisor(tmp_path / "logs", grace_s=1.0)
    mark = f"{tmp_path}/spawned"
    started, refused = [], []

    def spawner(i: int) -> None:
        for j in range(40):
            try:
                proc, _ = sup.spawn(
                    [sys.executable, "-c", "import time; time.sleep(300)", f"{mark}-{i}-{j}"],
                    name=f"job-{i}-{j}",
                )
            except DemoError as exc:
                refused.append(exc.code)
                return
            started.append(proc)

    threads = [threading.Thread(target=spawner, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    while len(started) < 4:
        time.sleep(0.01)
    sup.stop_all()
    for t in threads:
        t.join(timeout=60)
    assert refused and set(refused) == {"E_DEMO_STOPPED"}
    assert all(p.poll() is not None for p in started), (
        "a child started during stop_all is still running"
    )
    deadline = time.monotonic() + 5
    while processes_mentioning(mark) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning(mark) == []
