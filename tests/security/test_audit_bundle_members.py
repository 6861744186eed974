"""The audit bundle loader reads only regular files inside the bundle, each within its cap.

The exporter chooses every file: a member that is a symbolic link (to /proc/kallsyms,
to a file outside the bundle), a FIFO (a read that never ends) or a folder is never
followed or read. In a required place (log.vkey, entries.jsonl, checkpoints/) it is
E_AUDIT_BUNDLE; elsewhere a warning, E_AUDIT_BUNDLE_MEMBER, and the member counts as
absent, which its own check judges. A member longer than its cap is E_AUDIT_BUNDLE
whatever its st_size says. The bundle path itself may be a link.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from ffsecure.audit import audit_bundle, load_bundle
from ffsecure.audit.bundle import MAX_MODULE_RECORD, BundleError
from ffsecure.errors import LedgerError
from ffsecure.ledger import verify_bundle_log
from tests.audit_fixture import AuditLab

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    lab = AuditLab(root / "lab")
    lab.register("st-mary", (0, 1), seed=1)
    bundle = lab.export("clean")
    outside = root / "outside.json"
    outside.write_bytes((bundle / "modules").iterdir().__next__().read_bytes())
    ca_pem = lab.fed.ca_pem
    lab.close()
    return bundle, ca_pem, outside


@pytest.fixture
def copy(world, tmp_path):
    bundle, _, _ = world
    target = tmp_path / "b"
    shutil.copytree(bundle, target)
    return target


def _codes(result, severity=None):
    return {f.code for f in result.findings if severity is None or f.severity == severity}


def test_a_normal_bundle_and_a_linked_bundle_path_still_verify(world, tmp_path):
    bundle, ca_pem, _ = world
    link = tmp_path / "link-to-bundle"
    link.symlink_to(bundle)
    for path in (bundle, link):
        result = audit_bundle(load_bundle(path), ca_pem=ca_pem)
        assert result.verdict == "VERIFIED", [f.message for f in result.findings]
        assert load_bundle(path).irregular == {}
    assert verify_bundle_log(link).size == len(load_bundle(bundle).entries)


def test_a_module_record_linked_to_procfs_is_not_read(world, copy):
    if not os.access("/proc/kallsyms", os.R_OK):
        pytest.skip("no /proc/kallsyms")
    _, ca_pem, _ = world
    record = sorted((copy / "modules").iterdir())[0]
    record.unlink()
    record.symlink_to("/proc/kallsyms")
    bundle = load_bundle(copy)
    assert bundle.modules == {}
    assert bundle.irregular == {f"modules/{record.name}": "a symbolic link"}
    result = audit_bundle(bundle, ca_pem=ca_pem)
    assert result.verdict == "FAILED"
    assert "E_AUDIT_BUNDLE_MEMBER" in _codes(result, "warning")
    assert "E_AUDIT_MODULE_RECORD" in _codes(result)  # the registered module has no record


def test_a_module_record_linked_to_its_own_bytes_outside_is_not_followed(world, copy):
    _, ca_pem, outside = world
    record = sorted((copy / "modules").iterdir())[0]
    record.unlink()
    record.symlink_to(outside)
    result = audit_bundle(load_bundle(copy), ca_pem=ca_pem)
    assert result.verdict == "FAILED" and "E_AUDIT_BUNDLE_MEMBER" in _codes(result)


@pytest.mark.parametrize("folder", ["modules", "checkpoints", "lineage"])
def test_a_fifo_in_a_bundle_folder_is_a_warning_and_never_blocks(world, copy, folder):
    _, ca_pem, _ = world
    (copy / folder).mkdir(exist_ok=True)
    name = (
        "0" * 32 + ".json"
        if folder == "modules"
        else "9"
        if folder == "checkpoints"
        else ("a" * 64 + ".json")
    )
    os.mkfifo(copy / folder / name)
    (copy / folder / "sub.json").mkdir()  # a folder is not read either
    bundle = load_bundle(copy)  # an open() or read() of the FIFO would hang here
    assert bundle.irregular[f"{folder}/{name}"] == "a FIFO"
    result = audit_bundle(bundle, ca_pem=ca_pem)
    warnings = [f for f in result.findings if f.code == "E_AUDIT_BUNDLE_MEMBER"]
    assert warnings and all(f.severity == "warning" for f in warnings)


@pytest.mark.parametrize("name", ["log.vkey", "entries.jsonl"])
def test_a_required_part_that_is_a_link_or_fifo_is_refused(world, copy, name):
    (copy / name).unlink()
    os.mkfifo(copy / name)
    with pytest.raises(BundleError, match="a FIFO"):
        load_bundle(copy)
    with pytest.raises(LedgerError, match="a FIFO"):
        verify_bundle_log(copy)
    (copy / name).unlink()
    (copy / name).symlink_to(world[0] / name)
    with pytest.raises(BundleError, match="a symbolic link"):
        load_bundle(copy)
    with pytest.raises(LedgerError, match="a symbolic link"):
        verify_bundle_log(copy)


def test_a_linked_checkpoints_folder_is_refused(world, copy):
    shutil.rmtree(copy / "checkpoints")
    (copy / "checkpoints").symlink_to(world[0] / "checkpoints")
    with pytest.raises(BundleError, match="a symbolic link"):
        load_bundle(copy)
    with pytest.raises(LedgerError):
        verify_bundle_log(copy)


def test_an_optional_part_linked_elsewhere_is_left_unread(world, copy):
    (copy / "federation.json").unlink()
    (copy / "federation.json").symlink_to(world[0] / "federation.json")
    bundle = load_bundle(copy)
    assert bundle.federation_json is None
    assert bundle.irregular == {"federation.json": "a symbolic link"}


def test_a_member_past_its_cap_is_refused_whatever_st_size_says(copy, monkeypatch):
    """A file that grows after it was stat-ed (or a /proc file, st_size 0) is read only to
    its cap: here stat says 10 bytes and the record holds more than the cap."""
    record = sorted((copy / "modules").iterdir())[0]
    record.write_bytes(b"x" * (MAX_MODULE_RECORD + 1))
    real_stat = os.stat

    def small_stat(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        return os.stat_result((*st[:6], 10, *st[7:])) if str(path) == str(record) else st

    monkeypatch.setattr(os, "stat", small_stat)
    with pytest.raises(BundleError, match=str(MAX_MODULE_RECORD)):
        load_bundle(copy)


@pytest.mark.parametrize("empty", [False, True], ids=["a-copy", "empty"])
@pytest.mark.parametrize(
    ("folder", "cap"),
    [("modules", "MAX_MODULES_TOTAL"), ("checkpoints", "MAX_CHECKPOINTS_TOTAL")],
)
def test_a_folder_past_its_total_is_refused_not_held_in_memory(
    world, copy, monkeypatch, folder, cap, empty
):
    """Each member is within its own cap, but the exporter chose how many there are: the
    folder's total is bounded too, each member charged MEMBER_OVERHEAD beyond its bytes so
    that empty ones count (here the cap is lowered to the clean bundle's charge, then one
    more member is added, a copy or empty). ``ledger verify --bundle`` bounds checkpoints
    the same way."""
    import ffsecure.audit.bundle as bundle_mod
    import ffsecure.ledger.verify as verify_mod

    members = sorted((copy / folder).iterdir())
    charge = sum(p.stat().st_size + verify_mod.MEMBER_OVERHEAD for p in members)
    monkeypatch.setattr(bundle_mod, cap, charge)
    if folder == "checkpoints":
        monkeypatch.setattr(verify_mod, cap, charge)
    assert load_bundle(copy).path == copy  # exactly at the cap: read
    if folder == "checkpoints":
        assert verify_bundle_log(copy).size == len(load_bundle(copy).entries)
    extra = "0" * 32 + ".json" if folder == "modules" else "999999"
    (copy / folder / extra).write_bytes(b"" if empty else members[0].read_bytes())
    with pytest.raises(BundleError, match=rf"{folder}/ holds more than the {charge} bytes"):
        load_bundle(copy)
    if folder == "checkpoints":
        with pytest.raises(LedgerError, match=f"more than the {charge} bytes"):
            verify_bundle_log(copy)


def test_the_cli_reports_a_fifo_member_as_a_warning(world, copy):
    from click.testing import CliRunner

    from ffsecure.cli import cli

    bundle, ca_pem, _ = world
    os.mkfifo(copy / "checkpoints" / "7")
    ca = copy.parent / "ca.pem"
    ca.write_bytes(ca_pem)
    result = CliRunner().invoke(cli, ["audit", "verify", str(copy), "--ca", str(ca), "--json"])
    out = json.loads(result.stdout)
    assert any(f["code"] == "E_AUDIT_BUNDLE_MEMBER" for f in out["findings"]), out


@pytest.mark.parametrize("folder", ["modules", "checkpoints", "lineage"])
def test_a_member_name_that_is_not_utf8_is_named_in_a_finding_not_a_traceback(world, copy, folder):
    """The exporter picks file names too: b"\\xff.json" is no text; verify and report print
    and render every finding (no UnicodeEncodeError from the terminal or the HTML)."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    bundle, ca_pem, _ = world
    (copy / folder).mkdir(exist_ok=True)
    fd = os.open(os.fsencode(copy / folder) + b"/\xff.json", os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    ca = copy.parent / "ca.pem"
    ca.write_bytes(ca_pem)
    env = {**cli_env(), "PYTHONIOENCODING": "utf-8"}
    verify = subprocess.run(
        [sys.executable, "-m", "ffsecure", "audit", "verify", str(copy), "--ca", str(ca)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verify.returncode in (0, 3) and "Traceback" not in verify.stderr, verify.stderr
    assert "\\xff.json" in verify.stdout or folder == "checkpoints"
    html = copy.parent / "report.html"
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "ffsecure",
            "audit",
            "report",
            str(copy),
            "--ca",
            str(ca),
            "-o",
            str(html),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode in (0, 3) and "Traceback" not in report.stderr, report.stderr
    assert html.is_file()
