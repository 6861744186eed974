"""``ffsecure pki``: create the federation CA, issue and revoke certificates.

A thin layer over :mod:`ffsecure.pki`; see docs/pki.md for the operator's walk-through.

New private keys and passphrases (docs/pki.md, "Key passphrases"): a command
that writes a new key encrypts it with the first line of ``--passphrase-file``
(or of the file named by an environment variable, ``FFSECURE_CA_PASSPHRASE_FILE``
for the CA, ``FFSECURE_SITE_PASSPHRASE_FILE`` for a site key). Without one the
key is written unencrypted (0600) and the command prints a warning saying so on
stderr and in the log, unless ``--no-passphrase`` says it is meant (as
securesystemslib's explicit ``*_unencrypted_*`` writers and step's
``--no-password`` do). The passphrase itself is never taken on the command line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ffsecure import canonical
from ffsecure import pki as pkilib
from ffsecure.clitools import echo_json, renamed_option
from ffsecure.errors import ConfigError
from ffsecure.pki import kit as kitlib
from ffsecure.pki import startup
from ffsecure.templates import FileExistsRefused


def read_passphrase(path: str | None) -> bytes | None:
    """The first line of ``path`` (without the newline), or None."""
    if not path:
        return None
    try:
        data = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if not data or not data[0]:
        raise ConfigError(f"passphrase file {path} is empty")
    return data[0]


log = logging.getLogger("ffsecure.pki")

CA_PASSPHRASE_ENV = "FFSECURE_CA_PASSPHRASE_FILE"
SITE_PASSPHRASE_ENV = "FFSECURE_SITE_PASSPHRASE_FILE"


def new_key_passphrase(
    passphrase: bytes | None, no_passphrase: bool, key: str, env: str
) -> bytes | None:
    """The passphrase for a new key, or None with a warning unless ``--no-passphrase`` was given."""
    if passphrase is not None and no_passphrase:
        raise ConfigError(
            "--no-passphrase contradicts a passphrase file",
            hint=f"drop one of them (the file may come from ${env})",
        )
    if passphrase is None and not no_passphrase:
        warn_unencrypted(
            key,
            f"pass --passphrase-file FILE (or set {env}) to encrypt it, "
            "or --no-passphrase to say you mean it",
        )
    return passphrase


def warn_unencrypted(key: str, remedy: str) -> None:
    """Say on stderr and in the log that ``key`` is written without a passphrase, and what to do."""
    message = (
        f"{key} is written UNENCRYPTED (mode 0600): whoever reads the file holds the key; {remedy}"
    )
    log.warning(message, extra={"event": "key_unencrypted", "key": key})
    click.echo(f"warning: {message}", err=True)


ca_dir_option = click.option(
    "--ca-dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory of the federation CA (from `pki init`).",
)
passphrase_option = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    envvar=CA_PASSPHRASE_ENV,
    help=f"File whose first line is the CA key passphrase (default: ${CA_PASSPHRASE_ENV}).",
)
no_passphrase_option = click.option(
    "--no-passphrase",
    is_flag=True,
    help="Write the new private key unencrypted, on purpose (no warning).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
#: ``install-kit`` of every role: the CA fingerprint the installer was told out of band.
expect_ca_fingerprint_option = click.option(
    "--expect-ca-fingerprint",
    "fingerprint",
    required=True,
    help="The CA's SHA-256 fingerprint as the CA operator told you out of band "
    "(64 hex digits, or AA:BB:... as openssl prints it).",
)


def _json(ctx: click.Context, as_json: bool) -> None:
    ctx.ensure_object(dict)["json"] = as_json


def _cert_summary(cert, **extra) -> dict:
    identity = pkilib.identity_of(cert)
    return {
        "identity": identity.uri,
        "serial": pkilib.serial_hex(cert.serial_number),
        "fingerprint": pkilib.cert_fingerprint(cert),
        "fingerprint_colon": pkilib.fingerprint(cert).colon,
        "not_after": pkilib.rfc3339(cert.not_valid_after_utc),
        **extra,
    }


def _write_leaf(
    out: Path, name: str, cert, key, ca: pkilib.CA, *, no_passphrase: bool = False
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"cert": str(out / f"{name}.pem"), "ca": str(out / "ca.pem")}
    pkilib.write_public_file(out / f"{name}.pem", pkilib.cert_pem(cert))
    if key is not None:
        if not no_passphrase:  # the services read their keys unattended: the CA-made key is plain
            warn_unencrypted(
                str(out / f"{name}.key"),
                "prefer a key made where it is used (`site-node enroll`, "
                "`aggregator init`), "
                "or pass --no-passphrase to say you mean it",
            )
        pkilib.write_private_key(out / f"{name}.key", key)
        paths["key"] = str(out / f"{name}.key")
    pkilib.write_public_file(out / "ca.pem", ca.cert_pem)
    return paths


@click.group("pki")
def pki() -> None:
    """Federation CA: init, kit, fingerprint, issue, sign-csr, revoke, crl, list, verify."""


@pki.command("init")
@click.option("--federation-id", required=True, help="Federation id (lowercase, 1-63 chars).")
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False),
    help="New directory for the CA (created 0700).",
)
@click.option("--dir", "old_dir", type=click.Path(file_okay=False), hidden=True)
@passphrase_option
@no_passphrase_option
@click.option("--days", default=pkilib.CA_DAYS_DEFAULT, show_default=True, help="CA lifetime.")
@json_option
@click.pass_context
def init_cmd(ctx, federation_id, ca_dir, old_dir, passphrase_file, no_passphrase, days, as_json):
    """Create a federation CA (ECDSA P-256, key file 0600, encrypted with a passphrase file).

    Prints the CA certificate's SHA-256 fingerprint in both forms: read it to
    every site and the aggregator out of band; they pass it to `install-kit
    --expect-ca-fingerprint`.
    """
    _json(ctx, as_json)
    directory = renamed_option(ca_dir, old_dir, "--ca-dir", "--dir")
    passphrase = new_key_passphrase(
        read_passphrase(passphrase_file),
        no_passphrase,
        str(Path(directory) / "ca.key"),
        CA_PASSPHRASE_ENV,
    )
    ca = pkilib.init_ca(directory, federation_id, passphrase=passphrase, days=days)
    fp = pkilib.fingerprint(ca.cert)
    info = {
        "federation_id": ca.federation_id,
        "ca_cert": str(Path(directory) / "ca.pem"),
        "fingerprint": fp.hex,
        "fingerprint_colon": fp.colon,
        "not_after": pkilib.rfc3339(ca.cert.not_valid_after_utc),
    }
    if as_json:
        echo_json(info)
    else:
        click.echo(f"created CA for federation {ca.federation_id} in {directory}")
        click.echo(f"  CA certificate: {info['ca_cert']}")
        click.echo(f"  SHA-256 fingerprint: {fp.hex}")
        click.echo(f"                       {fp.colon}")
        click.echo(
            "  keep ca.key offline; read the fingerprint to every site and the aggregator "
            "out of band"
        )


@pki.command("fingerprint")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@json_option
@click.pass_context
def fingerprint_cmd(ctx, file, as_json):
    """Print the SHA-256 fingerprint of a certificate PEM (or of a kit's ca.pem), in both forms.

    A kit's ca.pem is only read, not verified: compare what this prints with
    the fingerprint the CA operator gives you out of band.
    """
    _json(ctx, as_json)
    data = kitlib.read_kit_file(file)
    from_kit = b"-----BEGIN CERTIFICATE-----" not in data[:4096]
    cert = kitlib.unverified_ca_cert(data) if from_kit else pkilib.load_cert(data)
    fp = pkilib.fingerprint(cert)
    info = {"file": file, "source": "kit ca.pem" if from_kit else "certificate", **fp.to_dict()}
    if as_json:
        echo_json(info)
        return
    click.echo(f"{fp.hex}")
    click.echo(f"{fp.colon}")


@pki.command("kit")
@click.option("--site-id", help="The site's id (site kit; the CSR must ask for it).")
@click.option("--aggregator", "for_aggregator", is_flag=True, help="Make the aggregator's kit.")
@click.option(
    "--host",
    help="Aggregator kit: its host name; default: those `aggregator init --host` put in the CSR.",
)
@click.option(
    "--csr",
    "csr_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The CSR from `site-node enroll` or `aggregator init` (the key stays there).",
)
@ca_dir_option
@click.option(
    "--federation",
    "federation_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The CA-signed federation.json (`ffsecure federation create`).",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="The kit file to write (new)."
)
@click.option("--days", default=pkilib.LEAF_DAYS_DEFAULT, show_default=True)
@passphrase_option
@json_option
@click.pass_context
def kit_cmd(
    ctx,
    site_id,
    for_aggregator,
    host,
    csr_file,
    ca_dir,
    federation_file,
    out,
    days,
    passphrase_file,
    as_json,
):
    """Sign a CSR and write ONE CA-signed startup kit: certificate, ca.pem, federation.json,
    a prefilled config, the systemd unit and a README with the CA fingerprint.

    \b
    Site:        ffsecure pki kit --site-id ID --csr site.csr --ca-dir CA \\
                     --federation federation.json --out site-ID.kit
    Aggregator:  ffsecure pki kit --aggregator --csr aggregator.csr --ca-dir CA \\
                     --federation federation.json --out aggregator.kit
    """
    _json(ctx, as_json)
    if for_aggregator == bool(site_id):
        raise click.UsageError("give exactly one of --site-id ID or --aggregator")
    if host and not for_aggregator:
        raise click.UsageError("--host is for the aggregator's kit")
    if Path(out).exists():
        raise FileExistsRefused(
            f"{out} already exists; nothing was written", hint="give a new --out"
        )
    ca = pkilib.CA.load(ca_dir, read_passphrase(passphrase_file))
    csr_pem, federation_json = Path(csr_file).read_bytes(), Path(federation_file).read_bytes()
    if for_aggregator:
        made = startup.make_aggregator_kit(
            ca, csr_pem=csr_pem, federation_json=federation_json, host=host, days=days
        )
    else:
        made = startup.make_site_kit(
            ca, csr_pem=csr_pem, site_id=site_id, federation_json=federation_json, days=days
        )
    pkilib.write_public_file(Path(out), made.data)
    _show_kit(made, out, as_json)


def _show_kit(made: startup.MadeKit, out: str, as_json: bool) -> None:
    info = _cert_summary(
        made.cert,
        kit=out,
        role=str(made.role),
        members=list(made.members),
        ca_fingerprint=made.ca_fingerprint.hex,
        ca_fingerprint_colon=made.ca_fingerprint.colon,
    )
    if as_json:
        echo_json(info)
        return
    click.echo(f"wrote {out}: {made.role} kit for {made.identity} (serial {info['serial']})")
    click.echo(f"  members: {', '.join(made.members)}")
    click.echo(f"  CA fingerprint: {made.ca_fingerprint.hex}")
    click.echo(f"                  {made.ca_fingerprint.colon}")
    click.echo("  give the kit to its holder; read the fingerprint to them out of band")


@pki.group("issue")
def issue_group() -> None:
    """Issue a site or aggregator certificate (the CA makes the key)."""


@issue_group.command("site")
@click.option("--site-id", required=True)
@ca_dir_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for <site-id>.pem, <site-id>.key (0600) and ca.pem.",
)
@click.option("--days", default=pkilib.LEAF_DAYS_DEFAULT, show_default=True)
@passphrase_option
@click.option(
    "--no-passphrase", is_flag=True, help="The site key is meant to be unencrypted (no warning)."
)
@json_option
@click.pass_context
def issue_site_cmd(ctx, site_id, ca_dir, out, days, passphrase_file, no_passphrase, as_json):
    """Issue a site certificate (clientAuth, SAN ffsecure://<fed>/site/<id>)."""
    _json(ctx, as_json)
    ca = pkilib.CA.load(ca_dir, read_passphrase(passphrase_file))
    cert, key = ca.issue_site(site_id, days=days)
    files = _write_leaf(Path(out), site_id, cert, key, ca, no_passphrase=no_passphrase)
    info = _cert_summary(cert, files=files)
    echo_json(info) if as_json else click.echo(
        f"issued {info['identity']} serial {info['serial']} -> {info['files']['cert']}"
    )


@issue_group.command("aggregator")
@click.option("--host", required=True, help="DNS name or IP the sites connect to.")
@click.option("--extra-host", multiple=True, help="More DNS names or IPs (repeatable).")
@ca_dir_option
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory for aggregator.pem, aggregator.key (0600) and ca.pem.",
)
@click.option("--days", default=pkilib.LEAF_DAYS_DEFAULT, show_default=True)
@passphrase_option
@click.option(
    "--no-passphrase", is_flag=True, help="The TLS key is meant to be unencrypted (no warning)."
)
@json_option
@click.pass_context
def issue_aggregator_cmd(
    ctx, host, extra_host, ca_dir, out, days, passphrase_file, no_passphrase, as_json
):
    """Issue the aggregator's TLS certificate (serverAuth, SAN .../aggregator + host)."""
    _json(ctx, as_json)
    ca = pkilib.CA.load(ca_dir, read_passphrase(passphrase_file))
    cert, key = ca.issue_aggregator(host, extra_hosts=extra_host, days=days)
    info = _cert_summary(
        cert, files=_write_leaf(Path(out), "aggregator", cert, key, ca, no_passphrase=no_passphrase)
    )
    echo_json(info) if as_json else click.echo(
        f"issued {info['identity']} for {host} serial {info['serial']} -> {info['files']['cert']}"
    )


@pki.command("sign-csr")
@click.argument("csr", type=click.Path(dir_okay=False, exists=True))
@ca_dir_option
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the certificate PEM.",
)
@click.option(
    "--role", type=click.Choice(["site", "aggregator"]), default="site", show_default=True
)
@click.option("--site-id", help="Expected site id (refuse a CSR asking for another).")
@click.option(
    "--host",
    help="Role aggregator: its host name; default: those `aggregator init --host` put in the CSR.",
)
@click.option("--days", default=pkilib.LEAF_DAYS_DEFAULT, show_default=True)
@passphrase_option
@json_option
@click.pass_context
def sign_csr_cmd(ctx, csr, ca_dir, out, role, site_id, host, days, passphrase_file, as_json):
    """Sign a CSR made by `site-node enroll` (the private key stays on the site)."""
    _json(ctx, as_json)
    ca = pkilib.CA.load(ca_dir, read_passphrase(passphrase_file))
    cert = ca.sign_csr(Path(csr).read_bytes(), role=role, site_id=site_id, host=host, days=days)
    pkilib.write_public_file(Path(out), pkilib.cert_pem(cert))
    info = _cert_summary(cert, cert_file=out)
    echo_json(info) if as_json else click.echo(
        f"issued {info['identity']} serial {info['serial']} -> {out}"
    )


