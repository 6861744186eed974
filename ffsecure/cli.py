"""``ffsecure``: federation set-up (PKI, manifest), simulation, demo and audit."""

from __future__ import annotations

import click

from ffsecure import __version__
from ffsecure.clitools import LazyGroup, setup_logging

COMMANDS = {
    "simulate": "ffsecure.commands.simulate:simulate",
    "pki": "ffsecure.commands.pki:pki",
    "federation": "ffsecure.commands.federation:federation",
    "audit": "ffsecure.commands.audit:audit",
    "demo": "ffsecure.commands.demo:demo",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ffsecure")
@click.option("--log-level", default="WARNING", show_default=True, help="Logging level.")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_json: bool) -> None:
    """ffsecure: one-shot generative federated learning, signed, sealed and auditable."""
    ctx.ensure_object(dict)
    setup_logging(log_level, json_lines=log_json)


def main() -> None:
    cli(prog_name="ffsecure")


if __name__ == "__main__":
    main()
