"""Where ``site-node`` runs: Linux (the supported platform), and macOS.

The node locks its state directory with ``flock`` (:mod:`fcntl`, POSIX only) so
that two commands never change it at once, and runs as a systemd service on
Linux. On another platform (Windows) it stops at start with ``E_PLATFORM`` and a
hint, before any command module imports :mod:`fcntl`; nothing is read or
written. docs/site-operator.md, "Supported platforms", says the same.
"""

from __future__ import annotations

import sys

from ffsecure.errors import FFSecureError

__all__ = ["SUPPORTED", "UnsupportedPlatformError", "check_platform"]

#: ``sys.platform`` prefixes site-node runs on, with the name a person knows.
SUPPORTED = {"linux": "Linux", "darwin": "macOS"}
_NAMES = {"win32": "Windows", "cygwin": "Cygwin"}


class UnsupportedPlatformError(FFSecureError):
    """site-node cannot run on this operating system."""

    code = "E_PLATFORM"


def check_platform(platform: str | None = None) -> None:
    """Raise ``E_PLATFORM`` unless ``platform`` (default: ``sys.platform``) is supported."""
    current = sys.platform if platform is None else platform
    if any(current.startswith(prefix) for prefix in SUPPORTED):
        return
    name = _NAMES.get(current, current)
    raise UnsupportedPlatformError(
        f"site-node does not run on {name}: it locks its state directory with flock "
        "(the POSIX fcntl module), which this platform does not have",
        hint=f"run site-node on {' or '.join(SUPPORTED.values())} (on Windows: in WSL 2, "
        "a Linux virtual machine or a container); see docs/site-operator.md, "
        '"Supported platforms"',
    )
