"""The operator commands, run in-process with click's CliRunner on real homes (real keys, store,
modules)."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
import torch
from click.testing import CliRunner

from aggregator.cli import cli
from aggregator.store import open_home_store
from ffsecure import pki
from ffsecure.federation import FederationManifest, create_signed_manifest, load_public_keys
from tests.federation_fixture import build_federation
from tests.ops_fixture import register_trained

torch.set_num_threads(1)


def run(*args: str, input: str | None = None, code: int = 0):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == code, (
        f"{args}: exit {result.exit_code}\n{result.output}\n{result.stderr}"
    )
    return result


def run_json(*args: str):
    return json.loads(run(*args, "--json").stdout)


# --------------------------------------------------------------------------- init


def _manifest_for(ca, public_keys: dict) -> bytes:
    from ffsecure import generators

    m = FederationManifest(
        federation_id=ca.federation_id,
        label_space=["a", "b"],
        image_shape=(1, 16, 16),
        generator={
            "family": "cvae",
            "config": generators.default_config(
                "cvae", image_shape=(1, 16, 16), num_classes=2, size="tiny"
            ),
        },
        dp_policy={"required": False, "max_epsilon": None, "delta": None},
        limits={"max_module_bytes": 1 << 24},
        aggregator={"endpoint": "localhost:8443", **public_keys},
    )
    return create_signed_manifest(m, ca)


def test_init_in_two_steps_then_serve(tmp_path):
    home = tmp_path / "agg"
    out = run_json("init", "--dir", str(home), "--federation-id", "demo")
    for key in out["keys"]:
        assert stat.S_IMODE((home / "keys" / key.rsplit("/", 1)[1]).stat().st_mode) == 0o600
    again = run("init", "--dir", str(home), "--federation-id", "demo", code=1)
    assert "error[E_EXISTS]" in again.stderr

    ca = pki.init_ca(tmp_path / "ca", "demo")
    (tmp_path / "federation.json").write_bytes(
        _manifest_for(ca, load_public_keys(home / "public-keys.json"))
    )
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "crl.pem").write_bytes(ca.crl_pem())
    cert = ca.sign_csr((home / "aggregator.csr").read_bytes(), role="aggregator", host="localhost")
    (tmp_path / "aggregator.pem").write_bytes(pki.cert_pem(cert))
    step2 = [
        "init",
        "--dir",
        str(home),
        "--federation",
        str(tmp_path / "federation.json"),
        "--ca",
        str(tmp_path / "ca.pem"),
        "--crl",
        str(tmp_path / "crl.pem"),
        "--tls-cert",
        str(tmp_path / "aggregator.pem"),
        "--listen",
        "127.0.0.1:0",
    ]

    # A manifest naming another home's keys is refused before anything is written.
    other = tmp_path / "other"
    run("init", "--dir", str(other), "--federation-id", "demo")
    (tmp_path / "wrong.json").write_bytes(
        _manifest_for(ca, load_public_keys(other / "public-keys.json"))
    )
    wrong = run(
        *[str(tmp_path / "wrong.json") if a.endswith("federation.json") else a for a in step2],
        code=1,
    )
    assert "error[E_KEY_MISMATCH]" in wrong.stderr
    assert not (home / "federation.json").exists() and not (home / "store.sqlite").exists()
    # A TLS certificate for another key is refused too.
    foreign, _ = ca.issue_aggregator("localhost")
    (tmp_path / "foreign.pem").write_bytes(pki.cert_pem(foreign))
    bad = run(
        *[str(tmp_path / "foreign.pem") if a.endswith("aggregator.pem") else a for a in step2],
        code=1,
    )
    assert "error[E_KEY_MISMATCH]" in bad.stderr

    info = run_json(*step2)
    assert info["federation_id"] == "demo" and info["log_size"] == 0
    assert "error[E_EXISTS]" in run(*step2, code=1).stderr

    from aggregator.config import load_config
    from aggregator.server import start

    srv = start(load_config(home / "aggregator.toml"))
    try:
        assert srv.port > 0
    finally:
        srv.stop(grace=0.5)


# --------------------------------------------------------------------------- operator commands


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    fed = build_federation(tmp_path_factory.mktemp("cli") / "fed", sites=("north", "south"))
    with open_home_store(fed.home) as store:
        ids = {
            "north": register_trained(fed, store, "north", [0, 1], 31),
            "south": register_trained(fed, store, "south", [1, 2], 32),
        }
    return fed, ids


@pytest.fixture
def home(template, tmp_path):
    fed, ids = template
    dst = tmp_path / "home"
    shutil.copytree(fed.home.root, dst)
    return dst, ids


def test_modules_list_show_and_json(home):
    home, ids = home
    rows = run_json("modules", "list", "--dir", str(home))
    assert {r["module_id"] for r in rows} == set(ids.values())
    north = next(r for r in rows if r["site_id"] == "north")
    assert (
        north["classes"] == ["zero", "one"]
        and north["status"] == "live"
        and north["generator"] == "cvae"
    )
    table = run("modules", "list", "--dir", str(home)).stdout
    assert ids["north"] in table and "live" in table
    shown = run_json("modules", "show", "--dir", str(home), ids["south"])
    assert shown["site_id"] == "south" and shown["used_by"] == []
    bad = run("modules", "show", "--dir", str(home), "not-an-id", code=1)
    assert "error[E_MODULE_ID]" in bad.stderr
    missing = CliRunner().invoke(cli, ["modules", "show", "--dir", str(home), "ab" * 16, "--json"])
    assert missing.exit_code == 1 and json.loads(missing.stderr)["error"]["code"] == "E_NOT_FOUND"


def test_synthesize_train_publish_status_and_guarded_delete(home):
    home, ids = home
    st = run_json("status", "--dir", str(home))
    assert st["modules"] == {"live": 2, "deleted": 0} and st["current_classifier"] is None
    assert st["classes_covered"] == ["zero", "one", "two"] and st["classes_uncovered"] == ["three"]

    ds = run_json("synthesize", "--dir", str(home), "--per-class", "6", "--seed", "3")
    assert ds["counts"] == {"zero": 6, "one": 6, "two": 6, "three": 0} and ds["uncovered"] == [
        "three"
    ]
    assert (home / "runs" / f"{ds['dataset_id']}-samples.png").is_file()
    assert (
        "error[E_NOT_FOUND]"
        in run("train", "--dir", str(home), "--dataset", "ds-nope", code=1).stderr
    )
    assert "error[E_NO_CLASSIFIER]" in run("publish", "--dir", str(home), code=1).stderr
    clf = run_json(
        "train",
        "--dir",
        str(home),
        "--dataset",
        ds["dataset_id"],
        "--epochs",
        "1",
        "--min-steps",
        "0",
        "--width",
        "8",
        "--threads",
        "1",
    )
    assert clf["metrics"] is None and clf["modules"] == sorted(ids.values())
    pub = run_json("publish", "--dir", str(home))
    assert pub["classifier_id"] == clf["classifier_id"] and not pub["already_published"]
    # publishing it again is idempotent: exit 0, the same entry, nothing appended
    again = run("publish", "--dir", str(home), clf["classifier_id"])
    assert f"already published as {clf['classifier_id']}" in again.stdout
    same = CliRunner().invoke(cli, ["publish", "--dir", str(home), "--json"])
    assert same.exit_code == 0 and json.loads(same.stdout) == {**pub, "already_published": True}
    text = run("status", "--dir", str(home)).stdout
    assert f"current classifier: {clf['classifier_id']}" in text

    # Without --yes the operator is asked; "n" changes nothing.
    with open_home_store(home) as store:
        size = store.size()
    run(
        "modules",
        "delete",
        "--dir",
        str(home),
        ids["north"],
        "--reason",
        "test",
        input="n\n",
        code=1,
    )
    with open_home_store(home) as store:
        assert store.size() == size and store.get_module(ids["north"]).status == "active"

    out = run_json(
        "modules",
        "delete",
        "--dir",
        str(home),
        ids["north"],
        "--reason",
        "withdrawn",
        "--yes",
        "--no-retrain",
    )
    assert out["retrained"] is None and out["retired_classifiers"] == [clf["classifier_id"]]
    st = run_json("status", "--dir", str(home))
    assert st["current_classifier"] is None and st["pending_retrains"] == [clf["classifier_id"]]
    again = run_json("retrain", "--dir", str(home), "--no-progress")
    new = again["classifiers"][0]
    st = run_json("status", "--dir", str(home))
    assert st["current_classifier"]["classifier_id"] == new["classifier_id"]
    assert (
        st["current_classifier"]["replaces"] == clf["classifier_id"]
        and st["pending_retrains"] == []
    )
    assert st["classes_covered"] == ["one", "two"] and st["modules"] == {"live": 1, "deleted": 1}
    assert "nothing to retrain" in run("retrain", "--dir", str(home)).stdout


def test_long_steps_draw_progress_bars_and_train_a_resnet18(home):
    """Without --json the long steps draw rich progress bars on stderr (stdout keeps the
    summary)."""
    home, ids = home
    syn = run("synthesize", "--dir", str(home), "--per-class", "3", "--seed", "1")
    assert "synthesize" in syn.stderr and "9/9" in syn.stderr, syn.stderr  # 3 covered classes x 3
    ds = syn.stdout.split()[1]
    assert syn.stdout.startswith(f"dataset {ds} (9 images")  # "three" has no module
    assert (
        run("synthesize", "--dir", str(home), "--per-class", "3", "--no-progress").stderr.count(
            "9/9"
        )
        == 0
    )
    clf = run(
        "train",
        "--dir",
        str(home),
        "--dataset",
        ds,
        "--classifier",
        "resnet18",
        "--epochs",
        "1",
        "--min-steps",
        "0",
        "--threads",
        "1",
    )
    assert (
        f"regenerate {ds}" in clf.stderr and "train resnet18" in clf.stderr and "1/1" in clf.stderr
    ), clf.stderr
    cid = clf.stdout.split()[1]
    shown = run_json("status", "--dir", str(home))
    assert shown["classifiers"]["active"] == 1
    with open_home_store(home) as store:
        row = store.get_artifact("classifier", cid)
    assert row.meta["config"]["architecture"] == "resnet18" and row.meta["modules"] == [
        {"module_id": m, "weights_sha256": row.meta["modules"][i]["weights_sha256"]}
        for i, m in enumerate(sorted(ids.values()))
    ]
