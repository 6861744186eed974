"""Identifiers: one rule per kind of id, checked whole with ``fullmatch``.

Every id that crosses a trust boundary (a module id in a signed manifest, an
upload id in a gRPC chunk, a site id in a certificate or CSR, an actor in a
ledger entry, a host name, a checkpoint file name in an audit bundle) is
checked here, by the one :class:`IdRule` for its kind; other modules import
the rule or the ``check_*`` function, never write a pattern of their own.

Invariants:

* patterns carry no anchors and are only ever applied with
  :meth:`re.Pattern.fullmatch` through :meth:`IdRule.matches`, so no prefix
  of a value can pass (``re.match`` with ``^...$`` accepts ``"<id>\\n"``,
  since ``$`` also matches before a final newline);
* every character class is an explicit ASCII range (no ``\\w``, ``\\d`` or
  ``str.isdigit``, which accept non-ASCII letters and digits), so no id holds a
  control character, a space or a non-ASCII character;
* the length is bounded before the pattern runs, and the type is checked
  (a non-string is never an id).

A failed check raises a typed error with a stable code (``E_MODULE_ID``,
``E_IDENTITY``, ``E_ARTIFACT_ID``) before anything is stored or written;
callers at an edge with their own error class (the upload staging, the
ledger entry checker) use :meth:`IdRule.matches` and raise theirs.

Site and federation ids follow the rule certificates are issued with
(lowercase, 1-63 characters); no writer could ever produce another.

The ``NewType`` aliases (:data:`SiteId`, :data:`ModuleId`, :data:`ArtifactId`,
:data:`Sha256Hex`) name a string that has passed its rule; the checkers return
them, and the typed records (``ffsecure.records.entries``) carry them, so a
type checker tells a checked id from any other string.
A checker takes an ``object`` and casts it to ``str`` only after
:meth:`IdRule.matches` has checked its type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NewType, cast

from ffsecure.errors import FormatError, NotFoundError, VerificationError

__all__ = [
    "ACTOR",
    "MAX_REASON_CHARS",
    "clean_reason",
    "ARTIFACT_ID",
    "ArtifactId",
    "ArtifactIdError",
    "FEDERATION_ID",
    "HOST",
    "IdRule",
    "IdentityError",
    "KEY_ID",
    "MAX_TREE_SIZE",
    "MODULE_ID",
    "MODULE_ID_PREFIX",
    "ModuleId",
    "ModuleIdAmbiguousError",
    "ModuleIdError",
    "OPERATOR_NAME",
    "PORT",
    "RULES",
    "SALT",
    "SHA256_HEX",
    "SITE_ID",
    "Sha256Hex",
    "SiteId",
    "TREE_SIZE",
    "UPLOAD_ID",
    "check_artifact_id",
    "check_host",
    "check_id",
    "check_module_id",
    "parse_port",
    "parse_tree_size",
    "resolve_module_id",
]

#: A module id that passed :data:`MODULE_ID` (32 lowercase hex digits).
ModuleId = NewType("ModuleId", str)
#: A site id that passed :data:`SITE_ID` (the certificate rule).
SiteId = NewType("SiteId", str)
#: A dataset or classifier id that passed :data:`ARTIFACT_ID`.
ArtifactId = NewType("ArtifactId", str)
#: A SHA-256 digest as :data:`SHA256_HEX` writes it (64 lowercase hex digits).
Sha256Hex = NewType("Sha256Hex", str)

#: The largest tree size a checkpoint may state (RFC 9162 sizes are uint64; we keep int64).
MAX_TREE_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class IdRule:
    """One kind of id: its pattern (for ``fullmatch`` only), length cap and description."""

    name: str
    pattern: re.Pattern[str]
    max_len: int
    rule: str

    def matches(self, value: object) -> bool:
        """True iff ``value`` is a str of at most ``max_len`` characters, wholly of the rule."""
        return (
            isinstance(value, str)
            and len(value) <= self.max_len
            and self.pattern.fullmatch(value) is not None
        )


_HEX32 = r"[0-9a-f]{32}"
_HEX64 = r"[0-9a-f]{64}"
_SITE = r"[a-z0-9][a-z0-9._-]{0,62}"
_OPERATOR = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
_DNS = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_HEX_LOWER = "lowercase hex digits"
_SITE_RULE = (
    "1-63 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
)

MODULE_ID = IdRule("module id", re.compile(_HEX32), 32, f"32 {_HEX_LOWER}")
#: What a person may type for a module id: its first 8..32 hex digits (``resolve_module_id``).
MODULE_ID_PREFIX = IdRule(
    "module id prefix", re.compile(r"[0-9a-f]{8,32}"), 32, f"8 to 32 {_HEX_LOWER}"
)
UPLOAD_ID = IdRule("upload id", re.compile(_HEX32), 32, f"32 {_HEX_LOWER}")
SALT = IdRule("salt", re.compile(_HEX32), 32, f"32 {_HEX_LOWER}")
SHA256_HEX = IdRule("SHA-256 hash", re.compile(_HEX64), 64, f"64 {_HEX_LOWER}")
KEY_ID = IdRule("key id", re.compile(_HEX64), 64, f"64 {_HEX_LOWER}")
SITE_ID = IdRule("site id", re.compile(_SITE), 63, _SITE_RULE)
FEDERATION_ID = IdRule("federation id", re.compile(_SITE), 63, _SITE_RULE)
ARTIFACT_ID = IdRule(
    "artifact id",
    re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"),
    64,
    "1-64 letters, digits, '_' or '-', starting with a letter or digit",
)
OPERATOR_NAME = IdRule(
    "operator name",
    re.compile(_OPERATOR),
    64,
    "1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit",
)
ACTOR = IdRule(
    "actor",
    re.compile(rf"aggregator|site:{_SITE}|operator:{_OPERATOR}"),
    73,
    "site:<site id>, operator:<name> or aggregator",
)
HOST = IdRule(
    "host",
    re.compile(rf"{_DNS}|[0-9a-fA-F:]+"),
    253,
    "a DNS name or an IP address of at most 253 characters",
)
TREE_SIZE = IdRule(
    "tree size", re.compile(r"0|[1-9][0-9]{0,18}"), 19, "a decimal number without leading zeros"
)
PORT = IdRule("port", re.compile(r"0|[1-9][0-9]{0,4}"), 5, "a decimal port number 0..65535")

#: Every rule, for tests that must hold for all of them.
RULES: tuple[IdRule, ...] = (
    MODULE_ID,
    MODULE_ID_PREFIX,
    UPLOAD_ID,
    SALT,
    SHA256_HEX,
    KEY_ID,
    SITE_ID,
    FEDERATION_ID,
    ARTIFACT_ID,
    OPERATOR_NAME,
    ACTOR,
    HOST,
    TREE_SIZE,
    PORT,
)


# --------------------------------------------------------------------- errors


class ModuleIdError(FormatError):
    """A module id is not 32 lowercase hex digits."""

    code = "E_MODULE_ID"


class ModuleIdAmbiguousError(FormatError):
    """A module id prefix names more than one module."""

    code = "E_MODULE_ID_AMBIGUOUS"


class IdentityError(VerificationError):
    """An id or identity URI is malformed or names the wrong federation/role."""

    code = "E_IDENTITY"


class ArtifactIdError(FormatError):
    """A dataset or classifier id is not 1-64 letters, digits, '_' or '-'."""

    code = "E_ARTIFACT_ID"


# ------------------------------------------------------------------- checkers


def _shown(value: object) -> str:
    return repr(value[:80] if isinstance(value, str) else value)


def check_module_id(module_id: object) -> ModuleId:
    """Return ``module_id`` if it is a module id, else raise E_MODULE_ID."""
    if not MODULE_ID.matches(module_id):
        raise ModuleIdError(
            f"module id {_shown(module_id)} is not {MODULE_ID.rule}",
            hint="module ids come from ffsecure.package.new_module_id",
        )
    return ModuleId(cast(str, module_id))


def resolve_module_id(prefix: object, known: Iterable[str]) -> ModuleId:
    """The module id ``prefix`` names: itself when it is a whole id, else the one id of
    ``known`` that starts with it.

    A prefix is 8..32 lowercase hex digits (:data:`MODULE_ID_PREFIX`); one that is
    not raises E_MODULE_ID, one that starts no known id E_NOT_FOUND, one that
    starts several E_MODULE_ID_AMBIGUOUS naming them.
    """
    if MODULE_ID.matches(prefix):
        return ModuleId(cast(str, prefix))
    if not MODULE_ID_PREFIX.matches(prefix):
        raise ModuleIdError(
            f"module id {_shown(prefix)} is not {MODULE_ID.rule} nor a prefix of "
            f"{MODULE_ID_PREFIX.rule}",
            hint="copy the id from `site-node status` (its first 8 digits are enough)",
        )
    text = cast(str, prefix)
    matches = sorted({m for m in known if MODULE_ID.matches(m) and m.startswith(text)})
    if not matches:
        raise NotFoundError(
            f"no module of this site starts with {text}",
            hint="`site-node status` lists this site's modules; give the full 32-digit id "
            "for a module this site no longer has on record",
        )
    if len(matches) > 1:
        raise ModuleIdAmbiguousError(
            f"{text} starts {len(matches)} modules: {', '.join(matches)}",
            hint="give more digits of the id, or all 32",
        )
    return ModuleId(matches[0])


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid federation or site id, else raise E_IDENTITY."""
    if not SITE_ID.matches(value):
        raise IdentityError(f"{what} {_shown(value)} is not valid", hint=f"use {SITE_ID.rule}")
    return cast(str, value)


