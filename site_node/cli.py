"""``site-node``: enroll, train, upload, run as a daemon, status, forget, evaluate."""

from __future__ import annotations

import click

from ffsecure import __version__
from ffsecure.clitools import LazyGroup, setup_logging

COMMANDS: dict[str, str] = {
    "enroll": "site_node.commands.enroll:enroll",
    "evaluate": "site_node.commands.evaluate:evaluate",
    "forget": "site_node.commands.forget:forget",
    "install-cert": "site_node.commands.install_cert:install_cert",
    "privacy-check": "site_node.commands.privacy_check:privacy_check",
    "run": "site_node.commands.run:run",
    "status": "site_node.commands.status:status",
    "train": "site_node.commands.train:train",
    "upload": "site_node.commands.upload:upload",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="site-node")
@click.option("--log-level", default="INFO", show_default=True, help="Logging level.")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line.")
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_json: bool) -> None:
    """site-node: train, sign, seal and upload this site's generator module."""
    ctx.ensure_object(dict)
    setup_logging(log_level, json_lines=log_json)


def main() -> None:
    cli(prog_name="site-node")


if __name__ == "__main__":
    main()
