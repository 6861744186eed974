"""Compare the installed distributions of an environment with requirements/lock.txt.

Run with the interpreter of the environment to check (``make venv`` runs it
with ``.venv/bin/python``). Exit 0 when every locked package is installed at
its locked version and nothing else is installed (the project itself and the
interpreter's own bootstrap aside); exit 1 with one line per difference
otherwise, so a venv that drifted from the lock is rebuilt instead of used.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

# "name==version \" at the start of a line, the form pip-compile writes.
_PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\;]+)")
# Installed by the project's editable install, not by the lock.
_PROJECT = "ffsecure"


def canonical(name: str) -> str:
    """PEP 503 name normalization (the form pip and pip-compile compare)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _PIN.match(line)
        if m:
            pins[canonical(m["name"])] = m["version"]
    if not pins:
        raise SystemExit(f"{path}: no 'name==version' pins found; is this a pip-compile lock?")
    return pins


def installed() -> dict[str, str]:
    return {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}


def differences(lock: dict[str, str], have: dict[str, str]) -> list[str]:
    out = []
    for name, version in sorted(lock.items()):
        if name not in have:
            out.append(f"missing: {name}=={version}")
        elif have[name] != version:
            out.append(f"wrong version: {name}=={have[name]} (lock: {version})")
    for name in sorted(set(have) - set(lock) - {_PROJECT}):
        out.append(f"not in the lock: {name}=={have[name]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "lock",
        nargs="?",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "requirements" / "lock.txt",
    )
    args = parser.parse_args(argv)
    problems = differences(read_lock(args.lock), installed())
    if problems:
        print(f"{sys.prefix} does not match {args.lock}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        print(
            "fix: `make clean && make venv` rebuilds the environment from the lock", file=sys.stderr
        )
        return 1
    print(f"{sys.prefix} matches {args.lock} ({len(installed())} distributions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
