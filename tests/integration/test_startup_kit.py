"""Startup kits: `ffsecure pki kit` on the CA side, `install-kit` on the site and the aggregator.

Real CA directories, real CSRs made by `site-node enroll` and `aggregator init`, every
command a `python -m ...` process. A kit is refused, with nothing written, when the CA
fingerprint the installer was told differs, when the CA did not sign what it holds, or when
the archive breaks a bound (paths, links, sizes, unknown or extra members).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aggregator.home import AggregatorHome
from ffsecure import pki, templates
from ffsecure.federation import load_public_keys
from ffsecure.pki import kit as kitlib
from tests.conftest import REPO, cli_env
from tests.federation_fixture import build_federation
from tests.integration.test_aggregator_cli import _manifest_for
from tests.integration.test_site_node import DIGITS

FED = "fedtest"


def run(program: str, *args, code: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", program, *map(str, args)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code, f"{program} {args[0]}: {done.stdout}\n{done.stderr}"
    return done


def run_json(program: str, *args) -> dict:
    return json.loads(run(program, *args, "--json").stdout)


def error_code(done: subprocess.CompletedProcess) -> str:
    return json.loads(done.stderr.strip().splitlines()[-1])["error"]["code"]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show that nothing changed)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def made_site(tmp_path_factory):
    """Made once: a federation (CA + signed manifest), a site that ran `site-node enroll` on a
    clean state directory, and the kit `ffsecure pki kit` made from its CSR."""
    tmp_path = tmp_path_factory.mktemp("kit")
    fed = build_federation(tmp_path / "fed", labels=DIGITS, sites=())
    (tmp_path / "federation.json").write_bytes(fed.signed_manifest)
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    run(
        "site_node",
        "enroll",
        "--federation-id",
        FED,
        "--site-id",
        "st-a",
        "--key",
        site_dir / "state" / "keys" / "site.key",
        "--csr",
        tmp_path / "st-a.csr",
        "--no-passphrase",
    )
    kit = tmp_path / "st-a.kit"
    made = run_json(
        "ffsecure",
        "pki",
        "kit",
        "--site-id",
        "st-a",
        "--csr",
        tmp_path / "st-a.csr",
        "--ca-dir",
        fed.ca.directory,
        "--federation",
        tmp_path / "federation.json",
        "--out",
        kit,
    )
    return fed, site_dir, kit, made


@pytest.fixture
def site(made_site, tmp_path):
    """This test's own copy of the enrolled site folder and of the kit."""
    fed, site_dir, kit, made = made_site
    shutil.copytree(site_dir, tmp_path / "site")
    shutil.copy(kit, tmp_path / "st-a.kit")
    return fed, tmp_path / "site", tmp_path / "st-a.kit", made


def install_site_kit(site_dir: Path, kit: Path, fingerprint: str, *, code: int = 0):
    return run(
        "site_node",
        "install-kit",
        kit,
        "--config",
        site_dir / "site.toml",
        "--expect-ca-fingerprint",
        fingerprint,
        "--json",
        code=code,
    )


