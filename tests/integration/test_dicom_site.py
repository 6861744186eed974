"""A site trained from DICOM files as real `site-node` processes, and `simulate --dataset dicom:`.

The DICOM files (tests/dicom_fixture.py) carry distinctive patient names, ids,
a study UID and file names; after training, a `run --once` cycle and the
refused inputs, the state directory and every byte the processes printed (their
logs: site-node logs to stderr) are searched for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ffsecure import data
from ffsecure import dp as dpmod
from site_node.exitcodes import EXIT_REFUSED
from tests import dicom_fixture as fx
from tests.conftest import PYTHON, REPO, cli_env
from tests.federation_fixture import build_federation
from tests.integration.test_simulate import TINY
from tests.integration.test_site_node import setup_site_in_process, site_node, write_site_config

DIGITS = [str(i) for i in range(10)]


def _config(tmp_path: Path, source: str) -> Path:
    cfg = write_site_config(tmp_path, "st-dicom", "127.0.0.1:1", [], attempts=1)
    text = cfg.read_text().replace('source = "digits"', f'source = "{source}"')
    cfg.write_text(text.replace("classes = []\n", ""))
    return cfg


def test_site_trains_from_dicom_and_no_identifier_reaches_state_or_logs(tmp_path):
    fed = build_federation(tmp_path / "fed", labels=DIGITS, sites=())
    digits = fx.write_digits_dicom(tmp_path / "st-dicom" / "pacs", per_class=15, classes=(0, 1, 2))
    cfg = _config(tmp_path, "dicom:pacs")
    setup_site_in_process(fed, cfg, train=False)
    printed: dict[str, bytes] = {}

    def step(name: str, *args: object, check: bool = True) -> subprocess.CompletedProcess:
        proc = site_node("--log-level", "DEBUG", *args, "--config", cfg, check=check)
        printed[f"{name} stdout"], printed[f"{name} stderr"] = (
            proc.stdout.encode(),
            proc.stderr.encode(),
        )
        return proc

    # the site's own privacy check measures it and refuses it: 12 held-out images, fewer than
    # the 20 a figure needs; its report joins the state searched for identifiers below
    proc = step("train", "train", "--json", check=False)
    assert proc.returncode == EXIT_REFUSED, proc.stderr[-3000:]
    trained = json.loads(proc.stdout)
    train_idx, _ = fx.split_like_dicom(digits, 0)  # data.split_seed 0: each file by its hash
    assert trained["classes"] == [0, 1, 2] and trained["n_train"] == len(train_idx)
    assert "fewer than the minimum 20" in trained["error"]["message"]
    assert (
        cfg.parent / "state" / "modules" / trained["module_id"] / "privacy-report.json"
    ).exists()
    step("run", "run", "--once", check=False)  # nothing new to train; the upload cannot connect
    pneumonia = digits.root / "2" / f"{fx.FILE_TAG}-{fx.PATIENT_ID}.dcm"
    pneumonia.write_bytes(b"not DICOM at all " * 40)
    bad = step("bad file", "train", check=False)
    assert bad.returncode != 0 and "E_DICOM" in bad.stderr + bad.stdout
    assert "file #16 in class '2'" in bad.stderr + bad.stdout
    pneumonia.unlink()
    (digits.root / fx.PATIENT_NAME.replace("^", "-")).mkdir()
    fx.save(fx.dicom_dataset(fx.stored_values(digits.images[0])), digits.root / "x" / "y.dcm")
    stray = step("stray class", "train", check=False)
    assert stray.returncode != 0 and "E_DATA_LABELS" in stray.stderr + stray.stdout
    fx.assert_no_identifiers({**printed, **fx.tree_bytes(cfg.parent / "state")})
    # the search itself finds what it looks for
    assert fx.found_identifiers(fx.tree_bytes(digits.root))


def _dp_site(root: Path, unit: str) -> tuple[Path, fx.DigitsDicom]:
    """A DP site (target epsilon 1) over 3 classes x 12 files, 4 files per patient."""
    ids = fx.patient_ids(36, per_patient=4)
    digits = fx.write_digits_dicom(
        root / "st-dicom" / "pacs", per_class=12, classes=(0, 1, 2), patients=ids
    )
    cfg = write_site_config(
        root, "st-dicom", "127.0.0.1:1", [], attempts=1, extra="[dp]\ntarget_epsilon = 1.0\n"
    )
    text = cfg.read_text().replace('source = "digits"', 'source = "dicom:pacs"')
    text = text.replace("classes = []\n", f'privacy_unit = "{unit}"\n')
    cfg.write_text(text)
    return cfg, digits


def _signed_dp(cfg: Path, module_id: str) -> dict:
    from ffsecure.package import SignedPackage
    from site_node.state import StateDir

    state = StateDir(cfg.parent / "state")
    dp = SignedPackage.from_bytes(state.package_path(module_id).read_bytes()).manifest.dp
    assert dp is not None
    return dp


@pytest.mark.slow  # two real DP site trainings (about 24 s); make test-all runs it
def test_the_signed_dp_record_names_the_unit_and_image_mode_warns_with_k(tmp_path):
    fed = build_federation(tmp_path / "fed", labels=DIGITS, sites=())
    printed: dict[str, bytes] = {}
    for unit in ("image", "patient"):
        cfg, _ = _dp_site(tmp_path / unit, unit)
        setup_site_in_process(fed, cfg, train=False)
        proc = site_node("--log-level", "DEBUG", "train", "--json", "--config", cfg)
        printed[f"{unit} stdout"], printed[f"{unit} stderr"] = (
            proc.stdout.encode(),
            proc.stderr.encode(),
        )
        trained = json.loads(proc.stdout)
        dp = _signed_dp(cfg, trained["module_id"])
        assert dp["privacy_unit"] == unit and dp["mechanism"] == "mean-embedding"
        warned = "patients hold more than one training image" in proc.stderr
        if unit == "image":  # the training split: 36 files of 9 patients, 80/20
            assert (
                warned
                and "(at most k = 4)" in proc.stderr
                and 'privacy_unit = "patient"' in proc.stderr
            )
            group = dpmod.release_group_epsilon(dp["noise_multiplier"], dp["delta"], 4)
            assert f"epsilon {group:.2f}" in proc.stderr and group > 3 * dp["epsilon"]
        else:  # 9 patients, one image each, 80/20 split: the warning is not due
            assert not warned and trained["n_train"] < 9
            # privacy-check --module --data: the members are the images it trained on
            from site_node.commands.privacy_check import _from_files
            from site_node.state import StateDir

            package = StateDir(cfg.parent / "state").package_path(trained["module_id"])
            pkg, _, members, _, _ = _from_files(package, f"dicom:{cfg.parent / 'pacs'}", None, 0)
            assert pkg.manifest.dp["privacy_unit"] == "patient"
            assert members[1].numel() == trained["n_train"]
        fx.assert_no_identifiers({**printed, **fx.tree_bytes(cfg.parent / "state")})


def _simulate(dataset: str, out: Path) -> dict:
    proc = subprocess.run(
        [PYTHON, "-m", "ffsecure", "simulate", *TINY, "--dataset", dataset, "--out", str(out)]
        + ["--image-shape", "1,16,16", "--samples-per-class", "40", "--json"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fx.assert_no_identifiers({"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()})
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_simulate_on_dicom_matches_simulate_on_an_npz_of_the_same_images(tmp_path):
    root, npz = tmp_path / "dcm", tmp_path / "same.npz"
    written = subprocess.run(  # the helper as the closing note runs it
        [sys.executable, "-m", "tests.dicom_fixture", str(root), "--per-class", "30"]
        + ["--npz", str(npz), "--seed", "0"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert written.returncode == 0, written.stderr
    shape = (1, 16, 16)
    loaded = data.load_dataset(f"dicom:{root}", image_shape=shape, seed=0)
    same = data.load_dataset(f"npz:{npz}", image_shape=shape)
    assert loaded.train_x.equal(same.train_x) and loaded.test_x.equal(same.test_x)
    assert loaded.train_y.equal(same.train_y) and loaded.test_y.equal(same.test_y)
    by_dicom = _simulate(f"dicom:{root}", tmp_path / "sim-dicom")
    by_npz = _simulate(f"npz:{npz}", tmp_path / "sim-npz")
    for method in ("centralized", "fedavg", "federatedfactory"):
        assert by_dicom[method]["accuracy"] == by_npz[method]["accuracy"], method
    assert by_dicom["dataset"]["train"] == by_npz["dataset"]["train"] == loaded.train_y.numel()
    fx.assert_no_identifiers(fx.tree_bytes(tmp_path / "sim-dicom"))
