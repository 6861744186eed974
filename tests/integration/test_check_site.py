"""`site-node check` as a real process against a real `aggregator serve` (loopback, mTLS).

One federation and one running aggregator for the module; each test writes a
site (key, certificate, CA, manifest installed in a state directory) and a
``site.toml`` that breaks one thing, runs ``python -m site_node check``, and
asserts the exit status, the line that must fail (or warn) with its fix, and
that ``--json`` says the same.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ffsecure.federation import create_signed_manifest
from site_node.exitcodes import EXIT_CHECK_FAILED
from tests.check_cli import not_passed, run_check
from tests.conftest import cli_env
from tests.dicom_fixture import assert_no_identifiers, write_digits_dicom
from tests.federation_fixture import build_federation
from tests.integration.test_site_node import DIGITS, Aggregator, free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    fed = build_federation(tmp_path_factory.mktemp("check") / "fed", labels=DIGITS, sites=())
    fed.add_site("st-mary", days=365)
    return fed


@pytest.fixture(scope="module")
def agg(fed):
    server = Aggregator(fed, free_port()).start()
    yield server
    server.stop()


def make_site(
    fed,
    root: Path,
    creds,
    *,
    manifest: bytes | None = None,
    extra: str = "",
    endpoint: str,
    data: str = 'source = "digits"',
) -> Path:
    """A site whose state holds ``creds`` (key + certificate) as `install-cert` leaves it."""
    state = root / "state"
    (state / "keys").mkdir(parents=True)
    state.chmod(0o700)
    (state / "keys").chmod(0o700)
    (state / "keys" / "site.key").write_bytes(creds.key_path.read_bytes())
    (state / "keys" / "site.key").chmod(0o600)
    (state / "site.pem").write_bytes(creds.cert_pem)
    (state / "ca.pem").write_bytes(fed.ca_pem)
    (state / "federation.json").write_bytes(manifest or fed.signed_manifest)
    cfg = root / "site.toml"
    cfg.write_text(f"""\
[site]
federation_id = "fedtest"
site_id = "{creds.site_id}"
state_dir = "state"

