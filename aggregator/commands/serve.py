"""``aggregator serve --config DIR/aggregator.toml``: run the mTLS gRPC service until SIGTERM."""

from __future__ import annotations

import logging

import click

from aggregator.tls13 import require_tls13
from ffsecure.clitools import setup_logging


@click.command("serve")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="aggregator.toml in the aggregator home directory.",
)
@click.option(
    "--human-logs", is_flag=True, help="Log readable lines instead of one JSON object per line."
)
@click.pass_context
def serve(ctx: click.Context, config_path: str, human_logs: bool) -> None:
    """Serve sites over mutually-authenticated TLS until SIGTERM, then drain in-flight uploads."""
    tls13 = require_tls13()  # before grpc is imported

    # only now: grpc reads the TLS 1.2 cipher list once, when it is first imported
    from aggregator.server import serve as run

    level = logging.getLevelName(logging.getLogger().level)
    setup_logging(level if isinstance(level, str) else "INFO", json_lines=not human_logs)
    if not tls13:
        logging.getLogger("aggregator.server").warning(
            "grpc was imported before the TLS 1.3 restriction could be set; "
            "TLS 1.2 clients may connect",
            extra={"event": "tls12_possible"},
        )
    run(config_path)
