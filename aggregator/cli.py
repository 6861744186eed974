"""``aggregator``: check, init, serve, modules, synthesize, train, publish, ledger, status."""

from __future__ import annotations

from ffsecure.clitools import program_group

COMMANDS: dict[str, str] = {
    "check": "aggregator.commands.check:check",
    "init": "aggregator.commands.init:init",
    "init-config": "aggregator.commands.init:init_config",
    "install-kit": "aggregator.commands.install_kit:install_kit",
    "ledger": "aggregator.commands.ledger:ledger",
    "modules": "aggregator.commands.modules:modules",
    "publish": "aggregator.commands.publish:publish",
    "retrain": "aggregator.commands.train:retrain",
    "serve": "aggregator.commands.serve:serve",
    "status": "aggregator.commands.status:status",
    "synthesize": "aggregator.commands.synthesize:synthesize",
    "train": "aggregator.commands.train:train",
}

cli = program_group(
    "aggregator",
    COMMANDS,
    "aggregator: verify and store modules, keep the ledger, synthesize and train.",
    docs=("operator-guide.md", "grpc.md"),
)


def main() -> None:
    cli(prog_name="aggregator")


if __name__ == "__main__":
    main()
