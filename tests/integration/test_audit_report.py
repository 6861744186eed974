"""The HTML report in a real browser: headless Chromium renders it, with no console message.

Skipped only when Chromium is not installed (`scripts/ensure-chromium.sh` installs
Debian's package), and never in CI (`CI=true`): there a missing browser fails the
tests, so that the browser check cannot silently stop running. With FFSECURE_WRITE_SCREENSHOT=1 the
screenshots are also written to docs/images/audit-report.png (clean) and
docs/images/audit-report-failed.png (failed).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ffsecure.audit import audit_bundle, load_bundle, render_html
from tests.audit_fixture import AuditLab, standard_history
from tests.conftest import REPO

torch.set_num_threads(1)

CHROMIUM = shutil.which("chromium") or (shutil.which("chromium-browser"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not IN_CI,
    reason="chromium is not installed (run scripts/ensure-chromium.sh)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(page: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, (
        "chromium is not installed: CI must run the browser test (scripts/ensure-chromium.sh)"
    )
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


def console_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-report")
    lab = AuditLab(root)
    try:
        idx = standard_history(lab)
        from ffsecure.dp import compute_epsilon

        params = {
            "delta": 1e-5,
            "noise_multiplier": 1.1,
            "sample_rate": 0.02,
            "steps": 250,
            "accountant": "rdp",
        }
        eps = compute_epsilon(**{k: v for k, v in params.items()})
        idx["dp"] = lab.register(
            "st-john",
            (3,),
            seed=4,
            dp={"epsilon": eps, **params},
            privacy_report={"v": 1, "membership_auroc": 0.51, "near_copy_fraction": 0.0},
        )
        time.sleep(1.1)  # the supersession comes after every signature above
        idx["revoked"] = lab.revoke("st-john", "superseded")
        clean = lab.export("clean")
        # the failed bundle: a deletion request the aggregator never carried out, and two entries
        # swapped
        idx["unserved"] = lab.request_deletion(idx["b"], "st-john")
        bad = lab.export("bad")
        ca = lab.fed.ca_pem
    finally:
        lab.close()
    ok = audit_bundle(load_bundle(clean), ca_pem=ca)
    assert ok.ok, [f.to_dict() for f in ok.findings]
    clean_html = root / "clean.html"
    clean_html.write_text(render_html(ok), encoding="utf-8")
    lines = (bad / "entries.jsonl").read_bytes()[:-1].split(b"\n")
    i = idx["retire_ds1"]
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    (bad / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    failed = audit_bundle(load_bundle(bad), ca_pem=ca)
    bad_html = root / "bad.html"
    bad_html.write_text(render_html(failed), encoding="utf-8")
    return idx, ok, clean_html, failed, bad_html


def test_report_is_self_contained(reports):
    idx, ok, clean_html, failed, bad_html = reports
    for page in (clean_html, bad_html):
        html = page.read_text()
        assert "<script" not in html.lower()
        assert not re.search(r"(?:src|href)\s*=\s*['\"](?!data:)", html), "no external resource"
        assert "http://" not in html and "https://" not in html
        assert "default-src 'none'" in html  # and the browser would refuse any load anyway


@needs_chromium
def test_console_check_catches_a_console_error(tmp_path):
    # The console check below is only worth something if it sees messages when there are some.
    page = tmp_path / "noisy.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('audit-probe-42')</script></body></html>"
    )
    proc = chromium(page, tmp_path, "--dump-dom")
    assert any("audit-probe-42" in line for line in console_lines(proc)), proc.stderr[-2000:]


@needs_chromium
def test_clean_report_renders_in_chromium(reports, tmp_path):
    idx, ok, clean_html, failed, bad_html = reports
    dom = chromium(clean_html, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_lines(dom) == []
    text = dom.stdout
    assert re.search(r'class="verdict ok"><div class="big">VERIFIED</div>', text)
    for section in (
        "Findings",
        "Checks",
        "Timeline",
        "Sites",
        "Lineage of the current classifier",
        "Deletions",
    ):
        assert f">{section}</h2>" in text
    assert text.count("<svg") == 1 and "timeline of the federation" in text
    assert ">st-mary " in text and ">st-john " in text
    assert "ε = <b>3.9</b>" in text and "membership_auroc" in text  # DP and the privacy report
    assert "classifier clf-2" in text and "dataset ds-2" in text
    assert f"module <code>{idx['c']}</code>" in text  # the deletion, with its proof
    assert f"Inclusion proof</b> (RFC 9162) of entry {idx['deleted_c']}" in text
    assert "verifies" in text
    assert "cert revoked: superseded" in text
    assert "re-accounted ε = " in text
    shot = tmp_path / "report.png"
    proc = chromium(
        clean_html, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars"
    )
    assert proc.returncode == 0 and console_lines(proc) == []
    assert png_size(shot) == (1280, 2000)
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    if os.environ.get("FFSECURE_WRITE_SCREENSHOT") == "1":
        target = REPO / "docs" / "images" / "audit-report.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


@needs_chromium
def test_failed_report_shows_the_findings_in_chromium(reports, tmp_path):
    idx, ok, clean_html, failed, bad_html = reports
    dom = chromium(bad_html, tmp_path, "--dump-dom")
    assert dom.returncode == 0 and console_lines(dom) == []
    text = dom.stdout
    assert re.search(r'class="verdict bad"><div class="big">FAILED</div>', text)
    i = idx["retire_ds1"]
    assert "E_AUDIT_REORDERED" in text and f"entry {i} (classifier.retired)" in text
    assert "E_AUDIT_DELETION_MISSING" in text
    assert f"entry {idx['unserved']} (module.deletion_requested), module {idx['b'][:12]}" in text
    assert "No inclusion proof: the log itself did not verify." in text
    assert {f.code for f in failed.errors} == {"E_AUDIT_REORDERED", "E_AUDIT_DELETION_MISSING"}
    shot = tmp_path / "report-failed.png"
    proc = chromium(
        bad_html, tmp_path, f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars"
    )
    assert proc.returncode == 0 and console_lines(proc) == []
    assert png_size(shot) == (1280, 1400) and shot.stat().st_size > 50_000
    if os.environ.get("FFSECURE_WRITE_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "images" / "audit-report-failed.png")
