"""Installing a startup kit on a site: pin the CA, verify the kit, then what install-cert does.

``site-node install-kit KIT --config site.toml --expect-ca-fingerprint FP``:

1. :func:`ffsecure.pki.kit.open_kit` parses the archive under its bounds,
   refuses it unless its ``ca.pem`` has the fingerprint the site was told
   out of band (``E_KIT_FINGERPRINT``), then checks the CA's signature over
   the member list (``E_KIT_SIGNATURE``, ``E_KIT``);
2. the config is the existing ``site.toml`` (kept as it is, never
   overwritten) or, when there is none, the kit's prefilled one;
3. :func:`site_node.trust.check_material`, the very checks of
   ``install-cert``: the certificate chains to the pinned CA, is this
   config's site of this federation, holds the key ``site-node enroll`` made
   here; the federation manifest verifies against the same CA;
4. only then is anything written: ``site.toml`` when it was missing, the
   three trust files through :func:`site_node.trust.install_material` (the
   state lock held), and the systemd unit when asked for (never over an
   existing file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ffsecure import templates
from ffsecure.pki.kit import Kit, Role, open_kit
from site_node.config import SiteConfig, load_config, parse_config
from site_node.state import StateDir
from site_node.trust import Trust, check_material, install_material, load_key

__all__ = ["KitInstall", "install_kit"]


@dataclass(frozen=True)
class KitInstall:
    """What ``install-kit`` verified and wrote."""

    kit: Kit
    trust: Trust
    config: SiteConfig
    config_written: bool
    unit_written: Path | None


def install_kit(
    kit_data: bytes,
    expected_fingerprint: str,
    config_path: Path,
    *,
    unit_path: Path | None = None,
) -> KitInstall:
    """Verify the kit against the pinned fingerprint and this site's key, then install it."""
    kit = open_kit(kit_data, expected_fingerprint, Role.SITE)
    kit_toml = kit.text("site.toml")
    config_exists = config_path.exists()
    if config_exists:
        cfg = load_config(config_path)
    else:
        cfg = parse_config(kit_toml, config_path.resolve())
    material = {
        "cert_pem": kit.members["site.pem"],
        "ca_pem": kit.members["ca.pem"],
        "manifest_bytes": kit.members["federation.json"],
    }
    check_material(
        cfg,
        cert_pem=material["cert_pem"],
        ca_pem=material["ca_pem"],
        manifest_bytes=material["manifest_bytes"],
        key=load_key(cfg),
    )
    if unit_path is not None and unit_path.exists():
        raise templates.FileExistsRefused(
            f"{unit_path} already exists; nothing was installed",
            hint="leave --systemd-unit out, or move the old unit away first",
        )
    if not config_exists:
        templates.write_new(config_path, kit_toml, mode=0o600)
    with StateDir(cfg.state_dir).locked():
        trust = install_material(cfg, **material)
    if unit_path is not None:
        templates.write_new(unit_path, kit.text("site-node.service"))
    return KitInstall(
        kit=kit,
        trust=trust,
        config=cfg,
        config_written=not config_exists,
        unit_written=unit_path,
    )