def members_of(kit: bytes) -> dict[str, bytes]:
    """The members of a kit archive, read with tarfile (no checks: the test builds attacks)."""
    with tarfile.open(fileobj=io.BytesIO(kit), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def repack(kit: bytes, *, replace: dict[str, bytes] | None = None, extra=()) -> bytes:
    """The kit's members (``replace`` swapped in, as an attacker would), then ``extra``
    TarInfo/bytes pairs, in a new archive; kit.json is kept as the CA signed it."""
    members = members_of(kit)
    members.update(replace or {})
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


# ------------------------------------------------------------------ fingerprints


def test_fingerprint_prints_both_forms_of_a_certificate_and_of_a_kits_ca(site):
    fed, _site_dir, kit, made = site
    der = fed.ca.cert.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest()
    colon = ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    for target in (fed.ca.directory / "ca.pem", kit):
        out = run_json("ffsecure", "pki", "fingerprint", target)
        assert (out["sha256"], out["sha256_colon"]) == (digest, colon)
    text = run("ffsecure", "pki", "fingerprint", fed.ca.directory / "ca.pem").stdout
    assert text.splitlines() == [digest, colon]
    assert (made["ca_fingerprint"], made["ca_fingerprint_colon"]) == (digest, colon)


def test_pki_init_prints_both_forms_and_keeps_dir_as_a_hidden_alias(tmp_path):
    out = run_json(
        "ffsecure", "pki", "init", "--federation-id", "fed-a", "--ca-dir", tmp_path / "a"
    )
    cert = x509.load_pem_x509_certificate((tmp_path / "a" / "ca.pem").read_bytes())
    assert out["fingerprint"] == pki.cert_fingerprint(cert)
    assert out["fingerprint_colon"] == pki.colon_form(out["fingerprint"])
    old = run(
        "ffsecure",
        "pki",
        "init",
        "--federation-id",
        "fed-b",
        "--dir",
        tmp_path / "b",
        "--no-passphrase",
    )
    assert (tmp_path / "b" / "ca.key").is_file()
    assert "--dir is deprecated; use --ca-dir" in old.stderr
    assert "--dir" not in run("ffsecure", "pki", "init", "--help").stdout


def test_a_fingerprint_is_taken_in_either_form_and_nothing_else():
    digest = "ab" * 32
    for text in (
        digest,
        digest.upper(),
        pki.colon_form(digest),
        f"sha256 Fingerprint={pki.colon_form(digest)}\n",
    ):
        assert pki.parse_fingerprint(text) == digest
    for bad in ("ab" * 31, "ab" * 33, digest + "\n" + digest, "AB:" * 31 + "A", "zz" * 32, ""):
        with pytest.raises(pki.FingerprintError) as caught:
            pki.parse_fingerprint(bad)
        assert caught.value.code == "E_FINGERPRINT"


# ------------------------------------------------------------------ the site


def test_site_kit_round_trip_installs_what_install_cert_would(site, tmp_path):
    fed, site_dir, kit, made = site
    assert made["members"] == sorted(kitlib.MEMBERS[kitlib.Role.SITE][0])
    listed = list(members_of(kit.read_bytes()))
    assert listed[0] == "kit.json" and sorted(listed[1:]) == made["members"]

    out = json.loads(install_site_kit(site_dir, kit, made["ca_fingerprint_colon"]).stdout)
    assert out["identity"] == f"ffsecure://{FED}/site/st-a"
    assert out["config_written"] is True
    config = site_dir / "site.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert 'site_id = "st-a"' in text and f'federation_id = "{FED}"' in text
    assert f'endpoint = "{fed.manifest.aggregator["endpoint"]}"' in text
    assert "# this site's id (as in its certificate)" in text  # the template's comments kept
    state = site_dir / "state"
    members = members_of(kit.read_bytes())
    assert (state / "site.pem").read_bytes() == members["site.pem"]
    assert (state / "ca.pem").read_bytes() == fed.ca.cert_pem
    assert (state / "federation.json").read_bytes() == fed.signed_manifest
    verified = pki.verify_cert(
        pki.load_cert((state / "site.pem").read_bytes()), ca_cert=fed.ca.cert, role="site"
    )
    assert verified.uri == out["identity"]
    assert run_json("site_node", "status", "--config", config, "--offline")["site_id"] == "st-a"

    # again, with an edited site.toml in place: it is kept, never overwritten
    config.write_text(text.replace('source = "digits"', 'source = "digits"  # mine'))
    before = config.read_text()
    again = json.loads(install_site_kit(site_dir, kit, made["ca_fingerprint"]).stdout)
    assert again["config_written"] is False and config.read_text() == before


def test_a_wrong_fingerprint_is_refused_and_nothing_is_written(site):
    _fed, site_dir, kit, made = site
    before = tree(site_dir)
    other = "0" * 64
    done = install_site_kit(site_dir, kit, other, code=1)
    assert error_code(done) == "E_KIT_FINGERPRINT"
    bad_form = install_site_kit(site_dir, kit, made["ca_fingerprint"][:-2], code=1)
    assert error_code(bad_form) == "E_FINGERPRINT"
    assert tree(site_dir) == before and not (site_dir / "site.toml").exists()


def test_a_site_toml_edited_in_transit_is_refused(site):
    _fed, site_dir, kit, made = site
    data = kit.read_bytes()
    toml = members_of(data)["site.toml"]
    evil = toml.replace(b'endpoint = "', b'endpoint = "evil.example.org:1#')
    assert evil != toml
    kit.write_bytes(repack(data, replace={"site.toml": evil}))
    before = tree(site_dir)
    done = install_site_kit(site_dir, kit, made["ca_fingerprint"], code=1)
    assert error_code(done) == "E_KIT"
    assert "site.toml is not the one the CA signed" in done.stderr
    assert tree(site_dir) == before


def test_a_ca_swapped_for_another_with_a_re_signed_kit_fails_the_fingerprint_check(site, tmp_path):
    """An attacker with their own CA of the same federation name re-signs everything."""
    fed, site_dir, kit, made = site
    evil_ca = pki.init_ca(tmp_path / "evil-ca", FED)
    cert, _key = evil_ca.issue_site("st-a")
    members = members_of(kit.read_bytes())
    del members["kit.json"]
    members.update({"ca.pem": evil_ca.cert_pem, "site.pem": pki.cert_pem(cert)})
    identity = f"ffsecure://{FED}/site/st-a"
    kit.write_bytes(kitlib.build_kit(evil_ca, kitlib.Role.SITE, identity, members))
    before = tree(site_dir)
    done = install_site_kit(site_dir, kit, made["ca_fingerprint"], code=1)
    assert error_code(done) == "E_KIT_FINGERPRINT"
    assert tree(site_dir) == before
    # and the real CA pinned against a kit re-signed by another key: E_KIT_SIGNATURE
    forged = kitlib.build_kit(
        evil_ca, kitlib.Role.SITE, identity, {**members, "ca.pem": fed.ca.cert_pem}
    )
    with pytest.raises(kitlib.KitSignatureError):
        kitlib.open_kit(forged, made["ca_fingerprint"], kitlib.Role.SITE)


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, link
    return info


BAD_ARCHIVES = {
    "a path out of the folder": [(_info("../x", 1), b"x")],
    "a path into a folder": [(_info("keys/site.toml", 1), b"x")],
    "an absolute path": [(_info("/etc/site.toml", 1), b"x")],
    "a symlink": [(_info("README.txt", 0, tarfile.SYMTYPE, "/etc/shadow"), None)],
    "a hard link": [(_info("README.txt", 0, tarfile.LNKTYPE, "ca.pem"), None)],
    "a device": [(_info("README.txt", 0, tarfile.CHRTYPE), None)],
    "a folder": [(_info("state", 0, tarfile.DIRTYPE), None)],
    "an extra member": [(_info("extra.txt", 1), b"x")],
    "an oversize member": [
        (
            _info("aggregator.toml", kitlib.MAX_MEMBER_BYTES + 1),
            b"\0" * (kitlib.MAX_MEMBER_BYTES + 1),
        )
    ],
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_an_archive_that_breaks_a_bound_is_refused_before_anything_is_read(site, case):
    _fed, _site_dir, kit, made = site
    data = repack(kit.read_bytes(), extra=BAD_ARCHIVES[case])
    with pytest.raises(kitlib.KitError) as caught:
        kitlib.open_kit(data, made["ca_fingerprint"], kitlib.Role.SITE)
    assert caught.value.code == "E_KIT"


def test_a_malformed_or_overlong_kit_is_refused_by_the_cli(site):
    _fed, site_dir, kit, made = site
    data = kit.read_bytes()
    before = tree(site_dir)
    for bad in (
        repack(data, extra=[(_info("../x", 1), b"x")]),
        b"not a tar" * 100,
        data + b"\0" * (kitlib.MAX_KIT_BYTES),
        repack(data, replace={"site.pem": data[:10]}),
    ):
        kit.write_bytes(bad)
        done = install_site_kit(site_dir, kit, made["ca_fingerprint"], code=1)
        assert error_code(done) == "E_KIT", done.stderr
    assert tree(site_dir) == before
    many = repack(data, extra=[(_info("README.txt", 1), b"x")] * kitlib.MAX_MEMBERS)
    with pytest.raises(kitlib.KitError, match="more than|twice"):
        kitlib.open_kit(many, made["ca_fingerprint"], kitlib.Role.SITE)


def test_a_kit_for_another_site_key_is_refused_by_install_cert_s_checks(site, tmp_path):
    fed, site_dir, kit, made = site
    os.rename(site_dir / "state" / "keys" / "site.key", tmp_path / "moved.key")
    run(
        "site_node",
        "enroll",
        "--federation-id",
        FED,
        "--site-id",
        "st-a",
        "--key",
        site_dir / "state" / "keys" / "site.key",
        "--csr",
        tmp_path / "new.csr",
        "--no-passphrase",
    )
    before = tree(site_dir)
    done = install_site_kit(site_dir, kit, made["ca_fingerprint"], code=1)
    assert error_code(done) == "E_KEY_MISMATCH"
    assert tree(site_dir) == before and not (site_dir / "site.toml").exists()


# ------------------------------------------------------------------ the aggregator


def test_aggregator_kit_takes_the_host_from_the_csr_and_installs_step_2(tmp_path):
    home = tmp_path / "agg"
    step1 = run_json(
        "aggregator", "init", "--dir", home, "--federation-id", "demo", "--host", "agg.example.org"
    )
    assert step1["hosts"] == ["agg.example.org"]
    ca = pki.init_ca(tmp_path / "ca", "demo")
    federation = tmp_path / "federation.json"
    federation.write_bytes(_manifest_for(ca, load_public_keys(home / "public-keys.json")))
    kit = tmp_path / "aggregator.kit"
    made = run_json(
        "ffsecure",
        "pki",
        "kit",
        "--aggregator",
        "--csr",
        home / "aggregator.csr",
        "--ca-dir",
        ca.directory,
        "--federation",
        federation,
        "--out",
        kit,
    )
    expected = set(kitlib.MEMBERS[kitlib.Role.AGGREGATOR][0])
    if "aggregator.service" in templates.NAMES:
        expected.add("aggregator.service")
    assert set(made["members"]) == expected

    before = tree(home)
    args = ("install-kit", kit, "--dir", home, "--listen", "127.0.0.1:0", "--json")
    wrong = run("aggregator", *args, "--expect-ca-fingerprint", "1" * 64, code=1)
    assert error_code(wrong) == "E_KIT_FINGERPRINT" and tree(home) == before

    out = json.loads(
        run("aggregator", *args, "--expect-ca-fingerprint", made["ca_fingerprint_colon"]).stdout
    )
    assert out["federation_id"] == "demo" and out["listen"] == "127.0.0.1:0"
    paths = AggregatorHome.at(home)
    tls = x509.load_pem_x509_certificate(paths.tls_cert.read_bytes())
    san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["agg.example.org"]
    assert paths.crl.read_bytes() == ca.crl_pem()
    assert paths.store_db.is_file() and out["log_size"] == 0


def test_the_ca_checks_a_host_against_the_aggregator_csr(tmp_path):
    home = tmp_path / "agg"
    run("aggregator", "init", "--dir", home, "--federation-id", "demo", "--host", "a.example.org")
    ca = pki.init_ca(tmp_path / "ca", "demo")
    csr = (home / "aggregator.csr").read_bytes()
    with pytest.raises(pki.CSRError, match="not 'b.example.org'"):
        ca.sign_csr(csr, role="aggregator", host="b.example.org")
    cert = ca.sign_csr(csr, role="aggregator")
    assert "a.example.org" in str(cert.extensions)
    bare = tmp_path / "bare"
    run("aggregator", "init", "--dir", bare, "--federation-id", "demo")
    with pytest.raises(pki.CSRError, match="needs --host"):
        ca.sign_csr((bare / "aggregator.csr").read_bytes(), role="aggregator")


def test_a_site_kit_is_not_an_aggregator_kit(site, tmp_path):
    _fed, _site_dir, kit, made = site
    home = tmp_path / "agg"
    run("aggregator", "init", "--dir", home, "--federation-id", FED, "--host", "localhost")
    done = run(
        "aggregator",
        "install-kit",
        kit,
        "--dir",
        home,
        "--expect-ca-fingerprint",
        made["ca_fingerprint"],
        "--json",
        code=1,
    )
    assert error_code(done) == "E_KIT"
    assert not (home / "federation.json").exists()


@pytest.mark.slow
def test_kit_transcript_ends_in_a_registered_module(tmp_path):
    """scripts/kit_transcript.sh: a site installed from a kit on a clean state directory."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "kit_transcript.sh"), str(tmp_path / "work")],
        env={**cli_env(), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "error[E_KIT_FINGERPRINT]" in done.stdout
    first_check, failing_check = done.stdout.split("$ site-node check --config site/site.toml")[1:3]
    assert "\nFAIL  " not in first_check and "\nPASS  data: " in first_check
    assert "\nFAIL  data: [E_DATA_MISSING]" in failing_check
    assert "(exit status 5)" in failing_check
    assert "registered at ledger index" in done.stdout
    listed = done.stdout.split("$ aggregator modules list")[-1]
    assert "site-1" in listed and "live" in listed
    # the script's EXIT trap stopped the server it started (none is left behind)
    pid = int(re.search(r"aggregator serve listening on [0-9.:]+, pid (\d+)", done.stdout)[1])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
