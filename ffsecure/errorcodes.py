"""The registry of every error code ffsecure emits: the code, who raises it, what it means.

A code (``E_...``) is a public interface, like Flower's ``ExitCode``: scripts
match it in CLI output (``error[E_CODE] ...``), in gRPC refusals (the
``ffsecure-error-code`` trailing metadata and ``[E_CODE]`` in the status
message) and in audit reports (``Finding.code``). So:

* a code never changes meaning and is never reused for something else;
* every code raised or declared in ``ffsecure``, ``aggregator`` and
  ``site_node`` is listed here (``tests/unit/test_errorcodes.py`` scans the
  source and fails on an unlisted one), with the classes that carry it, given
  as dotted names because the library may not import the roles;
* ``docs/errors.md`` is rendered from this table (:func:`render_markdown`;
  regenerate it with ``python scripts/gen_error_docs.py``), and the same test
  fails when the page and the table differ.

Two kinds of code live here: errors (raised as an
:class:`~ffsecure.errors.FFSecureError` subclass) and audit findings
(``E_AUDIT_...`` codes of :class:`ffsecure.audit.findings.Finding`, reported by
``ffsecure audit verify`` rather than raised). One family has a variable tail:
``E_RPC_<STATUS>``, a site's name for a gRPC call that failed below ffsecure
(no code came back), where ``<STATUS>`` is the gRPC status name.

Adding a code: raise it (a subclass if a caller may branch on it), add one
line to the right section below, run the script, commit both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ERROR = "error"
FINDING = "finding"

#: ``E_RPC_<STATUS>``: a gRPC call failed below ffsecure; ``<STATUS>`` is grpc.StatusCode's name.
RPC_CODE_PREFIX = "E_RPC_"

_ERR = "ffsecure.errors."
_PKI = "ffsecure.pki."
_ENV = "ffsecure.envelope."
_PKG = "ffsecure.package."
_FED = "ffsecure.federation."
_PRIV = "ffsecure.privacy."
_GRPC = "aggregator.grpc_errors."
_CLIENT = "site_node.client."
_STATE = "site_node.state."
_DEMO = "ffsecure.demo.procs.DemoError"
_FINDING = "ffsecure.audit.findings.Finding"
_LIN = "ffsecure.records.lineage."


@dataclass(frozen=True)
class ErrorCode:
    """One registered code: what it means, where it is grouped, and the classes that carry it."""

    code: str
    section: str
    meaning: str
    raised_as: tuple[str, ...]
    kind: str = ERROR


def _section(
    title: str, rows: Iterable[tuple[str, str, str | tuple[str, ...]]], kind: str = ERROR
) -> list[ErrorCode]:
    return [
        ErrorCode(code, title, meaning, (cls,) if isinstance(cls, str) else cls, kind)
        for code, meaning, cls in rows
    ]


_GENERAL = _section(
    "General (base classes)",
    [
        (
            "E_INTERNAL",
            "an unexpected failure; the aggregator logs the details",
            (_ERR + "FFSecureError", _CLIENT + "AggregatorBusyError"),
        ),
        (
            "E_CONFIG",
            "a configuration file or option is missing, malformed or unsafe",
            _ERR + "ConfigError",
        ),
        (
            "E_USAGE",
            "an option names a file of the wrong kind (exit 2); the message says what to pass",
            _ERR + "UsageError",
        ),
        ("E_DATA", "input data could not be found, read or validated", _ERR + "DataError"),
        ("E_DP", "the differential-privacy settings cannot be honoured", _ERR + "DPError"),
        ("E_FORMAT", "bytes do not parse as the expected record", _ERR + "FormatError"),
        (
            "E_FIELD",
            "a value does not match its field spec (callers re-raise it with their own code)",
            "ffsecure.records.fields.FieldError",
        ),
        (
            "E_VERIFY",
            "a signature, hash, certificate or policy check failed",
            _ERR + "VerificationError",
        ),
        ("E_POLICY", "a module breaks the federation's policy", _ERR + "PolicyError"),
        ("E_CRYPTO", "sealing, opening, wrapping or unwrapping failed", _ERR + "CryptoError"),
        (
            "E_LEDGER",
            "the transparency log is inconsistent or a proof does not verify",
            _ERR + "LedgerError",
        ),
        ("E_STORE", "the module store could not complete an operation", _ERR + "StoreError"),
        (
            "E_NOT_FOUND",
            "a named module, dataset, classifier, entry or serial does not exist",
            (_ERR + "NotFoundError", _ERR + "ConfigError", _CLIENT + "NoProofError"),
        ),
        (
            "E_EXISTS",
            "a file or folder that would be written is already there; nothing is overwritten",
            ("ffsecure.templates.FileExistsRefused", _ERR + "ConfigError"),
        ),
    ],
)

_FORMATS = _section(
    "Canonical JSON, times and tensors",
    [
        (
            "E_JSON",
            "not JSON, or JSON that canonical JSON forbids (NaN, duplicate keys, huge integers)",
            _ERR + "FormatError",
        ),
        ("E_JSON_DEPTH", "JSON nested deeper than the parser allows", _ERR + "FormatError"),
        ("E_JSON_SIZE", "a JSON document larger than its limit", _ERR + "FormatError"),
        (
            "E_NOT_CANONICAL",
            "JSON that is not in canonical form (sorted keys, no whitespace, UTF-8)",
            _ERR + "FormatError",
        ),
        (
            "E_TIME_FORMAT",
            "a time that is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)",
            _ERR + "FormatError",
        ),
        (
            "E_SAFETENSORS_HEADER",
            "a safetensors header that is short, oversized or not an object",
            _ERR + "FormatError",
        ),
        (
            "E_TENSOR_DTYPE",
            "a tensor's dtype is not the one the architecture needs",
            _ERR + "FormatError",
        ),
        (
            "E_TENSOR_NAME",
            "the tensor names differ from the declared architecture's",
            _ERR + "FormatError",
        ),
        (
            "E_TENSOR_SHAPE",
            "a tensor's shape differs from the declared architecture's",
            _ERR + "FormatError",
        ),
        (
            "E_TENSOR_VALUE",
            "a floating tensor holds NaN or an infinity (diverged or tampered)",
            "ffsecure.generators.state.TensorValueError",
        ),
    ],
)

_PKI_ROWS = _section(
    "Identities, certificates and keys",
    [
        (
            "E_MODULE_ID",
            "a module id is not 32 lowercase hex digits (or too many ids were named)",
            ("ffsecure.records.ids.ModuleIdError", _GRPC + "RequestError"),
        ),
        (
            "E_MODULE_ID_AMBIGUOUS",
            "a module id prefix (8+ hex digits) starts more than one of this site's modules",
            "ffsecure.records.ids.ModuleIdAmbiguousError",
        ),
        (
            "E_ARTIFACT_ID",
            "a dataset or classifier id is not 1-64 letters, digits, '_' or '-'",
            "ffsecure.records.ids.ArtifactIdError",
        ),
        ("E_SITE_ID", "a site id does not follow the site-id rule", _ERR + "FormatError"),
        (
            "E_IDENTITY",
            "an identity URI or site id is malformed or names the wrong federation or role",
            ("ffsecure.records.ids.IdentityError", _GRPC + "RequestError"),
        ),
        (
            "E_CA",
            "the CA directory is missing, already exists, or its key cannot be loaded",
            _PKI + "CAError",
        ),
        ("E_CSR", "a CSR is malformed, unsigned or asks for the wrong identity", _PKI + "CSRError"),
        ("E_CRL", "a CRL does not parse or is not signed by the CA", _PKI + "CRLError"),
        (
            "E_CERT_CHAIN",
            "a certificate was not issued by the federation CA (or is not a valid leaf)",
            _PKI + "CertChainError",
        ),
        (
            "E_CERT_EXPIRED",
            "a certificate is outside its validity period at the time of use",
            _PKI + "CertExpiredError",
        ),
        ("E_CERT_REVOKED", "a certificate is on the federation CRL", _PKI + "CertRevokedError"),
        (
            "E_CERT_USAGE",
            "a certificate lacks the key usage its role needs",
            _PKI + "CertUsageError",
        ),
        (
            "E_CERT_FORMAT",
            "certificate bytes are not canonical PEM of the expected count",
            _ERR + "FormatError",
        ),
        (
            "E_KEY",
            "a private key cannot be read, or does not belong to its certificate",
            (_ERR + "FFSecureError", _ERR + "ConfigError"),
        ),
        (
            "E_KEY_EXISTS",
            "a key file is already there; a key is never overwritten",
            _ERR + "ConfigError",
        ),
        (
            "E_KEY_FORMAT",
            "key bytes have the wrong length or encoding",
            (_ENV + "KeyFormatError", _ERR + "ConfigError"),
        ),
        ("E_KEY_ID", "the envelope was sealed to another aggregator key", _ENV + "KeyIdError"),
        (
            "E_KEY_MISMATCH",
            "a key differs from the one the federation manifest names",
            (_ERR + "ConfigError", _ERR + "VerificationError"),
        ),
        ("E_KEY_MISSING", "a key file does not exist", _ERR + "ConfigError"),
        ("E_KEY_PERMISSIONS", "a key file is readable by group or others", _ERR + "ConfigError"),
        (
            "E_FINGERPRINT",
            "a fingerprint given to --expect-ca-fingerprint is not a SHA-256 fingerprint "
            "(64 hex digits or 32 colon-separated pairs)",
            _PKI + "FingerprintError",
        ),
        (
            "E_KIT",
            "a startup kit is malformed, over a bound (size, members), holds a member that is "
            "not allowed (a path, a link, a device, an unknown name), or a member differs from "
            "what the CA signed; nothing is installed",
            _PKI + "kit.KitError",
        ),
        (
            "E_KIT_FINGERPRINT",
            "a startup kit's ca.pem is not the CA whose fingerprint the installer pinned "
            "(swapped in transit, or the wrong kit); nothing is installed",
            _PKI + "kit.KitFingerprintError",
        ),
        (
            "E_KIT_SIGNATURE",
            "a startup kit's manifest is not signed by the CA it carries; nothing is installed",
            _PKI + "kit.KitSignatureError",
        ),
    ],
)

_PACKAGE = _section(
    "Federation manifest, envelope and module package",
    [
        (
            "E_MANIFEST_SCHEMA",
            "a manifest field is missing, unknown or out of bounds",
            _FED + "ManifestSchemaError",
        ),
        (
            "E_MANIFEST_SIGNATURE",
            "the federation manifest's CA signature does not verify",
            _FED + "ManifestSignatureError",
        ),
        (
            "E_MANIFEST_TIME",
            "a module manifest's creation time lies in the future",
            _PKG + "ManifestTimeError",
        ),
        (
            "E_FEDERATION_MISMATCH",
            "a record names another federation than the one expected",
            (_ERR + "FederationMismatchError", _ERR + "VerificationError"),
        ),
        (
            "E_ENVELOPE_FORMAT",
            "the envelope bytes are not a well-formed ffsecure envelope",
            _ENV + "EnvelopeFormatError",
        ),
        (
            "E_ENVELOPE_OPEN",
            "HPKE decryption failed: wrong key, or the envelope was altered",
            _ENV + "EnvelopeOpenError",
        ),
        (
            "E_ENVELOPE_SUITE",
            "the envelope or key names an HPKE suite ffsecure does not offer",
            _ENV + "EnvelopeSuiteError",
        ),
        (
            "E_TOO_LARGE",
            "an input is larger than the federation or the service allows",
            (_ERR + "TooLargeError", _GRPC + "RequestError"),
        ),
        (
            "E_PACKAGE_FORMAT",
            "the package container bytes are malformed",
            _PKG + "PackageFormatError",
        ),
        (
            "E_SIGNATURE",
            "the site's signature over the module manifest does not verify",
            _PKG + "SignatureError",
        ),
        (
            "E_SITE_MISMATCH",
            "the manifest's site id differs from the signing certificate's",
            _PKG + "SiteMismatchError",
        ),
        (
            "E_WEIGHTS_HASH",
            "the weights do not hash to the manifest's weights_sha256",
            _PKG + "WeightsHashError",
        ),
        (
            "E_GENERATOR_CONFIG",
            "a generator config has an unknown key or an out-of-range value",
            _ERR + "ConfigError",
        ),
    ],
)

_POLICY = _section(
    "Policy and privacy",
    [
        (
            "E_POLICY_CLASSES",
            "a module covers classes outside the federation's label space",
            _PKG + "ClassesPolicyError",
        ),
        (
            "E_POLICY_DP",
            "a module's DP parameters break the federation's DP policy",
            _PKG + "DPPolicyError",
        ),
        (
            "E_POLICY_GENERATOR",
            "a module's generator family or config is not the federation's",
            _PKG + "GeneratorPolicyError",
        ),
        (
            "E_POLICY_SHAPE",
            "a module's image shape is not the federation's",
            _PKG + "ShapePolicyError",
        ),
        (
            "E_DP_CLAIM",
            "a DP claim is malformed, out of bounds, not re-accountable in time, or understated",
            "ffsecure.dp.DPClaimError",
        ),
        (
            "E_DP_ACCOUNTING_TIMEOUT",
            "re-accounting a DP claim did not finish within its time budget (a busy "
            "aggregator, or parameters that need an unusually large accounting)",
            ("ffsecure.dp.DPAccountingTimeoutError", _CLIENT + "AggregatorBusyError"),
        ),
        (
            "E_DP_BUDGET",
            "a site's modules together spend more than the federation's max_epsilon, or "
            "than the site's own dp.max_total_epsilon",
            "ffsecure.dp.DPBudgetError",
        ),
        (
            "E_DP_EPSILON_MISMATCH",
            "the recorded DP parameters do not give the claimed epsilon",
            _PRIV + "accounting.EpsilonMismatchError",
        ),
        (
            "E_PRIVACY_POLICY",
            "a privacy report is missing or breaks the federation's privacy policy",
            _PRIV + "policy.PrivacyPolicyError",
        ),
        (
            "E_PRIVACY_POLICY_SCHEMA",
            "the federation's privacy policy is malformed",
            _PRIV + "policy.PrivacyPolicySchemaError",
        ),
        (
            "E_PRIVACY_REPORT",
            "a privacy report has an unknown key or a value of the wrong type or range",
            _PRIV + "report.PrivacyReportError",
        ),
    ],
)

_LEDGER = _section(
    "Ledger, checkpoints and receipts",
    [
        (
            "E_ENTRY",
            "a ledger entry is not a well-formed canonical entry, or an entry file is damaged",
            _ERR + "LedgerError",
        ),
        (
            "E_PROOF",
            "an inclusion or consistency proof does not verify, or asks outside the tree",
            _ERR + "LedgerError",
        ),
        (
            "E_INCONSISTENT",
            "a checkpoint is not consistent with an earlier one",
            _ERR + "LedgerError",
        ),
        ("E_CHECKPOINT_FORMAT", "a checkpoint note does not parse", _ERR + "LedgerError"),
        (
            "E_CHECKPOINT_SIGNATURE",
            "a checkpoint is not signed by the log key (or no key was given)",
            _ERR + "LedgerError",
        ),
        (
            "E_RECEIPT",
            "a receipt or deletion reply from the aggregator does not verify",
            _ERR + "LedgerError",
        ),
        (
            "E_LOG_FORK",
            "ALARM: the aggregator's log is not an extension of what this site saw before",
            "site_node.sync.LogForkError",
        ),
        (
            "E_LOG_KEY_MISMATCH",
            "the log key is not the one this store's checkpoints are signed with",
            _ERR + "ConfigError",
        ),
        (
            "E_TILES_CONFLICT",
            "a full tile already in the tiles directory differs from this log's (another log "
            "or a fork)",
            "ffsecure.ledger.tiles.TilesConflictError",
        ),
        (
            "E_TILES_READ",
            "a tile needed for a tree size is missing or has the wrong length",
            "ffsecure.ledger.tiles.TileReadError",
        ),
        (
            "E_COSIGNATURE",
            "a witness key or cosignature line is malformed, or a cosignature does not verify",
            "ffsecure.ledger.cosign.CosignatureError",
        ),
        (
            "E_WITNESS_KEY_REUSED",
            "two witness keys given hold one Ed25519 public key under two names (a "
            "cosignature does not name its witness, so they would count twice)",
            "ffsecure.ledger.cosign.WitnessKeyReusedError",
        ),
        (
            "E_WITNESS_FORK",
            "ALARM: a checkpoint is not an extension of the last one the witness cosigned",
            "ffsecure.ledger.witness.WitnessForkError",
        ),
        (
            "E_WITNESS_PROOF",
            "the witness could not build a consistency proof (no or incomplete tiles or bundle)",
            "ffsecure.ledger.witness.WitnessProofError",
        ),
        (
            "E_WITNESS_STATE",
            "the witness directory is missing, damaged, or kept for another log key",
            "ffsecure.ledger.witness.WitnessStateError",
        ),
    ],
)

_STORE = _section(
    "Aggregator store and operations",
    [
        (
            "E_STORE_CORRUPT",
            "a stored blob, row or upload state is damaged or does not decrypt",
            (_ERR + "StoreError", _ERR + "CryptoError", _ERR + "FFSecureError"),
        ),
        (
            "E_STORE_VERSION",
            "the store's schema is not one this release supports",
            _ERR + "StoreError",
        ),
        (
            "E_STORE_CONNECT",
            "the PostgreSQL store's database cannot be reached with store.dsn",
            _ERR + "StoreError",
        ),
        (
            "E_KEK_MISMATCH",
            "the key-encryption key is not the one the store was created with",
            (_ERR + "ConfigError", _ERR + "CryptoError"),
        ),
        (
            "E_DISK_FULL",
            "the aggregator's disk has no room for this write",
            "aggregator.registration.DiskFullError",
        ),
        (
            "E_DUPLICATE_MODULE",
            "the module id is already registered with a different manifest",
            _ERR + "StoreError",
        ),
        (
            "E_DUPLICATE_ARTIFACT",
            "a dataset or classifier with this id already exists",
            _ERR + "StoreError",
        ),
        (
            "E_MODULE_DELETED",
            "the module was deleted; it cannot be used, deleted or uploaded again",
            (_ERR + "StoreError", _GRPC + "RequestError", _CLIENT + "ModuleDeletedRefusal"),
        ),
        (
            "E_STATUS",
            "an artifact's or module's status does not allow the step, or is unknown",
            (_ERR + "StoreError", _ERR + "FormatError"),
        ),
        (
            "E_ARTIFACT_KIND",
            "an artifact kind is neither dataset nor classifier",
            _ERR + "FormatError",
        ),
        (
            "E_DATASET_RETIRED",
            "the dataset is retired (a module it used was deleted)",
            _ERR + "StoreError",
        ),
        (
            "E_CLASSIFIER_RETIRED",
            "the classifier is retired (a module it used was deleted)",
            _ERR + "StoreError",
        ),
        (
            "E_LINEAGE_DELETED",
            "a module was deleted while an artifact was being made from it, or before its "
            "classifier could be published",
            _ERR + "StoreError",
        ),
        (
            "E_LINEAGE_FORMAT",
            "an entry has no readable lineage (neither facts.modules nor facts.lineage), an "
            "empty one, or a recipe naming other modules",
            (_LIN + "LineageError", _LIN + "LineageFormatError"),
        ),
        (
            "E_LINEAGE_MISSING",
            "the lineage document an entry commits to is not at hand",
            _LIN + "LineageMissingError",
        ),
        (
            "E_LINEAGE_COMMITMENT",
            "a lineage document's hash or module count is not the entry's commitment",
            _LIN + "LineageCommitmentError",
        ),
        (
            "E_LINEAGE_DOCUMENT",
            "a lineage document is not canonical, well-formed ffsecure-lineage/v1 JSON",
            _LIN + "LineageDocumentError",
        ),
        (
            "E_NO_MODULES",
            "no live module to synthesize from",
            "aggregator.operations.NoModulesError",
        ),
        ("E_NO_CLASSIFIER", "no trained or published classifier", _ERR + "NotFoundError"),
        ("E_SYNTHESIS", "synthesis settings are out of range", _ERR + "ConfigError"),
        (
            "E_DISTRIBUTED",
            "a --nproc run could not start, or one of its worker processes failed",
            "ffsecure.distributed.DistributedError",
        ),
        (
            "E_DATASET_MISMATCH",
            "a regenerated dataset differs from its recipe's dataset_sha256",
            _ERR + "VerificationError",
        ),
        (
            "E_HASH_MISMATCH",
            "a module's weights differ from those the recipe records",
            _ERR + "VerificationError",
        ),
        (
            "E_EVAL_CLASSES",
            "the aggregator's test set has another number of classes than the federation",
            _ERR + "ConfigError",
        ),
        (
            "E_METRICS_LISTEN",
            "the metrics endpoint's address is malformed, in use, or not loopback without "
            "[metrics] allow_non_loopback",
            _ERR + "ConfigError",
        ),
    ],
)

_RPC = _section(
    "gRPC requests and the site's client",
    [
        (
            "E_REQUEST",
            "a request the service refuses for a reason of its own",
            _GRPC + "RequestError",
        ),
        (
            "E_REQUEST_FORMAT",
            "a unary call carried no request message, or more than one",
            _GRPC + "RequestError",
        ),
        (
            "E_NO_PEER_CERT",
            "the call did not arrive over TLS with a client certificate",
            _GRPC + "RequestError",
        ),
        ("E_PEER_CERT", "the client certificate does not parse", _GRPC + "RequestError"),
        (
            "E_IMPERSONATION",
            "a package signed by one site arrived over another site's connection",
            "aggregator.registration.ImpersonationError",
        ),
        (
            "E_NOT_OWNER",
            "a site asked to delete a module it did not register",
            _GRPC + "RequestError",
        ),
        (
            "E_RATE_LIMIT",
            "the caller exceeded its rate limit; retry with backoff",
            (_GRPC + "RequestError", _CLIENT + "RateLimitedError"),
        ),
        (
            "E_DEADLINE",
            "the request or upload took longer than the service allows",
            (_GRPC + "RequestError", _CLIENT + "AggregatorBusyError"),
        ),
        (
            "E_REASON",
            "a deletion reason is empty, too long or not printable",
            (_GRPC + "RequestError", _STATE + "StateError"),
        ),
        (
            "E_PROOF_RANGE",
            "no such entry or tree size for the proof asked for",
            (_GRPC + "RequestError", _CLIENT + "NoProofError"),
        ),
        (
            "E_UPLOAD_BUSY",
            "another call is writing this upload; resume when it ends",
            (_GRPC + "RequestError", _CLIENT + "AggregatorBusyError"),
        ),
        ("E_UPLOAD_EMPTY", "the upload stream held no chunk", _GRPC + "RequestError"),
        (
            "E_UPLOAD_HASH",
            "the received bytes do not hash to the announced SHA-256",
            _GRPC + "RequestError",
        ),
        ("E_UPLOAD_ID", "an upload id is not a fresh random 128-bit id", _GRPC + "RequestError"),
        (
            "E_UPLOAD_INCOMPLETE",
            "the stream ended before the announced size",
            _GRPC + "RequestError",
        ),
        (
            "E_UPLOAD_MISMATCH",
            "chunks or a resumed upload do not match the upload they name",
            (_GRPC + "RequestError", _CLIENT + "AggregatorError"),
        ),
        (
            "E_UPLOAD_OFFSET",
            "a chunk does not start where the upload continues",
            _GRPC + "RequestError",
        ),
        ("E_UPLOAD_QUOTA", "the site has too many unfinished uploads", _GRPC + "RequestError"),
        (
            "E_UPLOAD_UNKNOWN",
            "reserved: mapped to NOT_FOUND for an unknown upload; not raised by this release",
            _GRPC + "RequestError",
        ),
        (
            "E_SHUTTING_DOWN",
            "reserved: mapped to UNAVAILABLE while the server stops; not raised by this release",
            _GRPC + "RequestError",
        ),
        (
            "E_AGGREGATOR",
            "the aggregator refused a call without a code of its own",
            _CLIENT + "AggregatorError",
        ),
        (
            RPC_CODE_PREFIX + "<STATUS>",
            "a gRPC call failed below ffsecure (unreachable, TLS refused, deadline); retry later",
            _CLIENT + "AggregatorBusyError",
        ),
    ],
)

_EVALUATION = _section(
    "Evaluation reports",
    [
        (
            "E_EVALUATION_CLASSES",
            "per-class metrics do not match the federation's label space",
            _ERR + "FormatError",
        ),
        (
            "E_EVALUATION_EXISTS",
            "the site already reported other metrics for this classifier",
            _ERR + "StoreError",
        ),
        (
            "E_EVALUATION_FORMAT",
            "an evaluation report or its commitment salt is malformed",
            _ERR + "FormatError",
        ),
        (
            "E_EVALUATION_INCONSISTENT",
            "an evaluation report's metrics contradict each other",
            _ERR + "FormatError",
        ),
        ("E_EVALUATION_RANGE", "an evaluation metric is out of range", _ERR + "FormatError"),
        (
            "E_CLASSIFIER_MISMATCH",
            "the published classifier does not fit the federation's classes or image shape",
            _ERR + "VerificationError",
        ),
    ],
)

_SITE = _section(
    "Site node",
    [
        (
            "E_STATE",
            "the state directory is missing something",
            (_STATE + "StateError", "site_node.commands.privacy_check.PrivacyStateError"),
        ),
        ("E_STATE_CORRUPT", "a file in the state directory is damaged", _ERR + "FormatError"),
        (
            "E_STATE_LOCKED",
            "another site-node command holds the state directory; retry when it ends",
            (_STATE + "StateLockedError", _CLIENT + "AggregatorBusyError"),
        ),
        ("E_NOT_ENROLLED", "the site has no key yet: run site-node enroll", _STATE + "StateError"),
        (
            "E_NOT_INSTALLED",
            "the site's certificate or federation manifest is not installed",
            _STATE + "StateError",
        ),
        (
            "E_MODULE_STATUS",
            "the module's status does not allow what was asked",
            _STATE + "ModuleStatusError",
        ),
        (
            "E_PLATFORM",
            "site-node does not run on this operating system (Linux and macOS only)",
            "site_node.platforms.UnsupportedPlatformError",
        ),
        (
            "E_STOPPED",
            "work was stopped on request before it finished; nothing was written",
            ("site_node.training.TrainingStopped", _CLIENT + "AggregatorBusyError"),
        ),
        (
            "E_REFUSAL_CONTRADICTED",
            "ALARM: the aggregator refused a module for a reason the site's own check of the "
            "package it sent contradicts",
            "site_node.refusals.RefusalContradictedError",
        ),
    ],
)

_DATA = _section(
    "Data and training",
    [
        ("E_DATA_CHECKSUM", "a MedMNIST file does not have the official MD5", _ERR + "DataError"),
        ("E_DATA_DOWNLOAD", "a MedMNIST file could not be downloaded", _ERR + "DataError"),
        ("E_DATA_EMPTY", "no images are left after the class filter or split", _ERR + "DataError"),
        ("E_DATA_FORMAT", "data or labels do not have the expected layout", _ERR + "DataError"),
        (
            "E_DATA_LABELS",
            "the local classes do not map onto the federation's label space",
            _ERR + "DataError",
        ),
        ("E_DATA_MISSING", "a data file or folder does not exist", _ERR + "DataError"),
        (
            "E_DATA_PRIVACY_UNIT",
            "data.privacy_unit asks for a unit the source cannot honour: 'patient' needs a "
            "dicom: source, whose files name their patient",
            "ffsecure.data.PrivacyUnitError",
        ),
        ("E_DATA_SHAPE", "an image shape that ffsecure does not support", _ERR + "DataError"),
        ("E_DATA_SPEC", "an unknown or unsupported data set name", _ERR + "DataError"),
        (
            "E_DICOM",
            "a DICOM file is not a single-frame MONOCHROME or RGB image with pixel data "
            "(named by its ordinal and class, never its file name)",
            "ffsecure.dicom.DicomError",
        ),
        (
            "E_DICOM_COMPRESSED",
            "a DICOM file's compressed transfer syntax has no installed decoder or failed to "
            "decode; export uncompressed (Explicit VR Little Endian)",
            "ffsecure.dicom.DicomCompressedError",
        ),
        (
            "E_DICOM_LIMIT",
            "a DICOM source is beyond a bound (file count, file size, rows or columns)",
            "ffsecure.dicom.DicomLimitError",
        ),
        (
            "E_DICOM_PATIENT",
            "images are grouped by patient (privacy_unit = 'patient') but a DICOM file has no "
            "PatientID (named by its ordinal and class, never its file name)",
            "ffsecure.dicom.DicomPatientError",
        ),
        ("E_TRAIN_DIVERGED", "training diverged (non-finite loss)", _ERR + "FFSecureError"),
        ("E_TRAIN_SETTINGS", "training settings are out of range", _ERR + "ConfigError"),
    ],
)

_DEMO_ROWS = _section(
    "Demo",
    [
        (
            "E_DEMO_STEP",
            "a step of the demo failed; the message names the command and its log",
            _DEMO,
        ),
        ("E_DEMO_OUTPUT", "a demo step printed no JSON", _DEMO),
        ("E_DEMO_TIMEOUT", "a demo step ran longer than its limit", _DEMO),
        ("E_DEMO_STOPPED", "the demo is stopping (Ctrl-C or SIGTERM)", _DEMO),
        ("E_DEMO_RECEIPT", "an upload in the demo did not end with a verified receipt", _DEMO),
        ("E_DEMO_DELETION", "the deletion entries in the demo did not verify", _DEMO),
    ],
)

_AUDIT_ERRORS = _section(
    "Audit",
    [
        (
            "E_AUDIT_BUNDLE",
            "the directory is not an audit bundle that can be audited",
            "ffsecure.audit.bundle.BundleError",
        )
    ],
)

_AUDIT_FINDINGS = _section(
    "Audit findings (ffsecure audit verify)",
    [
        (
            "E_AUDIT_BUNDLE_MEMBER",
            "a bundle member is a symbolic link, FIFO or other file of the wrong kind; it is "
            "left unread (a warning)",
            _FINDING,
        ),
        ("E_AUDIT_CA", "no CA certificate: none given and the bundle has none", _FINDING),
        (
            "E_AUDIT_CA_UNPINNED",
            "checked against the bundle's own CA; pass the CA you hold (--ca)",
            _FINDING,
        ),
        ("E_AUDIT_CA_MISMATCH", "the bundle's CA is not the CA the auditor trusts", _FINDING),
        ("E_AUDIT_FEDERATION", "federation.json does not verify against the CA", _FINDING),
        (
            "E_AUDIT_FEDERATION_STALE",
            "the federation manifest is not the one the aggregator recorded last",
            _FINDING,
        ),
        (
            "E_AUDIT_FEDERATION_ROLLBACK",
            "the aggregator went back to an older federation manifest",
            _FINDING,
        ),
        (
            "E_AUDIT_FEDERATION_UNRECORDED",
            "modules are registered but the log records no federation manifest",
            _FINDING,
        ),
        (
            "E_AUDIT_FEDERATION_HISTORY",
            "the federation manifest in force at a module's registration is missing from the "
            "bundle, does not verify, or is misdated by the log; a federations/ file that is "
            "misnamed or does not verify and that no registration needs (a warning)",
            _FINDING,
        ),
        ("E_AUDIT_LOG_KEY", "the bundle's log key does not parse", _FINDING),
        (
            "E_AUDIT_LOG_KEY_UNBOUND",
            "the log key is not the one the CA-signed federation manifest names",
            _FINDING,
        ),
        (
            "E_AUDIT_LOG_KEY_UNPINNED",
            "nothing binds the log key to the CA (no federation.json, no --log-key)",
            _FINDING,
        ),
        ("E_AUDIT_CRL", "a CRL is not one the CA signed", _FINDING),
        (
            "E_AUDIT_NO_CRL",
            "no CRL given or bundled: revoked certificates cannot be told apart",
            _FINDING,
        ),
        ("E_AUDIT_CRL_EXPIRED", "the CRL's nextUpdate has passed", _FINDING),
        ("E_AUDIT_CRL_RECORD", "the log records loading a CRL of another CA", _FINDING),
        ("E_AUDIT_CRL_ROLLBACK", "the aggregator went back to an older CRL", _FINDING),
        (
            "E_AUDIT_CRL_OLDER",
            "the CRL is older than one the aggregator recorded loading",
            _FINDING,
        ),
        (
            "E_AUDIT_CRL_MISMATCH",
            "the CRL has a recorded number but not the recorded bytes",
            _FINDING,
        ),
        ("E_AUDIT_CRL_STALE", "the log records a revocation the CRL does not list", _FINDING),
        ("E_AUDIT_ENTRY", "a ledger entry is not canonical JSON of a well-formed entry", _FINDING),
        ("E_AUDIT_TIME_ORDER", "an entry is dated before the one before it", _FINDING),
        ("E_AUDIT_NO_CHECKPOINT", "the bundle holds no checkpoint", _FINDING),
        ("E_AUDIT_CHECKPOINT_NAME", "a checkpoint file name is not a tree size", _FINDING),
        (
            "E_AUDIT_CHECKPOINT_SIGNATURE",
            "a checkpoint is not signed by the log key or names another log",
            _FINDING,
        ),
        (
            "E_AUDIT_MISSING_ENTRIES",
            "a checkpoint covers more entries than the bundle holds",
            _FINDING,
        ),
        (
            "E_AUDIT_ROOT_MISMATCH",
            "the entries do not hash to a checkpoint's signed root",
            _FINDING,
        ),
        ("E_AUDIT_REORDERED", "two entries are swapped", _FINDING),
        (
            "E_AUDIT_UNSIGNED_TAIL",
            "entries past the latest checkpoint are not covered by any signature",
            _FINDING,
        ),
        ("E_AUDIT_INCONSISTENT", "a checkpoint is not consistent with the one before it", _FINDING),
        (
            "E_AUDIT_WITNESS_QUORUM",
            "fewer of the auditor's witnesses than the quorum cosigned the latest checkpoint",
            _FINDING,
        ),
        (
            "E_AUDIT_WITNESS_STALE",
            "the latest checkpoint's witness quorum is met only by cosignatures older than "
            "the auditor's bound (--witness-max-age) or dated in the future: possibly a rollback",
            _FINDING,
        ),
        (
            "E_AUDIT_COSIGNATURE",
            "a cosignature by one of the auditor's witnesses does not verify over the checkpoint",
            _FINDING,
        ),
        (
            "E_AUDIT_TRUSTED_CHECKPOINT",
            "a trusted checkpoint cannot be checked or does not verify",
            _FINDING,
        ),
        (
            "E_AUDIT_FORK",
            "a trusted checkpoint is not a prefix of this log (fork or rollback)",
            _FINDING,
        ),
        (
            "E_AUDIT_MODULE_RECORD",
            "a module's public record is missing, misnamed or differs from its entry",
            _FINDING,
        ),
        ("E_AUDIT_MODULE_SIGNATURE", "a module manifest does not verify against the CA", _FINDING),
        ("E_AUDIT_MODULE_REVOKED", "a module was signed with a revoked certificate", _FINDING),
        ("E_AUDIT_MODULE_POLICY", "a module breaks the federation policy", _FINDING),
        ("E_AUDIT_MODULE_ACTOR", "a module is recorded as uploaded by another site", _FINDING),
        ("E_AUDIT_DP_CLAIM", "a DP claim does not re-account to the claimed epsilon", _FINDING),
        (
            "E_AUDIT_DP_BUDGET",
            "a site's modules together spend more than the federation's max_epsilon, or "
            "than the site's own dp.max_total_epsilon",
            _FINDING,
        ),
        (
            "E_AUDIT_NO_FEDERATION",
            "modules are registered but no CA-signed federation manifest gives their policy",
            _FINDING,
        ),
        ("E_AUDIT_DUPLICATE_MODULE", "a module is registered twice", _FINDING),
        ("E_AUDIT_DUPLICATE_ARTIFACT", "a dataset or classifier id appears twice", _FINDING),
        ("E_AUDIT_DUPLICATE_EVALUATION", "a site evaluates one classifier twice", _FINDING),
        ("E_AUDIT_EVALUATION_ACTOR", "an evaluation is recorded as made by another site", _FINDING),
        (
            "E_AUDIT_DELETION_UNKNOWN",
            "a deletion names a module not registered before it",
            _FINDING,
        ),
        ("E_AUDIT_DELETION_ACTOR", "a site requested deleting another site's module", _FINDING),
        ("E_AUDIT_DELETION_TWICE", "a module is deleted twice", _FINDING),
        ("E_AUDIT_DELETION_MISSING", "a requested deletion was never carried out", _FINDING),
        (
            "E_AUDIT_NOT_SHREDDED",
            "a deletion does not record destroying both the data key and the blob",
            _FINDING,
        ),
        ("E_AUDIT_LINEAGE_UNKNOWN", "a classifier names a dataset no earlier entry made", _FINDING),
        ("E_AUDIT_LINEAGE_RETIRED", "a classifier was trained on a retired dataset", _FINDING),
        (
            "E_AUDIT_LINEAGE_MISMATCH",
            "a classifier lists other modules than its dataset, or a dataset's recipe is of "
            "other bytes",
            _FINDING,
        ),
        (
            "E_AUDIT_LINEAGE_FORMAT",
            "an artifact has no readable module lineage, an empty one, or a recipe sampling "
            "other modules",
            _FINDING,
        ),
        (
            "E_AUDIT_LINEAGE_MISSING",
            "an artifact commits to a lineage document the bundle does not hold",
            _FINDING,
        ),
        (
            "E_AUDIT_LINEAGE_COMMITMENT",
            "a lineage document's hash or module count is not what its entry commits to",
            _FINDING,
        ),
        (
            "E_AUDIT_LINEAGE_DOCUMENT",
            "a lineage document is malformed, or a lineage/ file is misnamed (a warning)",
            _FINDING,
        ),
        (
            "E_AUDIT_LINEAGE_DELETED",
            "an artifact was made from a module after its deletion, or a classifier published "
            "after it",
            _FINDING,
        ),
        (
            "E_AUDIT_LINEAGE_HASH",
            "an artifact names a module with other weights than registered, or without them",
            _FINDING,
        ),
        (
            "E_AUDIT_LIVE_DELETED",
            "a live artifact's lineage holds a deleted module, or its bytes (or its "
            "dataset's) are those of an artifact holding a deleted module's samples",
            _FINDING,
        ),
    ],
    kind=FINDING,
)


def _index(codes: Iterable[ErrorCode]) -> dict[str, ErrorCode]:
    out: dict[str, ErrorCode] = {}
    for entry in codes:
        if entry.code in out:
            raise ValueError(f"error code {entry.code} is registered twice")
        out[entry.code] = entry
    return out


#: Every code, in the order of ``docs/errors.md``.
REGISTRY: Mapping[str, ErrorCode] = _index(
    _GENERAL
    + _FORMATS
    + _PKI_ROWS
    + _PACKAGE
    + _POLICY
    + _LEDGER
    + _STORE
    + _RPC
    + _EVALUATION
    + _SITE
    + _DATA
    + _DEMO_ROWS
    + _AUDIT_ERRORS
    + _AUDIT_FINDINGS
)


def lookup(code: str) -> ErrorCode | None:
    """The registered entry for ``code`` (an ``E_RPC_<STATUS>`` code gets its family's)."""
    if code.startswith(RPC_CODE_PREFIX) and code not in REGISTRY:
        return REGISTRY[RPC_CODE_PREFIX + "<STATUS>"]
    return REGISTRY.get(code)


def render_markdown() -> str:
    """The code tables of ``docs/errors.md``: one section each, a row per code."""
    lines: list[str] = []
    section = None
    for entry in REGISTRY.values():
        if entry.section != section:
            section = entry.section
            lines += [
                "",
                f"### {section}",
                "",
                "| code | meaning | raised as |",
                "| --- | --- | --- |",
            ]
        classes = ", ".join(f"`{name}`" for name in entry.raised_as)
        lines.append(f"| `{entry.code}` | {entry.meaning} | {classes} |")
    return "\n".join(lines[1:]) + "\n"
