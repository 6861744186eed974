"""`ffsecure audit verify` and `report` as a user runs them: real bundles, exit codes, output.

Two tests run the real program in a child process; the others drive the same click
command in-process (CliRunner) to keep the suite quick: loading a federation manifest
validates its generator config, which imports torch (seconds per process on a shared CPU).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from tests.audit_fixture import AuditLab, standard_history
from tests.conftest import cli_env

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-cli")
    lab = AuditLab(root)
    idx = standard_history(lab)
    bundle = lab.export("clean")
    ca = root / "ca.pem"
    ca.write_bytes(lab.fed.ca_pem)
    lab.close()
    return lab, idx, bundle, ca


def run(*args):
    """The real program in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "ffsecure", "audit", *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )


def invoke(*args):
    """The same command in-process; returns (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from ffsecure.cli import cli

    r = CliRunner().invoke(cli, ["audit", *map(str, args)], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_verify_clean_bundle_exits_zero_with_a_summary(world):
    lab, idx, bundle, ca = world
    p = run("verify", bundle, "--ca", ca)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (
        "VERIFIED" in p.stdout
        and "checkpoint-roots" in p.stdout
        and "module-signatures" in p.stdout
    )
    code, stdout, _ = invoke("verify", bundle, "--ca", ca, "--json")
    assert code == 0
    out = json.loads(stdout)
    assert (
        out["verdict"] == "VERIFIED"
        and out["findings"] == []
        and out["tree_size"] == idx["pub2"] + 1
    )
    assert [c["name"] for c in out["checks"]][:2] == ["trust-anchor", "entries"]


def test_verify_tampered_bundle_exits_three_with_findings(world, tmp_path):
    lab, idx, bundle, ca = world
    t = tmp_path / "t"
    shutil.copytree(bundle, t)
    lines = (t / "entries.jsonl").read_bytes()[:-1].split(b"\n")
    i = idx["retire_ds1"]
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    (t / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    code, stdout, _ = invoke("verify", t, "--ca", ca)
    assert code == 3
    assert "FAILED" in stdout and "E_AUDIT_REORDERED" in stdout and f"entry {i}" in stdout
    j = run("verify", t, "--ca", ca, "--json")
    assert j.returncode == 3, j.stderr
    out = json.loads(j.stdout)
    assert out["verdict"] == "FAILED"
    f = [x for x in out["findings"] if x["code"] == "E_AUDIT_REORDERED"][0]
    assert f["entry"] == i and f["entries"] == [i, i + 1] and f["checkpoint"] == idx["pub2"] + 1


def test_verify_with_trusted_checkpoint_option(world, tmp_path):
    lab, idx, bundle, ca = world
    cp = tmp_path / "receipt-3"
    cp.write_bytes((bundle / "checkpoints" / "3").read_bytes())
    assert invoke("verify", bundle, "--ca", ca, "--trusted-checkpoint", cp)[0] == 0
    receipt = tmp_path / "receipt.json"  # a site's receipt works as well
    receipt.write_text(json.dumps(lab.receipts[idx["c"]].to_dict()))
    code, stdout, _ = invoke(
        "verify", bundle, "--ca", ca, "--trusted-checkpoint", receipt, "--json"
    )
    detail = json.loads(stdout)["checks"][5]["detail"]
    assert code == 0 and detail == "1 trusted checkpoint(s), all prefixes of this log"
    cp.write_bytes((bundle / "checkpoints" / "3").read_bytes().replace(b"\n3\n", b"\n2\n", 1))
    code, stdout, _ = invoke("verify", bundle, "--ca", ca, "--trusted-checkpoint", cp, "--json")
    assert code == 3
    assert [f["code"] for f in json.loads(stdout)["findings"]] == ["E_AUDIT_TRUSTED_CHECKPOINT"]


def test_unreadable_inputs_are_errors_not_findings(world, tmp_path):
    lab, idx, bundle, ca = world
    p = run("verify", tmp_path / "nope", "--ca", ca)  # fails before anything heavy is imported
    assert p.returncode == 1 and "error[E_AUDIT_BUNDLE]" in p.stderr and "hint:" in p.stderr
    code, _, stderr = invoke("verify", bundle, "--ca", tmp_path / "missing.pem")
    assert code == 1 and "error[E_CONFIG]" in stderr
    code, _, stderr = invoke("verify", bundle)
    assert code == 2 and "--ca" in stderr
    (tmp_path / "empty").mkdir()
    code, _, stderr = invoke("verify", tmp_path / "empty", "--ca", ca, "--json")
    assert code == 1 and json.loads(stderr)["error"]["code"] == "E_AUDIT_BUNDLE"


def test_report_without_ca_is_written_and_fails_on_the_unpinned_anchor(world, tmp_path):
    """The bundle's own ca.pem is the exporter's choice: a report made with it is written, but its
    verdict is FAILED with E_AUDIT_CA_UNPINNED (it was VERIFIED with a warning)."""
    lab, idx, bundle, ca = world
    out = tmp_path / "sub" / "report.html"
    code, stdout, _ = invoke("report", bundle, "-o", out, "--json")
    assert code == 0
    meta = json.loads(stdout)
    assert meta["verdict"] == "FAILED" and meta["errors"] == 1
    html = out.read_text()
    assert "E_AUDIT_CA_UNPINNED" in html and html.startswith("<!DOCTYPE html>")
    assert list(out.parent.iterdir()) == [out]  # no temporary file left


def test_a_file_that_is_no_receipt_or_note_is_a_usage_error_never_a_finding(world, tmp_path):
    """The auditor's own mistake (the site's module.json, other JSON, a binary, a truncated
    note) is exit 2, E_USAGE, naming what the file looks like and what to pass: no verdict."""
    lab, idx, bundle, ca = world
    record = {
        "module_id": idx["a"],
        "status": "registered",
        "created_at": "2026-11-22T10:00:00Z",
        "classes": [0, 1],
        "n_train": 10,
        "data_fingerprint": "0" * 64,
        "train": {},
        "receipt": lab.receipts[idx["a"]].to_dict(),
    }
    note = (bundle / "checkpoints" / "3").read_bytes()
    surrogate = lab.receipts[idx["a"]].to_dict()
    surrogate["checkpoint"] += "\ud800"  # json.dumps writes the escape; no UTF-8 holds it
    wrong = {
        "surrogate.json": (json.dumps(surrogate).encode(), "checkpoint is not UTF-8 text"),
        "module.json": (json.dumps(record, indent=2).encode(), "module record (module.json)"),
        "other.json": (b'{"checkpoint": 3}', "JSON of another kind"),
        "list.json": (b"[1, 2]", "JSON of another kind"),
        "weights.bin": (bytes(range(256)), "a binary file"),
        "cut.note": (note[: note.index(b"\n\n")], "text of another kind"),
    }
    for name, (data, looks_like) in wrong.items():
        path = tmp_path / name
        path.write_bytes(data)
        code, stdout, stderr = invoke("verify", bundle, "--ca", ca, "--trusted-checkpoint", path)
        assert code == 2, (name, stdout, stderr)
        assert "error[E_USAGE]" in stderr and looks_like in stderr, (name, stderr)
        assert "site-node receipts export" in stderr and "FAILED" not in stdout
    code, _, stderr = invoke(
        "verify", bundle, "--ca", ca, "--trusted-checkpoint", tmp_path / "module.json", "--json"
    )
    assert code == 2 and json.loads(stderr)["error"]["code"] == "E_USAGE"
    p = run("report", bundle, "-o", tmp_path / "r.html", "--trusted-checkpoint", path)
    assert p.returncode == 2 and "error[E_USAGE]" in p.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_real_receipt_the_exported_log_does_not_hold_is_a_finding(world, tmp_path):
    """What the exporter controls (dropping the site's entry, swapping it) stays evidence:
    exit 3, E_AUDIT_FORK, even though each receipt is a well-formed file."""
    lab, idx, bundle, ca = world
    receipt = lab.receipts[idx["c"]]
    kept = tmp_path / "c.receipt.json"
    kept.write_text(json.dumps(receipt.to_dict()))
    # the exporter drops the site's entry and everything after it (re-signed checkpoints kept)
    cut = tmp_path / "cut"
    shutil.copytree(bundle, cut)
    lines = (cut / "entries.jsonl").read_bytes()[:-1].split(b"\n")[: receipt.index]
    (cut / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    for p in (cut / "checkpoints").iterdir():
        if int(p.name) > receipt.index:
            p.unlink()
    alone = {
        f["code"] for f in json.loads(invoke("verify", cut, "--ca", ca, "--json")[1])["findings"]
    }
    code, stdout, _ = invoke("verify", cut, "--ca", ca, "--trusted-checkpoint", kept, "--json")
    assert code == 3
    codes = {f["code"] for f in json.loads(stdout)["findings"]}
    assert "E_AUDIT_FORK" not in alone and codes - alone == {"E_AUDIT_FORK"}, (alone, codes)
    # a receipt whose entry is another one of the log: the checkpoint matches, the entry not
    swapped = receipt.to_dict() | {"entry": lab.receipts[idx["a"]].to_dict()["entry"]}
    kept.write_text(json.dumps(swapped))
    code, stdout, _ = invoke("verify", bundle, "--ca", ca, "--trusted-checkpoint", kept, "--json")
    assert code == 3, stdout
    finding = json.loads(stdout)["findings"][0]
    assert finding["code"] == "E_AUDIT_FORK" and finding["entry"] == receipt.index


def test_report_on_the_terminal_says_what_the_html_says_about_the_ca(world, tmp_path):
    """Without --ca the terminal line is FAILED and says why, as the report's verdict does;
    with the CA you hold it is VERIFIED in both."""
    lab, idx, bundle, ca = world
    code, stdout, _ = invoke("report", bundle, "-o", tmp_path / "unpinned.html")
    assert code == 0 and stdout.startswith("FAILED: wrote ") and "VERIFIED" not in stdout
    assert "E_AUDIT_CA_UNPINNED" in stdout and "CA was not pinned" in stdout and "--ca" in stdout
    html = (tmp_path / "unpinned.html").read_text()
    assert '<div class="big">FAILED</div>' in html and "E_AUDIT_CA_UNPINNED" in html
    code, stdout, _ = invoke("report", bundle, "--ca", ca, "-o", tmp_path / "pinned.html")
    assert code == 0 and stdout.startswith("VERIFIED: wrote ") and "0 finding(s))" in stdout
    assert '<div class="big">VERIFIED</div>' in (tmp_path / "pinned.html").read_text()
