"""``site-node``: check, init, enroll, train, upload, run as a daemon, status, forget,
discard, evaluate, receipts."""

from __future__ import annotations

import sys

from ffsecure.clitools import EXIT_ERROR, program_group, report_error
from site_node.platforms import UnsupportedPlatformError, check_platform

COMMANDS: dict[str, str] = {
    "discard": "site_node.commands.discard:discard",
    "check": "site_node.commands.check:check",
    "enroll": "site_node.commands.enroll:enroll",
    "evaluate": "site_node.commands.evaluate:evaluate",
    "forget": "site_node.commands.forget:forget",
    "init": "site_node.commands.init:init",
    "install-cert": "site_node.commands.install_cert:install_cert",
    "install-kit": "site_node.commands.install_kit:install_kit",
    "privacy-check": "site_node.commands.privacy_check:privacy_check",
    "receipts": "site_node.commands.receipts:receipts",
    "run": "site_node.commands.run:run",
    "status": "site_node.commands.status:status",
    "train": "site_node.commands.train:train",
    "upload": "site_node.commands.upload:upload",
}

cli = program_group(
    "site-node",
    COMMANDS,
    "site-node: train, sign, seal and upload this site's generator module.",
    docs=("site-operator.md", "privacy.md"),
)


def main() -> None:
    try:
        check_platform()  # before any command imports fcntl (POSIX only)
    except UnsupportedPlatformError as exc:
        report_error(exc, as_json="--json" in sys.argv)
        sys.exit(EXIT_ERROR)
    cli(prog_name="site-node")


if __name__ == "__main__":
    main()
