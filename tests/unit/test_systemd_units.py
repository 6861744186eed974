"""The shipped systemd units keep their hardening, and the GPU drop-in relaxes device access only.

Parsed with a small reader that keeps repeated keys (``DeviceAllow=`` appears once
per device), the way systemd merges a drop-in over its unit: a later assignment
of a key replaces an earlier one, an empty one resets a list. Where
``systemd-analyze`` is installed, ``systemd-analyze verify`` checks each unit and
the unit with its drop-in as well (ExecStart pointed at /bin/true, since the venv
the unit names is not installed here).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ffsecure import templates

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "systemd"

#: Every unit keeps these, exactly (systemd-analyze security's main items).
HARDENING = {
    "UMask": "0077",
    "StateDirectoryMode": "0700",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
}
#: What the GPU drop-in may set: device access and nothing else.
DEVICE_KEYS = {"PrivateDevices", "DevicePolicy", "DeviceAllow"}


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of (key, value) in order (repeated keys kept)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def service(sections: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """The [Service] settings, a later assignment replacing an earlier one."""
    return dict(sections.get("Service", []))


def merged(unit: str, dropin: str) -> dict[str, str]:
    return {**service(parse_unit(unit)), **service(parse_unit(dropin))}


@pytest.mark.parametrize("name", ["site-node.service", "aggregator.service"])
def test_each_unit_keeps_the_hardening_and_runs_as_its_own_user(name):
    text = templates.read(name)
    settings = service(parse_unit(text))
    missing = {k: v for k, v in HARDENING.items() if settings.get(k) != v}
    assert missing == {}, f"{name} lacks {missing}"
    assert settings["User"] not in ("", "root") and settings["User"] == settings["Group"]
    assert (DEPLOY / name).read_text() == text  # the checkout's copy is the shipped one


def test_the_aggregator_unit_serves_from_its_state_directory():
    settings = service(parse_unit(templates.read("aggregator.service")))
    home = f"/var/lib/{settings['StateDirectory']}"
    assert settings["User"] == "ffsecure-aggregator"
    assert settings["ExecStart"].split()[1:] == ["serve", "--dir", home]
    assert settings["ReadWritePaths"] == home and settings["Restart"] == "on-failure"


@pytest.mark.parametrize("name", ["site-node.service", "aggregator.service"])
def test_the_gpu_drop_in_relaxes_device_access_only(name):
    dropin = (DEPLOY / f"{name}.d" / "gpu.conf").read_text()
    assert dropin == templates.read("gpu.conf")
    sections = parse_unit(dropin)
    assert set(sections) == {"Service"}
    assert {key for key, _ in sections["Service"]} == DEVICE_KEYS
    allowed = [value for key, value in sections["Service"] if key == "DeviceAllow"]
    assert allowed and all("nvidia" in value and value.endswith(" rw") for value in allowed)
    unit = templates.read(name)
    before, after = service(parse_unit(unit)), merged(unit, dropin)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == DEVICE_KEYS
    assert after["PrivateDevices"] == "no" and after["DevicePolicy"] == "closed"
    assert {k: after[k] for k in HARDENING.keys() - {"PrivateDevices"}} == {
        k: v for k, v in HARDENING.items() if k != "PrivateDevices"
    }


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("name", ["site-node.service", "aggregator.service"])
def test_systemd_analyze_verifies_each_unit_with_and_without_the_gpu_drop_in(name, tmp_path):
    for with_dropin in (False, True):
        folder = tmp_path / ("gpu" if with_dropin else "plain")
        folder.mkdir()
        unit = folder / name
        text = templates.read(name)
        executable = text.split("ExecStart=", 1)[1].split()[0]
        unit.write_text(text.replace(executable, "/bin/true"))
        if with_dropin:
            (folder / f"{name}.d").mkdir()
            (folder / f"{name}.d" / "gpu.conf").write_text(templates.read("gpu.conf"))
        done = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120
        )
        complaints = [line for line in done.stderr.splitlines() if str(folder) in line]
        assert done.returncode == 0 and complaints == [], done.stderr


def test_aggregator_init_config_writes_the_unit_and_never_overwrites(tmp_path):
    from click.testing import CliRunner

    from aggregator.cli import cli

    unit, config = tmp_path / "aggregator.service", tmp_path / "aggregator.toml"
    args = ["init-config", "--config", str(config), "--systemd-unit", str(unit)]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert unit.read_text() == templates.read("aggregator.service") and config.is_file()
    config.unlink()
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 1 and "E_EXISTS" in refused.output
    assert not config.exists()  # the unit was there: nothing was written