def check_host(host: object) -> str:
    """Return ``host`` if it is a DNS name or an IP address, else raise E_IDENTITY."""
    if not HOST.matches(host):
        raise IdentityError(f"host {_shown(host)} is not a DNS name or IP address")
    return cast(str, host)


def check_artifact_id(
    artifact_id: object,
    what: str = "artifact id",
    *,
    hint: str = "use an id such as ds-20261122-01",
) -> ArtifactId:
    """Return ``artifact_id`` if it is a dataset/classifier id, else raise E_ARTIFACT_ID."""
    if not ARTIFACT_ID.matches(artifact_id):
        raise ArtifactIdError(f"{what} {_shown(artifact_id)} is not {ARTIFACT_ID.rule}", hint=hint)
    return ArtifactId(cast(str, artifact_id))


def parse_tree_size(text: object) -> int | None:
    """The tree size a decimal text (a checkpoint file name or line) states, or None."""
    if not TREE_SIZE.matches(text):
        return None
    size = int(cast(str, text))
    return size if size <= MAX_TREE_SIZE else None


#: A deletion or discard reason: 1..500 printable characters after stripping.
MAX_REASON_CHARS = 500


def clean_reason(text: object) -> str | None:
    """The stripped reason, or None when it is not 1..MAX_REASON_CHARS printable characters.

    One rule for the reason a site sends with RequestDeletion and the one it records
    when it discards a module; each caller raises its own E_REASON error.
    """
    reason = text.strip() if isinstance(text, str) else ""
    if not 0 < len(reason) <= MAX_REASON_CHARS or not reason.isprintable():
        return None
    return reason


def parse_port(text: object) -> int | None:
    """The port a decimal text (the part after the last ':' of host:port) states, or None."""
    if not PORT.matches(text):
        return None
    port = int(cast(str, text))
    return port if port <= 65535 else None
