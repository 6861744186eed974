"""One exception hierarchy with stable, script-matchable error codes.

Every error carries a ``code`` (e.g. ``E_SIGNATURE``) that never changes
between releases, a message saying what is wrong, and a ``hint`` saying what
to do. Layers raise the most specific subclass; the edges (CLI, gRPC) map
``code`` onto exit codes or gRPC status details.

Every code is listed, with the class that raises it and its meaning, in
:mod:`ffsecure.errorcodes` (rendered in ``docs/errors.md``). A caller that must
tell failures apart catches a subclass (``except TransientError``), never
compares ``exc.code`` strings: a code is for scripts and people, a class for code.
"""

from __future__ import annotations


class FFSecureError(Exception):
    """Base of every error ffsecure raises on purpose."""

    code: str = "E_INTERNAL"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class DefaultHint(FFSecureError):
    """Mixin: an error class whose raise sites name no hint gets ``default_hint``.

    Put it first in the bases (``class X(DefaultHint, FormatError)``) so that its
    ``__init__`` fills the hint before :class:`FFSecureError` stores it. It derives
    from :class:`FFSecureError` (it declares no code of its own) so that its
    ``super().__init__`` call is typed; the method order stays X, DefaultHint,
    FormatError, FFSecureError.
    """

    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None):
        super().__init__(message, hint=hint if hint is not None else self.default_hint, code=code)


class TransientError(FFSecureError):
    """A failure that retrying later may cure: the peer is down, busy or rate-limiting,
    a lock is held, or the work was stopped on request.

    Callers that retry (the site daemon, the upload queue) branch on this class,
    never on code strings; each subclass keeps its own code.
    """


class ConfigError(FFSecureError):
    """A configuration file or option is missing, malformed or unsafe."""

    code = "E_CONFIG"


class UsageError(FFSecureError):
    """A command was given the wrong kind of input (a file of another kind): exit status 2.

    Not evidence of anything: the message says what the input looks like and what to pass.
    """

    code = "E_USAGE"


class DataError(FFSecureError):
    """Input data could not be found, read or validated."""

    code = "E_DATA"


class DPError(FFSecureError):
    """Differential-privacy settings cannot be honoured."""

    code = "E_DP"


class FormatError(FFSecureError):
    """Bytes do not parse as the expected record (JSON, safetensors, protobuf)."""

    code = "E_FORMAT"


class VerificationError(FFSecureError):
    """A signature, hash, certificate or policy check failed."""

    code = "E_VERIFY"


class PolicyError(VerificationError):
    """A module breaks the federation's policy."""

    code = "E_POLICY"


class FederationMismatchError(DefaultHint, VerificationError):
    """A record names a different federation than the one expected."""

    code = "E_FEDERATION_MISMATCH"
    default_hint = "use the federation manifest of the federation you are sending to"


class TooLargeError(DefaultHint, VerificationError):
    """An input is larger than the federation allows."""

    code = "E_TOO_LARGE"
    default_hint = (
        "the federation manifest's limits.max_module_bytes caps a module; make it smaller"
    )


class CryptoError(FFSecureError):
    """Sealing, opening, wrapping or unwrapping failed."""

    code = "E_CRYPTO"


class LedgerError(FFSecureError):
    """The transparency log is inconsistent or a proof does not verify."""

    code = "E_LEDGER"


class StoreError(FFSecureError):
    """The module store could not complete an operation."""

    code = "E_STORE"


class NotFoundError(FFSecureError):
    """A named object (module, dataset, classifier, entry) does not exist."""

    code = "E_NOT_FOUND"
