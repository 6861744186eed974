"""``aggregator``: init, serve, modules, synthesize, train, publish, ledger, status."""

from __future__ import annotations

import click

from ffsecure import __version__
from ffsecure.clitools import LazyGroup, setup_logging

COMMANDS: dict[str, str] = {
    "init": "aggregator.commands.init:init",
    "ledger": "aggregator.commands.ledger:ledger",
    "modules": "aggregator.commands.modules:modules",
    "publish": "aggregator.commands.publish:publish",
    "retrain": "aggregator.commands.train:retrain",
    "serve": "aggregator.commands.serve:serve",
    "status": "aggregator.commands.status:status",
    "synthesize": "aggregator.commands.synthesize:synthesize",
    "train": "aggregator.commands.train:train",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aggregator")
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_json: bool) -> None:
    """aggregator: verify and store modules, keep the ledger, synthesize and train."""
    ctx.ensure_object(dict)
    setup_logging(log_level, json_lines=log_json)


def main() -> None:
    cli(prog_name="aggregator")


if __name__ == "__main__":
    main()
