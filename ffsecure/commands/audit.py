"""``ffsecure audit``: verify an exported audit bundle offline, and render it as an HTML report.

Exit status of ``verify``: 0 when every check passes (warnings allowed), 3 when
any check fails (the findings are listed), 1 when the bundle or an option
cannot be read at all (``error[CODE]``), 2 for usage errors: click's own, and
``E_USAGE`` for a ``--trusted-checkpoint`` file that is neither a receipt nor a
signed checkpoint note (``ffsecure.audit.trusted``), so a wrong file is never
reported as a finding against the log.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click

from ffsecure.audit import AuditResult, audit_bundle, load_bundle
from ffsecure.audit.html import render_html
from ffsecure.audit.trusted import read_trusted
from ffsecure.audit.witnesses import DEFAULT_MAX_AGE, WitnessPolicy, witness_policy
from ffsecure.clitools import echo_json, read_key_arg
from ffsecure.errors import ConfigError
from ffsecure.timefmt import format_duration, parse_duration

EXIT_FINDINGS = 3

_STATUS_STYLE = {"ok": "green", "failed": "bold red", "warning": "yellow", "skipped": "dim"}


def _read_file(path: str, what: str, cap: int = 16 << 20) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"{what} {path} does not exist or is not a file",
            code="E_CONFIG",
            hint=f"pass the path of the {what}",
        )
    if p.stat().st_size > cap:
        raise ConfigError(f"{what} {path} is larger than {cap} bytes", code="E_CONFIG")
    return p.read_bytes()


def _witness_policy(
    keys: tuple[str, ...], quorum: int | None, max_age: str | None
) -> WitnessPolicy | None:
    """The auditor's witness options, parsed once: None without --witness-key."""
    if not keys:
        if quorum is not None or max_age is not None:
            raise click.UsageError("--witness-quorum and --witness-max-age need a --witness-key")
        return None
    witness_keys = [read_key_arg(k, "witness key") for k in keys]
    bound = parse_duration(max_age) if max_age is not None else None
    return witness_policy(witness_keys, quorum, bound)


def _run(
    bundle_dir: str,
    ca: str | None,
    crl: str | None,
    trusted: tuple[str, ...],
    log_key: str | None,
    witnesses: tuple[tuple[str, ...], int | None, str | None] = ((), None, None),
    *,
    federation: str | None = None,
    quiet: bool = False,
):
    # rich only when rendering: keeps `ffsecure --help` fast
    from rich.console import Console

    policy = _witness_policy(*witnesses)
    ca_pem = _read_file(ca, "CA certificate") if ca else None
    crl_pem = _read_file(crl, "CRL") if crl else None
    notes = [
        read_trusted(f"trusted checkpoint {t}", _read_file(t, "trusted checkpoint", 1 << 20))
        for t in trusted
    ]
    vkey = _read_file(log_key, "log key", 4096).decode("utf-8", "replace") if log_key else None
    federation_json = _read_file(federation, "federation manifest", 1 << 20) if federation else None
    bundle = load_bundle(bundle_dir)

    def run() -> AuditResult:
        return audit_bundle(
            bundle,
            ca_pem=ca_pem,
            crl_pem=crl_pem,
            trusted=notes,
            log_vkey=vkey,
            witnesses=policy,
            federation_json=federation_json,
        )

    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        return run()
    with console.status(
        f"checking {len(bundle.entries)} entries, {len(bundle.checkpoint_notes)} checkpoints "
        f"and {len(bundle.modules)} modules…"
    ):
        return run()


def _common(f):
    f = click.option(
        "--witness-max-age",
        metavar="DURATION",
        help="How old the witness cosignatures that meet the quorum may be, e.g. 36h, 7d, "
        f"1d12h (default: {format_duration(DEFAULT_MAX_AGE)}). A quorum met only by older "
        "cosignatures, or by ones dated past your clock, is FAILED (E_AUDIT_WITNESS_STALE): "
        "an old state of the log handed over as the current one (a rollback).",
    )(f)
    f = click.option(
        "--witness-quorum",
        type=click.IntRange(min=1),
        help="How many of the --witness-key witnesses must have cosigned the latest "
        "checkpoint (default: all of them).",
    )(f)
    f = click.option(
        "--witness-key",
        "witness_keys",
        multiple=True,
        help="A witness verifier key you trust (name+hash+base64, or a file holding it). "
        "Without a quorum of valid cosignatures on the latest checkpoint the verdict is "
        "FAILED (E_AUDIT_WITNESS_QUORUM). Repeatable; one public key under two names is "
        "refused (E_WITNESS_KEY_REUSED).",
    )(f)
    f = click.option(
        "--log-key",
        type=click.Path(dir_okay=False),
        help="The log's note verifier key as you hold it (the federation "
        "manifest's log_public_key). Needed when the bundle has no CA-signed "
        "federation.json: without either, the verdict is FAILED "
        "(E_AUDIT_LOG_KEY_UNPINNED).",
    )(f)
    f = click.option(
        "--trusted-checkpoint",
        "trusted",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="A signed checkpoint you kept from earlier: a checkpoint note (e.g. from an earlier "
        "bundle) or a site's receipt from `site-node receipts export`. This log must extend it "
        "(and hold the receipt's entry). Another kind of file is a usage error (exit 2, "
        "E_USAGE). Repeatable.",
    )(f)
    f = click.option(
        "--federation",
        type=click.Path(dir_okay=False),
        help="The CA-signed federation.json you hold, used instead of the bundle's: every "
        "module's policy (DP included) is checked against it. Needed when the bundle has "
        "none: with modules registered and no manifest, the verdict is FAILED "
        "(E_AUDIT_NO_FEDERATION); a bundle manifest that differs from it is "
        "E_AUDIT_FEDERATION. Whichever is in force must be the newest manifest the log "
        "records (federation.loaded, else E_AUDIT_FEDERATION_STALE). It also binds the "
        "log key.",
    )(f)
    f = click.option(
        "--crl",
        type=click.Path(dir_okay=False),
        help="The CA's own current CRL, used instead of the bundle's crl.pem "
        "(needed when the bundle has none). Must be signed by the CA and not "
        "older than the newest CRL the log records (crl.loaded).",
    )(f)
    return f