@pki.command("revoke")
@ca_dir_option
@click.option("--serial", help="Serial number (hex) of the certificate to revoke.")
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(dir_okay=False, exists=True),
    help="The certificate to revoke (instead of --serial).",
)
@click.option(
    "--reason",
    type=click.Choice(sorted(pkilib.REASONS)),
    default="unspecified",
    show_default=True,
    help="key_compromise/unspecified revoke every use; superseded (rotation) and the "
    "others only uses after now.",
)
@click.option("--out", type=click.Path(dir_okay=False), help="Also copy the new CRL here.")
@passphrase_option
@json_option
@click.pass_context
def revoke_cmd(ctx, ca_dir, serial, cert_file, reason, out, passphrase_file, as_json):
    """Revoke a certificate and publish a new CRL (DIR/crl.pem)."""
    _json(ctx, as_json)
    if bool(serial) == bool(cert_file):
        raise ConfigError("give exactly one of --serial or --cert")
    ca = pkilib.CA.load(ca_dir, read_passphrase(passphrase_file))
    target = pkilib.load_cert(Path(cert_file).read_bytes()) if cert_file else serial
    pem = ca.revoke(target, reason)
    if out:
        pkilib.write_public_file(Path(out), pem)
    crl = pkilib.load_crl(pem, ca.cert)
    info = {"crl": str(Path(ca_dir) / "crl.pem"), "revoked": len(crl), "reason": reason}
    echo_json(info) if as_json else click.echo(
        f"revoked ({reason}); CRL with {len(crl)} entries -> {info['crl']}"
    )


