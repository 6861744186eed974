"""The init commands write the shipped templates, prefilled, and the result works as written."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ffsecure import templates
from tests.conftest import REPO, cli_env
from tests.federation_fixture import build_federation
from tests.integration.test_site_node import DIGITS, enroll_and_install, site_json


def _error_code(done: subprocess.CompletedProcess) -> str:
    """The code of the JSON error a --json command printed (on stderr)."""
    return json.loads((done.stdout + done.stderr).strip().splitlines()[-1])["error"]["code"]


def _cli(program: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", program, *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
    )


def test_site_node_init_writes_a_site_toml_that_status_accepts_after_install_cert(tmp_path):
    fed = build_federation(tmp_path / "fed", labels=DIGITS, sites=())
    site_dir = tmp_path / "st-a"
    site_dir.mkdir()
    cfg = site_dir / "site.toml"
    unit = site_dir / "site-node.service"
    out = site_json(
        "init",
        "--config",
        cfg,
        "--federation-id",
        "fedtest",
        "--site-id",
        "st-a",
        "--data-source",
        "digits",
        "--systemd-unit",
        unit,
    )
    assert out["written"] == [str(cfg), str(unit)]
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert unit.read_text() == templates.read("site-node.service")
    text = cfg.read_text()
    assert "# this site's id (as in its certificate)" in text  # comments kept
    assert tomllib.loads(text)["site"] == {
        "federation_id": "fedtest",
        "site_id": "st-a",
        "state_dir": "state",
    }

    enroll_and_install(fed, tmp_path, "st-a", cfg)
    status = site_json("status", "--config", cfg, "--offline")
    assert status["site_id"] == "st-a" and status["offline"] is True


def test_init_commands_refuse_to_overwrite_and_change_nothing(tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text("mine\n")
    for program, args in (
        ("site_node", ("init", "--config", cfg, "--json")),
        ("aggregator", ("init-config", "--config", cfg, "--json")),
    ):
        done = _cli(program, *args, cwd=tmp_path)
        assert done.returncode == 1
        assert _error_code(done) == "E_EXISTS"
        assert cfg.read_text() == "mine\n"
    # a unit that exists stops the whole command before site.toml is written
    (tmp_path / "u.service").write_text("x")
    done = _cli(
        "site_node",
        "init",
        "--config",
        tmp_path / "new.toml",
        "--systemd-unit",
        tmp_path / "u.service",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 1 and _error_code(done) == "E_EXISTS"
    assert not (tmp_path / "new.toml").exists()


def test_site_node_init_refuses_a_value_the_parser_refuses(tmp_path):
    done = _cli(
        "site_node",
        "init",
        "--config",
        tmp_path / "site.toml",
        "--data-source",
        "ftp:x",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert _error_code(done) == "E_CONFIG"
    assert not (tmp_path / "site.toml").exists()


def test_aggregator_init_config_writes_the_default_that_parses(tmp_path):
    from aggregator.config import load_config

    done = _cli(
        "aggregator",
        "init-config",
        "--config",
        tmp_path / "aggregator.toml",
        "--listen",
        "127.0.0.1:0",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    cfg = load_config(tmp_path / "aggregator.toml")
    assert cfg.server.listen == "127.0.0.1:0"
    assert "# threads serving calls" in (tmp_path / "aggregator.toml").read_text()


def test_federation_init_prefills_the_ca_federation_id_and_aggregator_keys(tmp_path):
    from ffsecure import federation as fedlib

    assert (
        _cli(
            "ffsecure",
            "pki",
            "init",
            "--federation-id",
            "chest-2027",
            "--dir",
            tmp_path / "ca",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    assert (
        _cli(
            "aggregator",
            "init",
            "--dir",
            tmp_path / "agg",
            "--federation-id",
            "chest-2027",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    toml = tmp_path / "cfg" / "federation.toml"
    toml.parent.mkdir()
    done = _cli(
        "ffsecure",
        "federation",
        "init",
        "--config",
        toml,
        "--ca-dir",
        tmp_path / "ca",
        "--public-keys",
        tmp_path / "agg" / "public-keys.json",
        "--endpoint",
        "agg.example:7443",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    raw = tomllib.loads(toml.read_text())
    assert raw["federation_id"] == "chest-2027"
    assert raw["aggregator"] == {
        "endpoint": "agg.example:7443",
        "public_keys": "../agg/public-keys.json",
    }
    manifest = fedlib.manifest_from_toml(toml)  # what `federation create` reads
    assert manifest.federation_id == "chest-2027"
    assert manifest.aggregator["endpoint"] == "agg.example:7443"


def test_federation_init_refuses_a_folder_without_a_ca(tmp_path):
    done = _cli(
        "ffsecure",
        "federation",
        "init",
        "--config",
        tmp_path / "f.toml",
        "--ca-dir",
        tmp_path,
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 1 and _error_code(done) == "E_CA"
    assert not (tmp_path / "f.toml").exists()


def test_every_program_names_its_documentation_in_help(tmp_path):
    for program, page in (
        ("ffsecure", "pki.md"),
        ("site_node", "site-operator.md"),
        ("aggregator", "operator-guide.md"),
    ):
        done = _cli(program, "--help", cwd=tmp_path)
        assert done.returncode == 0
        epilog = done.stdout.split("Documentation: ", 1)[1]
        assert page in epilog
        assert Path(epilog.split(",")[0].split()[0]).is_file() or (REPO / "docs" / page).is_file()


@pytest.mark.parametrize("name", templates.NAMES)
def test_every_template_is_in_the_wheel(name, wheel_files):
    assert f"ffsecure/templates/{name}" in wheel_files


def test_the_wheel_carries_the_docs_the_hints_name(wheel_files):
    docs = {Path(n).name for n in wheel_files if "/share/ffsecure/docs/" in n}
    assert {p.name for p in (REPO / "docs").glob("*.md")} <= docs
    assert "site-operator.md" in docs


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    import zipfile

    out = tmp_path_factory.mktemp("wheel")
    # build from a copy of the tracked files: setuptools writes build/ into the source tree,
    # and a build/lib left by an earlier build would be packed into this wheel too
    source = tmp_path_factory.mktemp("source") / "ffsecure"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        path = REPO / name.decode()
        if path.is_file():
            (source / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name.decode(), follow_symlinks=False)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(source),
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = out.glob("ffsecure-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())
