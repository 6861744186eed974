"""The example files every role starts from, shipped inside the package.

One home for each: the commented ``site.toml`` (``site-node init``), the
aggregator's ``aggregator.toml`` (``aggregator init-config`` and ``aggregator
init`` step 2), the CA operator's ``federation.toml`` (``ffsecure federation
init``), the systemd units of the site node and the aggregator, and the GPU
drop-in for either (``gpu.conf``). The source tree's
``certs/federation.example.toml`` and the files under ``deploy/systemd/`` are
links to these files, so a wheel install and a checkout hold the same bytes.

:func:`write_new` is how every ``init`` command writes one: it never
overwrites (``E_EXISTS``, as ``aggregator init``) and creates the file with ``open(..., "x")``
so that two writers cannot both succeed.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from ffsecure.errors import ConfigError

__all__ = ["NAMES", "FileExistsRefused", "docs_dir", "docs_hint", "fill", "read", "write_new"]

NAMES = (
    "site.toml",
    "aggregator.toml",
    "federation.toml",
    "site-node.service",
    "aggregator.service",
    "gpu.conf",
)


class FileExistsRefused(ConfigError):
    """The file an ``init`` command would write is already there."""

    code = "E_EXISTS"


def read(name: str) -> str:
    """The text of one shipped template (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"no template named {name!r}; templates: {', '.join(NAMES)}")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def fill(text: str, table: str | None, key: str, value: Any) -> str:
    """Set ``key`` of ``[table]`` (None: the top level) in a template, keeping its comment.

    The value is written by tomli_w, so any string is quoted and escaped as TOML
    requires. The key must appear exactly once in that table (a template bug
    otherwise, hence ValueError).
    """
    lines = text.splitlines(keepends=True)
    current: str | None = None
    hits = []
    for number, line in enumerate(lines):
        header = re.fullmatch(r"\[([A-Za-z0-9_.]+)\]\s*", line)
        if header:
            current = header.group(1)
        elif current == table and re.match(rf"{re.escape(key)}\s*=", line):
            hits.append(number)
    if len(hits) != 1:
        raise ValueError(f"template key {table}.{key} found {len(hits)} times")
    line = lines[hits[0]]
    comment = line[line.index("#") :].rstrip("\n") if "#" in line else ""
    rendered = tomli_w.dumps({key: value}).strip()
    lines[hits[0]] = (f"{rendered:<33} {comment}".rstrip() if comment else rendered) + "\n"
    return "".join(lines)


def write_new(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    """Write ``text`` to a new file at ``path``; refuse if anything is there already."""
    target = Path(path)
    if target.parent != Path("") and not target.parent.is_dir():
        raise ConfigError(
            f"{target.parent} is not a directory",
            hint="create the folder first, or give another path",
        )
    try:
        with open(target, "x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        raise FileExistsRefused(
            f"{target} already exists; nothing was written",
            hint="edit the existing file, or move it away first",
        ) from None
    target.chmod(mode)
    return target


def docs_dir() -> Path | None:
    """Where this installation's documentation lies, or None.

    A checkout (editable install) has ``docs/`` beside the packages; a wheel
    installs the same pages under ``<prefix>/share/ffsecure/docs``.
    """
    for candidate in (
        Path(__file__).resolve().parents[2] / "docs",
        Path(sys.prefix) / "share" / "ffsecure" / "docs",
    ):
        if (candidate / "site-operator.md").is_file():
            return candidate
    return None


def docs_hint(*pages: str) -> str:
    """A ``--help`` epilog naming the installed pages (or where to find them)."""
    found = docs_dir()
    base = f"{found}/" if found else "docs/ of the ffsecure source tree: "
    return "Documentation: " + base + ", ".join(pages)
