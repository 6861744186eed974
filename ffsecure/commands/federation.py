"""``ffsecure federation``: create and check the CA-signed federation manifest."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ffsecure import federation as fedlib
from ffsecure import pki as pkilib
from ffsecure import templates
from ffsecure.clitools import echo_json
from ffsecure.commands.pki import json_option, passphrase_option, read_passphrase


def _summary(manifest: fedlib.FederationManifest) -> dict:
    return {
        "federation_id": manifest.federation_id,
        "label_space": manifest.label_space,
        "image_shape": list(manifest.image_shape),
        "generator": manifest.generator["family"],
        "dp_policy": manifest.dp_policy,
        "limits": manifest.limits,
        "endpoint": manifest.aggregator["endpoint"],
        "hpke_suite": manifest.hpke_suite,
        "hpke_key_id": manifest.hpke_key_id,
        "log_origin": manifest.aggregator["log_origin"],
        "privacy_policy": manifest.privacy_policy,
        "created_at": manifest.created_at,
    }


@click.group("federation")
def federation() -> None:
    """The federation manifest: init (template), create (CA-signed) and verify."""


def render_federation_toml(
    config_path: Path, *, ca_dir: Path, public_keys: Path | None, endpoint: str | None
) -> str:
    """The federation.toml template, prefilled with the CA's federation id and,
    when given, the aggregator's public-keys.json (checked) and endpoint."""
    ca_pem = Path(ca_dir) / "ca.pem"
    try:
        ca_cert = pkilib.load_cert(ca_pem.read_bytes())
    except OSError as exc:
        raise pkilib.CAError(
            f"cannot read {ca_pem}: {exc}", hint="pass the folder `ffsecure pki init` created"
        ) from None
    text = templates.fill(
        templates.read("federation.toml"), None, "federation_id", pkilib.ca_federation_id(ca_cert)
    )
    if endpoint is not None:
        text = templates.fill(text, "aggregator", "endpoint", endpoint)
    if public_keys is not None:
        fedlib.load_public_keys(public_keys)
        relative = os.path.relpath(Path(public_keys).resolve(), Path(config_path).resolve().parent)
        text = templates.fill(text, "aggregator", "public_keys", relative)
    return text


@federation.command("init")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write federation.toml (refused if the file exists).",
)
@click.option(
    "--ca-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="The CA folder: its certificate gives the federation id.",
)
@click.option(
    "--public-keys",
    type=click.Path(dir_okay=False, exists=True),
    help="The aggregator's public-keys.json (from `aggregator init` step 1).",
)
@click.option("--endpoint", help="The aggregator's host:port as sites will reach it.")
@json_option
@click.pass_context
def init_cmd(ctx, config_file, ca_dir, public_keys, endpoint, as_json):
    """Write a commented federation.toml to edit, then sign with `federation create`."""
    ctx.ensure_object(dict)["json"] = as_json
    text = render_federation_toml(
        Path(config_file),
        ca_dir=Path(ca_dir),
        public_keys=Path(public_keys) if public_keys else None,
        endpoint=endpoint,
    )
    path = templates.write_new(config_file, text)
    if as_json:
        echo_json({"written": str(path)})
    else:
        click.echo(f"wrote {path}: set label_space, image_shape, the generator and the DP policy,")
        click.echo(
            f"then `ffsecure federation create --config {path} --ca-dir {ca_dir} "
            "--out federation.json`"
        )


@federation.command("create")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="federation.toml (see docs/pki.md).",
)
@click.option("--ca-dir", required=True, type=click.Path(file_okay=False))
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="Where to write federation.json."
)
@passphrase_option
@json_option
@click.pass_context
def create_cmd(ctx, config_file, ca_dir, out, passphrase_file, as_json):
    """Build the manifest from federation.toml and sign it with the CA key."""
    ctx.ensure_object(dict)["json"] = as_json
    manifest = fedlib.manifest_from_toml(config_file)
    ca = pkilib.CA.load(ca_dir, read_passphrase(passphrase_file))
    data = fedlib.create_signed_manifest(manifest, ca)
    pkilib.write_public_file(Path(out), data)
    if as_json:
        echo_json({"out": out, **_summary(manifest)})
    else:
        click.echo(f"signed federation manifest for {manifest.federation_id} -> {out}")


@federation.command("verify")
@click.argument("manifest_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--ca", "ca_file", required=True, type=click.Path(dir_okay=False, exists=True))
@json_option
@click.pass_context
def verify_cmd(ctx, manifest_file, ca_file, as_json):
    """Check federation.json's CA signature and print what it says."""
    ctx.ensure_object(dict)["json"] = as_json
    ca_cert = pkilib.load_cert(Path(ca_file).read_bytes())
    manifest = fedlib.load_signed_manifest(Path(manifest_file).read_bytes(), ca_cert)
    info = _summary(manifest)
    if as_json:
        echo_json(info)
        return
    click.echo(f"OK federation {manifest.federation_id} (signed by the CA)")
    for key, value in info.items():
        click.echo(f"  {key}: {value}")