@pki.command("crl")
@ca_dir_option
@click.option("--out", type=click.Path(dir_okay=False), help="Also copy the CRL here.")
@click.option(
    "--days",
    default=pkilib.CRL_DAYS_DEFAULT,
    show_default=True,
    help="Days until the CRL's nextUpdate.",
)
@passphrase_option
def crl_cmd(ca_dir, out, days, passphrase_file):
    """Re-sign and publish the CRL (do this before its nextUpdate passes)."""
    ca = pkilib.CA.load(ca_dir, read_passphrase(passphrase_file))
    pem = ca.publish_crl(days=days)
    if out:
        pkilib.write_public_file(Path(out), pem)
    click.echo(f"published CRL -> {Path(ca_dir) / 'crl.pem'}")


@pki.command("list")
@click.option("--ca-dir", required=True, type=click.Path(file_okay=False))
@json_option
@click.pass_context
def list_cmd(ctx, ca_dir, as_json):
    """List issued certificates and their revocation state (no key needed)."""
    _json(ctx, as_json)
    path = Path(ca_dir) / "state.json"
    if not path.is_file():
        raise ConfigError(f"{ca_dir} holds no CA state", hint="create one with `ffsecure pki init`")
    state = canonical.loads_canonical(path.read_bytes(), max_bytes=64 << 20)
    revoked = {r["serial"]: r for r in state["revoked"]}
    rows = [{**r, "revoked": revoked.get(r["serial"])} for r in state["issued"]]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        status = f"REVOKED {row['revoked']['reason']}" if row["revoked"] else "valid"
        click.echo(f"{row['serial']:<40} {row['identity']:<50} {row['not_after']} {status}")


@pki.command("verify")
@click.argument("cert_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--ca", "ca_file", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--crl", "crl_file", type=click.Path(dir_okay=False, exists=True))
@click.option("--role", type=click.Choice(["site", "aggregator"]))
@json_option
@click.pass_context
def verify_cmd(ctx, cert_file, ca_file, crl_file, role, as_json):
    """Check a certificate against the CA (and CRL); print its identity."""
    _json(ctx, as_json)
    ca_cert = pkilib.load_cert(Path(ca_file).read_bytes())
    crl = pkilib.load_crl(Path(crl_file).read_bytes(), ca_cert) if crl_file else None
    cert = pkilib.load_cert(Path(cert_file).read_bytes())
    identity = pkilib.verify_cert(cert, ca_cert=ca_cert, crl=crl, role=role)
    info = _cert_summary(cert, role=identity.role, site_id=identity.site_id)
    echo_json(info) if as_json else click.echo(f"OK {identity.uri} serial {info['serial']}")
