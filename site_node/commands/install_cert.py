"""``site-node install-cert``: accept the CA-signed certificate and the federation manifest,
verified.

Refused unless: the certificate chains to the CA and is valid now, is a site
certificate of this config's federation and site id, and holds this site's
public key; the federation manifest verifies against the same CA. Only then
are ``site.pem``, ``ca.pem`` and ``federation.json`` copied into the state
directory. The output shows what the site agreed to, the privacy policy in
force included (its defaults marked).
"""

from __future__ import annotations

from pathlib import Path

import click

from ffsecure import pki
from ffsecure.clitools import echo_json
from ffsecure.privacy.policy import effective_policy
from site_node import trust as trustlib
from site_node.commands._common import config_option, json_option, policy_lines, start
from site_node.config import SiteConfig
from site_node.state import StateDir


@click.command("install-cert")
@config_option
@click.option(
    "--cert",
    "cert_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The certificate the CA signed from this site's CSR.",
)
@click.option(
    "--ca",
    "ca_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The federation CA certificate (ca.pem), obtained out of band.",
)
@click.option(
    "--federation",
    "federation_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The CA-signed federation manifest (federation.json).",
)
@json_option
@click.pass_context
def install_cert(ctx, config_path, cert_file, ca_file, federation_file, as_json):
    """Verify and install this site's certificate, the CA certificate and the federation
    manifest."""

    cfg = start(ctx, config_path, as_json)
    with StateDir(cfg.state_dir).locked():
        t = trustlib.install(
            cfg,
            cert_file=Path(cert_file),
            ca_file=Path(ca_file),
            federation_file=Path(federation_file),
        )
    show_installed(cfg, t, as_json)


def show_installed(cfg: SiteConfig, t: trustlib.Trust, as_json: bool, **extra: object) -> None:
    """Print what the site now trusts and agreed to (``install-cert`` and ``install-kit``)."""
    fed = t.federation
    fp = pki.fingerprint(t.ca_cert)
    info = {
        "identity": t.identity.uri,
        "cert_not_after": pki.rfc3339(t.cert.not_valid_after_utc),
        "ca_fingerprint": fp.hex,
        "ca_fingerprint_colon": fp.colon,
        "federation_id": fed.federation_id,
        "label_space": fed.label_space,
        "generator": fed.generator["family"],
        "dp_policy": fed.dp_policy,
        "privacy_policy": effective_policy(fed.privacy_policy),
        "privacy_policy_signed": fed.privacy_policy,
        "aggregator": fed.aggregator["endpoint"],
        "state_dir": str(cfg.state_dir),
        **extra,
    }
    if as_json:
        echo_json(info)
        return
    click.echo(f"installed certificate for {t.identity.uri} (valid until {info['cert_not_after']})")
    click.echo(f"  CA fingerprint {fp.hex}")
    click.echo(
        f"  federation {fed.federation_id}: {len(fed.label_space)} classes, generator "
        f"{info['generator']}, DP required: {fed.dp_policy['required']}, aggregator "
        f"{info['aggregator']}"
    )
    for line in policy_lines(fed.privacy_policy):
        click.echo(f"  {line}")
