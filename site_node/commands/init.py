"""``site-node init``: write this site's commented ``site.toml`` (and, on request, its systemd
unit).

The file is the shipped template (``ffsecure/templates/site.toml``, every key
with its default and a comment), prefilled with what the site was told by
the CA operator: the federation id, its own site id, and where its data is.
The filled text is parsed with the same parser ``site-node`` uses before it
is written, so a bad value is refused here (``E_CONFIG``) and not at the
first ``train``; an existing file is never overwritten (``E_EXISTS``).
"""

from __future__ import annotations

from pathlib import Path

import click

from ffsecure import templates
from ffsecure.clitools import echo_json
from site_node.commands._common import json_option
from site_node.config import DEFAULT_TOML, parse_config


def render_site_toml(
    *,
    federation_id: str | None,
    site_id: str | None,
    data_source: str | None,
    state_dir: str | None,
) -> str:
    """The template with the given values filled in (None keeps the template's)."""
    text = DEFAULT_TOML
    for table, key, value in (
        ("site", "federation_id", federation_id),
        ("site", "site_id", site_id),
        ("site", "state_dir", state_dir),
        ("data", "source", data_source),
    ):
        if value is not None:
            text = templates.fill(text, table, key, value)
    return text


@click.command("init")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write site.toml (refused if the file exists).",
)
@click.option("--federation-id", help="The federation id the CA operator gave you.")
@click.option("--site-id", help="This site's id, as the CA will put it in the certificate.")
@click.option("--data-source", help="npz:PATH | folder:PATH | dicom:PATH | digits | medmnist:NAME.")
@click.option("--state-dir", help="The state directory [default: state, next to site.toml].")
@click.option(
    "--systemd-unit",
    "unit_path",
    type=click.Path(dir_okay=False),
    help="Also write the site-node systemd unit here (refused if the file exists).",
)
@json_option
@click.pass_context
def init(
    ctx: click.Context,
    config_path: str,
    federation_id: str | None,
    site_id: str | None,
    data_source: str | None,
    state_dir: str | None,
    unit_path: str | None,
    as_json: bool,
) -> None:
    """Write a commented site.toml to start from; never overwrites.

    \b
    Next: edit what the comments ask for, then
      site-node enroll --config site.toml        (makes the key and the CSR for the CA)
      site-node install-kit site-ID.kit --config site.toml \
                            --expect-ca-fingerprint FP   (the CA's answer)
      site-node status --config site.toml
    """
    ctx.ensure_object(dict)["json"] = as_json
    path = Path(config_path)
    text = render_site_toml(
        federation_id=federation_id, site_id=site_id, data_source=data_source, state_dir=state_dir
    )
    parse_config(text, path.resolve())
    if unit_path is not None and Path(unit_path).exists():
        raise templates.FileExistsRefused(
            f"{unit_path} already exists; nothing was written",
            hint="edit the existing unit, or move it away first",
        )
    written = [str(templates.write_new(path, text, mode=0o600))]
    if unit_path is not None:
        written.append(str(templates.write_new(unit_path, templates.read("site-node.service"))))
    if as_json:
        echo_json({"written": written})
        return
    for name in written:
        click.echo(f"wrote {name}")
    click.echo(f"next: edit {path}, then site-node enroll --config {path}")
