"""``aggregator serve --dir DIR``: run the mTLS gRPC service until SIGTERM.

``--dir DIR`` names the aggregator home (its ``aggregator.toml`` is read), as
every other operator command does; ``--config DIR/aggregator.toml`` is the
older spelling, still accepted (hidden). ``--metrics-listen HOST:PORT`` turns
on the Prometheus endpoint (docs/operator-guide.md, "Monitoring").
"""

from __future__ import annotations

import logging

import click

from aggregator.commands.context import dir_option
from aggregator.home import AggregatorHome
from aggregator.tls13 import require_tls13
from ffsecure.clitools import log_format_option, setup_command_logging


@click.command("serve")
@dir_option
@click.option(
    "--metrics-listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics here (overrides [metrics] listen; loopback unless "
    "[metrics] allow_non_loopback = true).",
)
@log_format_option
@click.pass_context
def serve(
    ctx: click.Context, home_dir: str, metrics_listen: str | None, log_json: bool | None
) -> None:
    """Serve sites over mutually-authenticated TLS until SIGTERM, then drain in-flight uploads."""
    tls13 = require_tls13()  # before grpc is imported

    # only now: grpc reads the TLS 1.2 cipher list once, when it is first imported
    from aggregator.server import serve as run

    setup_command_logging(ctx, log_json)
    if not tls13:
        logging.getLogger("aggregator.server").warning(
            "grpc was imported before the TLS 1.3 restriction could be set; "
            "TLS 1.2 clients may connect",
            extra={"event": "tls12_possible"},
        )
    run(
        ctx.obj.get("config_file") or AggregatorHome.at(home_dir).config,
        metrics_listen=metrics_listen,
    )
