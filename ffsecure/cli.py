"""``ffsecure``: federation set-up (PKI, manifest), simulation, demo, audit and witness."""

from __future__ import annotations

from ffsecure.clitools import program_group

COMMANDS = {
    "simulate": "ffsecure.commands.simulate:simulate",
    "pki": "ffsecure.commands.pki:pki",
    "federation": "ffsecure.commands.federation:federation",
    "audit": "ffsecure.commands.audit:audit",
    "witness": "ffsecure.commands.witness:witness",
    "demo": "ffsecure.commands.demo:demo",
}

cli = program_group(
    "ffsecure",
    COMMANDS,
    "ffsecure: one-shot generative federated learning, signed, sealed and auditable.",
    log_level="WARNING",
    docs=("pki.md", "auditor-guide.md", "simulate.md"),
)


def main() -> None:
    cli(prog_name="ffsecure")


if __name__ == "__main__":
    main()