[aggregator]
endpoint = "{endpoint}"
server_name = "localhost"
max_attempts = 1
{extra}
[data]
{data}
""")
    return cfg


def check(cfg: Path, *, text_too: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    """``site-node check --json`` (and, with ``text_too``, the text run, which must agree)."""
    return run_check(["site_node", "check", "--config", str(cfg)], text_too=text_too)


def test_a_healthy_site_passes_every_check(fed, agg, tmp_path):
    cfg = make_site(fed, tmp_path, fed.sites["st-mary"], endpoint=agg.address)
    proc, report = check(cfg, text_too=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["summary"] == {
        "verdict": "PASS",
        "pass": len(report["checks"]),
        "warn": 0,
        "fail": 0,
        "skipped": [],
    }
    names = {c["check"] for c in report["checks"]}
    assert {
        "config",
        "site key",
        "site certificate",
        "site certificate expiry",
        "CA certificate expiry",
        "federation manifest",
        "DP policy",
        "data",
        "aggregator",
        "ledger",
        "device",
    } <= names
    data = next(c for c in report["checks"] if c["check"] == "data")
    assert "0 " in data["detail"] and "10 classes" in data["detail"]


def test_an_expired_certificate_fails_and_the_network_step_is_not_run(fed, agg, tmp_path):
    cfg = make_site(fed, tmp_path, fed.expired_site("st-old"), endpoint=agg.address)
    proc, report = check(cfg, text_too=True)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["site certificate expiry"]
    assert "EXPIRED" in bad["site certificate expiry"]["detail"]
    assert "site-node enroll" in bad["site certificate expiry"]["fix"]
    assert report["summary"]["skipped"] == ["federation", "data", "aggregator"]
    assert (
        "FAIL  site certificate expiry" in proc.stdout
        and "fix: run `site-node enroll" in proc.stdout
    )


@pytest.mark.slow
def test_a_certificate_expiring_in_ten_days_warns_and_exits_zero(fed, agg, tmp_path):
    cfg = make_site(fed, tmp_path, fed.add_site("st-soon", days=10), endpoint=agg.address)
    # Times have whole seconds (timefmt.utcnow): a check started in the second the certificate
    # was issued (the trust step runs before torch is imported) sees exactly 10 days left.
    time.sleep(1.0)
    proc, report = check(cfg)
    assert proc.returncode == 0
    bad = not_passed(report)
    assert list(bad) == ["site certificate expiry"]
    assert bad["site certificate expiry"]["status"] == "WARN"
    assert "9 days left" in bad["site certificate expiry"]["detail"]
    assert report["summary"]["verdict"] == "WARN"


def test_a_missing_data_folder_fails_with_its_fix(fed, agg, tmp_path):
    cfg = make_site(
        fed,
        tmp_path,
        fed.sites["st-mary"],
        endpoint=agg.address,
        data=f'source = "folder:{tmp_path / "no-such-folder"}"',
    )
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["data"]
    assert "E_DATA_MISSING" in bad["data"]["detail"] and bad["data"]["fix"] == "check the path"


def _npz(path: Path, *, labels: int = 10, shape=(16, 16)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(n) % labels
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_labels_outside_the_label_space_fail(fed, agg, tmp_path):
    data = _npz(tmp_path / "twelve.npz", labels=12)
    cfg = make_site(
        fed,
        tmp_path,
        fed.sites["st-mary"],
        endpoint=agg.address,
        data=f'source = "npz:{data}"\nlabel_match = "index"',
    )
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["data"] and "E_DATA_LABELS" in bad["data"]["detail"]
    assert "label_match" in bad["data"]["fix"]


@pytest.mark.slow
def test_images_of_another_size_warn_and_unconvertible_images_fail(fed, agg, tmp_path):
    big = _npz(tmp_path / "big.npz", shape=(32, 32))
    cfg = make_site(
        fed,
        tmp_path / "a",
        fed.sites["st-mary"],
        endpoint=agg.address,
        data=f'source = "npz:{big}"\nlabel_match = "index"',
    )
    proc, report = check(cfg)
    assert proc.returncode == 0
    bad = not_passed(report)
    assert list(bad) == ["image shape"] and bad["image shape"]["status"] == "WARN"
    assert "1x32x32" in bad["image shape"]["detail"] and "1x16x16" in bad["image shape"]["fix"]
    rgba = _npz(tmp_path / "rgba.npz", shape=(16, 16, 4))
    cfg = make_site(
        fed,
        tmp_path / "b",
        fed.sites["st-mary"],
        endpoint=agg.address,
        data=f'source = "npz:{rgba}"\nlabel_match = "index"',
    )
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED
    assert list(not_passed(report)) == ["data"]
    assert "(N,H,W,1|3)" in not_passed(report)["data"]["detail"]


def test_an_aggregator_that_is_down_fails_with_the_endpoint_in_the_fix(fed, tmp_path):
    down = f"127.0.0.1:{free_port()}"
    cfg = make_site(fed, tmp_path, fed.sites["st-mary"], endpoint=down)
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["aggregator"]
    assert "E_RPC_UNAVAILABLE" in bad["aggregator"]["detail"]
    assert f"`aggregator serve` runs at {down}" in bad["aggregator"]["fix"]


def test_a_dp_policy_the_config_does_not_meet_fails(fed, agg, tmp_path):
    strict = dataclasses.replace(
        fed.manifest, dp_policy={"required": True, "max_epsilon": 8.0, "delta": 1e-5}
    )
    cfg = make_site(
        fed,
        tmp_path,
        fed.sites["st-mary"],
        endpoint=agg.address,
        manifest=create_signed_manifest(strict, fed.ca),
        extra="[dp]\nenabled = false\n",
    )
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["DP policy"]
    assert "DP required, max epsilon 8.0" in bad["DP policy"]["detail"]
    assert "remove `enabled = false`" in bad["DP policy"]["fix"]


def test_a_federation_that_pins_patient_dp_fails_a_site_per_image(fed, agg, tmp_path):
    pinned = dataclasses.replace(
        fed.manifest,
        dp_policy={"required": True, "max_epsilon": 8.0, "delta": 1e-5, "privacy_unit": "patient"},
    )
    cfg = make_site(
        fed,
        tmp_path,
        fed.sites["st-mary"],
        endpoint=agg.address,
        manifest=create_signed_manifest(pinned, fed.ca),
    )
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["DP policy"]
    assert "a DP claim must be per patient" in bad["DP policy"]["detail"]
    assert "data.privacy_unit: 'image'" in bad["DP policy"]["detail"]
    assert 'privacy_unit = "patient"' in bad["DP policy"]["fix"]


def test_a_dp_site_fails_a_privacy_policy_the_federation_bounds_no_dp_claim_for(fed, agg, tmp_path):
    """A DP module signs no measured figure; without max_epsilon and delta its claim cannot
    stand in for them, so the site would refuse every module it trains."""
    own_dp = "[dp]\nenabled = true\ntarget_epsilon = 1.0\n"
    unbounded = dataclasses.replace(fed.manifest, privacy_policy={"max_near_copy_fraction": 0.1})
    assert unbounded.dp_policy["required"] is False and unbounded.dp_policy["max_epsilon"] is None
    cfg = make_site(
        fed,
        tmp_path / "unbounded",
        fed.sites["st-mary"],
        endpoint=agg.address,
        manifest=create_signed_manifest(unbounded, fed.ca),
        extra=own_dp,
    )
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["privacy policy"]
    assert "bounds no DP claim" in bad["privacy policy"]["detail"]
    assert "`enabled = false`" in bad["privacy policy"]["fix"]

    bounded = dataclasses.replace(
        unbounded, dp_policy={"required": False, "max_epsilon": 8.0, "delta": 1e-5}
    )
    cfg = make_site(
        fed,
        tmp_path / "bounded",
        fed.sites["st-mary"],
        endpoint=agg.address,
        manifest=create_signed_manifest(bounded, fed.ca),
        extra=own_dp,
    )
    proc, report = check(cfg)
    assert proc.returncode == 0 and not not_passed(report), proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_gpu_device_torch_cannot_see_fails_naming_the_gpu(fed, agg, tmp_path):
    import torch

    cfg = make_site(
        fed,
        tmp_path,
        fed.sites["st-mary"],
        endpoint=agg.address,
        extra='[train]\ndevice = "cuda:7"\n',
    )
    proc, report = check(cfg)
    bad = not_passed(report)
    if torch.cuda.device_count() > 7:  # a machine with eight GPUs passes
        assert proc.returncode == 0 and not bad
        return
    assert proc.returncode == EXIT_CHECK_FAILED
    assert list(bad) == ["device"]
    assert 'train.device = "cuda:7"' in bad["device"]["detail"]
    assert "PrivateDevices" in bad["device"]["fix"] and "NVIDIA driver" in bad["device"]["fix"]


def test_a_config_that_does_not_parse_is_a_fail_line_not_a_traceback(tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text("[site]\nfederation_id = 3\n")
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED and "Traceback" not in proc.stderr
    assert list(not_passed(report)) == ["config"]
    assert report["summary"]["skipped"] == [
        "state",
        "trust",
        "federation",
        "data",
        "aggregator",
        "device",
    ]


def test_status_shows_days_left_and_warns_under_thirty_days(fed, tmp_path):
    cfg = make_site(fed, tmp_path, fed.add_site("st-later", days=10), endpoint="127.0.0.1:1")

    def status(*extra):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "site_node",
                "status",
                "--config",
                str(cfg),
                "--offline",
                *extra,
            ],
            cwd=REPO,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    expiry = {e["what"]: e for e in json.loads(status("--json").stdout)["expiry"]}
    assert expiry["site certificate"]["state"] == "warn"
    assert 9 < expiry["site certificate"]["days_left"] <= 10
    assert expiry["CA certificate"]["state"] == "ok"
    text = status().stdout
    # whole days, rounded down: 9, or 10 when status runs within the second of issuance
    shown = re.search(r"WARN  site certificate: expires \S+ \((\d+) days left\)", text)
    assert shown is not None and int(shown.group(1)) in (9, 10)
    assert "\nCA certificate: expires" in text


def test_a_dicom_source_is_scanned_with_a_bounded_sample_and_names_no_file(fed, agg, tmp_path):
    written = write_digits_dicom(tmp_path / "pacs", per_class=8)
    cfg = make_site(
        fed,
        tmp_path,
        fed.sites["st-mary"],
        endpoint=agg.address,
        data=f'source = "dicom:{written.root}"',
    )
    proc, report = check(cfg, text_too=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = not_passed(report)
    assert list(bad) == ["image shape"]  # the digits are stored 8x8, the federation's are 16x16
    assert bad["image shape"]["status"] == "WARN"
    assert "stored 1x8x8" in bad["image shape"]["detail"]
    (data,) = (c["detail"] for c in report["checks"] if c["check"] == "data")
    assert f"{len(written.paths)} images in 10 classes" in data
    # SCAN_SAMPLE 64 over 10 classes: 6 files of each class decoded, not all 80
    assert data.endswith("; 60 decoded"), data
    assert_no_identifiers({"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()})


def test_a_dicom_labels_csv_matched_by_index_fails_the_data_check(fed, agg, tmp_path):
    """One row of a labels CSV can add or remove a class, which by index relabels the others."""
    written = write_digits_dicom(tmp_path / "pacs", per_class=2, classes=(0, 1))
    rows = [f"{p.relative_to(written.root).as_posix()},{p.parent.name}" for p in written.paths]
    (written.root / "labels.csv").write_text("\n".join(["file,class", *rows]) + "\n")
    cfg = make_site(
        fed,
        tmp_path,
        fed.sites["st-mary"],
        endpoint=agg.address,
        data=f'source = "dicom:{written.root / "labels.csv"}"\nlabel_match = "index"',
    )
    proc, report = check(cfg)
    assert proc.returncode == EXIT_CHECK_FAILED
    bad = not_passed(report)
    assert list(bad) == ["data"] and "E_CONFIG" in bad["data"]["detail"]
    assert 'label_match = "name"' in bad["data"]["fix"]


@pytest.mark.slow  # the whole site check over DICOM files (about 23 s); make test-all
def test_a_dicom_site_with_several_images_per_patient_warns_with_k_and_the_patient_epsilon(
    fed, agg, tmp_path
):
    from ffsecure import dp as dpmod
    from tests.dicom_fixture import patient_ids

    ids = patient_ids(80, per_patient=4)  # 20 patients of 4 images each
    written = write_digits_dicom(tmp_path / "pacs", per_class=8, patients=ids)
    for unit in ("image", "patient"):
        cfg = make_site(
            fed,
            tmp_path / unit,
            fed.sites["st-mary"],
            endpoint=agg.address,
            extra="[dp]\ntarget_epsilon = 1.0\n",
            data=f'source = "dicom:{written.root}"\nprivacy_unit = "{unit}"',
        )
        proc, report = check(cfg, text_too=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (line,) = (c for c in report["checks"] if c["check"] == "patients")
        assert "80 images of 20 patients" in line["detail"]
        if unit == "image":
            plan = dpmod.plan_mean_embedding(dpmod.DPConfig(target_epsilon=1.0), n=80)
            group = dpmod.release_group_epsilon(plan.noise_multiplier, plan.delta, 4)
            assert line["status"] == "WARN" and "20 of 20 patients" in line["detail"]
            assert "k = 4" in line["detail"] and f"epsilon {group:.2f}" in line["detail"]
            assert 'privacy_unit = "patient"' in line["fix"]
        else:
            assert line["status"] == "PASS" and "one image per patient" in line["detail"]
            (data,) = (c["detail"] for c in report["checks"] if c["check"] == "data")
            assert "20 images in 10 classes" in data
        assert_no_identifiers({"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()})