def _print_summary(result) -> None:
    # rich only when rendering: keeps `ffsecure --help` fast
    from rich.console import Console
    from rich.table import Table

    console = Console()
    latest = result.log.latest
    head = (
        f"[bold]{result.bundle.path}[/bold]  log {latest.origin if latest else '?'}  "
        f"size {latest.size if latest else '?'}  "
        f"root {latest.root_hash.hex()[:16] if latest else '?'}…"
    )
    console.print(head)
    table = Table(title="audit checks", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail")
    for c in result.checks:
        table.add_row(c.name, f"[{_STATUS_STYLE[c.status]}]{c.status}[/]", c.detail)
    console.print(table)
    if result.findings:
        ft = Table(title="findings")
        ft.add_column("severity")
        ft.add_column("code")
        ft.add_column("where")
        ft.add_column("what", overflow="fold")
        for f in result.findings:
            ft.add_row(
                f"[{'bold red' if f.severity == 'error' else 'yellow'}]{f.severity}[/]",
                f.code,
                f.where(),
                f.message,
            )
        console.print(ft)
    if result.ok:
        console.print(f"[bold green]VERIFIED[/]: {len(result.warnings)} warning(s)")
    else:
        console.print(
            f"[bold red]FAILED[/]: {len(result.errors)} finding(s), "
            f"{len(result.warnings)} warning(s)"
        )


@click.group("audit")
def audit() -> None:
    """Check an exported ledger bundle offline and report on it (docs/auditor-guide.md)."""


@audit.command("verify")
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.option(
    "--ca",
    required=True,
    type=click.Path(dir_okay=False),
    help="The federation CA certificate you hold (the root of trust).",
)
@_common
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def verify_cmd(
    ctx,
    bundle_dir,
    ca,
    crl,
    federation,
    trusted,
    log_key,
    witness_keys,
    witness_quorum,
    witness_max_age,
    as_json,
):
    """Verify BUNDLE_DIR: checkpoints, consistency, entries, module signatures, deletions, lineage.

    Exits 0 when every check passes, 3 with the list of findings when any fails.
    """
    ctx.ensure_object(dict)["json"] = as_json
    witnesses = (witness_keys, witness_quorum, witness_max_age)
    result = _run(
        bundle_dir, ca, crl, trusted, log_key, witnesses, federation=federation, quiet=as_json
    )
    if as_json:
        echo_json(result.to_dict())
    else:
        _print_summary(result)
    if not result.ok:
        ctx.exit(EXIT_FINDINGS)


@audit.command("report")
@click.argument("bundle_dir", type=click.Path(file_okay=False))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the HTML report (self-contained, opens from disk).",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False),
    help="The federation CA certificate you hold "
    "(default: the bundle's ca.pem, flagged as unpinned).",
)
@_common
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.pass_context
def report_cmd(
    ctx,
    bundle_dir,
    out,
    ca,
    crl,
    federation,
    trusted,
    log_key,
    witness_keys,
    witness_quorum,
    witness_max_age,
    as_json,
):
    """Write an HTML report of BUNDLE_DIR: verdict, timeline, sites, lineage, deletions with proofs.

    The report is written whatever the verdict; the exit status is 0 once it is written.
    Without --ca the verdict is FAILED (E_AUDIT_CA_UNPINNED), here and in the report.
    """
    ctx.ensure_object(dict)["json"] = as_json
    witnesses = (witness_keys, witness_quorum, witness_max_age)
    result = _run(
        bundle_dir, ca, crl, trusted, log_key, witnesses, federation=federation, quiet=as_json
    )
    html = render_html(result).encode("utf-8")
    target = Path(out)
    if target.is_dir():
        raise ConfigError(
            f"{out} is a directory", code="E_CONFIG", hint="give a file name such as report.html"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(html)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if as_json:
        echo_json(
            {
                "report": str(target),
                "verdict": result.verdict,
                "errors": len(result.errors),
                "warnings": len(result.warnings),
                "bytes": len(html),
            }
        )
    else:
        for line in _report_lines(result, target, len(html)):
            click.echo(line)


def _report_lines(result, target: Path, size: int) -> list[str]:
    """The verdict as the report's first section states it: codes of the findings, and for a
    report drawn with the bundle's own CA, that nothing was checked against yours."""
    codes = sorted({f.code for f in result.errors})
    found = f": {', '.join(codes)}" if codes else ""
    lines = [
        f"{result.verdict}: wrote {target} ({size} bytes, {len(result.errors)} finding(s){found})"
    ]
    if "E_AUDIT_CA_UNPINNED" in codes:
        lines.append(
            "  the CA was not pinned: signatures were checked against the bundle's own ca.pem, "
            "which the exporter chose; pass --ca with the federation CA you hold"
        )
    return lines
