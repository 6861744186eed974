"""``AggregatorClient``: the site's side of the ``ffsecure.v1`` contract, over mutual TLS.

The client presents the site certificate, trusts only the federation CA for
the server, and sets a deadline on every call. Uploads are resumable: before
each attempt the client asks the aggregator how many bytes it holds
(``GetUploadStatus``) and continues from there; transient failures
(unavailable, deadline, busy, rate-limited) are retried with exponential
backoff and full jitter. A receipt is checked before it is returned: the
checkpoint's signature against the log key in the federation manifest, and
the RFC 9162 inclusion proof of the entry in that checkpoint's tree.

Refusals come back as :class:`AggregatorError` carrying the server's error
code (``E_...``) and hint, read from the trailing metadata. The code is read
once, here, into a subclass that callers branch on: :class:`AggregatorBusyError`
(retry later; :class:`RateLimitedError` among them), :class:`ModuleDeletedRefusal`
and :class:`NoProofError`. Every code keeps its string (scripts match it).
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ffsecure import canonical
from ffsecure.errorcodes import RPC_CODE_PREFIX
from ffsecure.errors import FFSecureError, LedgerError, TransientError
from ffsecure.evalreport import commitment
from ffsecure.federation import load_signed_manifest
from ffsecure.ledger import (
    Checkpoint,
    leaf_hash,
    open_checkpoint,
    validate_entry,
    verify_inclusion,
)
from ffsecure.records.entries import EntryType
from ffsecure.records.receipts import EvaluationReceipt, Receipt
from ffsecure.records.wire import MD_CODE, MD_HINT, is_retryable
from ffsecure.v1 import aggregator_pb2 as pb
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc
from site_node.state import state_corrupt

log = logging.getLogger("site_node.client")

DEFAULT_CHUNK_BYTES = 1 << 20
MESSAGE_OVERHEAD = 64 * 1024


class AggregatorError(FFSecureError):
    """The aggregator refused a call, or could not be reached. ``code`` is the server's code."""

    code = "E_AGGREGATOR"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        status: grpc.StatusCode | None = None,
    ):
        super().__init__(message, hint=hint, code=code)
        self.status = status


class AggregatorBusyError(AggregatorError, TransientError):
    """The aggregator could not take the call now (unreachable, busy, past a deadline,
    failing inside); the same call may succeed later. ``code`` is the server's code,
    or ``E_RPC_<STATUS>`` when the call failed below ffsecure (no code came back)."""


class RateLimitedError(AggregatorBusyError):
    """The aggregator's rate limit refused the call; retry with backoff."""

    code = "E_RATE_LIMIT"


class ModuleDeletedRefusal(AggregatorError):
    """The module was deleted at the aggregator and cannot be uploaded again.

    ``receipt`` is the module's registration receipt when the aggregator sent one with its
    ``DELETED`` upload status (verified when the client has a log key), else None.
    """

    code = "E_MODULE_DELETED"
    receipt: Receipt | None = None


class NoProofError(AggregatorError):
    """The aggregator holds no such entry or tree size, so it cannot give the proof asked for."""


#: The server codes a caller branches on, and the class each is read into;
#: any other code is a plain :class:`AggregatorError`.
_CLASS_BY_CODE: dict[str, type[AggregatorError]] = {
    "E_RATE_LIMIT": RateLimitedError,
    "E_UPLOAD_BUSY": AggregatorBusyError,
    "E_DP_ACCOUNTING_TIMEOUT": AggregatorBusyError,
    "E_DEADLINE": AggregatorBusyError,
    "E_STATE_LOCKED": AggregatorBusyError,
    "E_INTERNAL": AggregatorBusyError,
    "E_STOPPED": AggregatorBusyError,
    "E_MODULE_DELETED": ModuleDeletedRefusal,
    "E_PROOF_RANGE": NoProofError,
    "E_NOT_FOUND": NoProofError,
}


def refusal(
    code: str, message: str, *, hint: str | None = None, status: grpc.StatusCode | None = None
) -> AggregatorError:
    """The :class:`AggregatorError` subclass for a server's ``code``, keeping the code."""
    if code.startswith(RPC_CODE_PREFIX):  # a transport failure's name, never a refusal
        return AggregatorBusyError(message, hint=hint, code=code, status=status)
    cls = _CLASS_BY_CODE.get(code, AggregatorError)
    return cls(message, hint=hint, code=code, status=status)


def shown(text: object) -> str:
    """The aggregator's text as a site may print and log it: every character that is not
    printable (newline, carriage return, ESC of a terminal escape, ...) written as its
    Python escape, so a reply cannot forge a line on the operator's terminal or log."""
    text = text if isinstance(text, str) else str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def error_from_rpc(exc: grpc.RpcError) -> AggregatorError:
    """Turn a gRPC failure into an :class:`AggregatorError` with the server's error code; the
    server's message, hint and code are :func:`shown` (no control characters)."""
    status = exc.code() if hasattr(exc, "code") else None
    details = shown(exc.details() if hasattr(exc, "details") else str(exc))
    md = {}
    try:
        md = {k: shown(v) for k, v in (exc.trailing_metadata() or ()) if isinstance(v, str)}
    except Exception:  # noqa: BLE001 - some failures carry no metadata
        md = {}
    code = md.get(MD_CODE)
    if code:
        message = details or ""
        prefix = f"[{code}] "
        if message.startswith(prefix):
            message = message[len(prefix) :]
        return refusal(str(code), message, hint=md.get(MD_HINT) or None, status=status)
    name = status.name if status is not None else "UNKNOWN"
    hints = {
        "UNAVAILABLE": "check the endpoint, that the aggregator runs, and that your certificate is "
        "issued by the federation CA, valid and not expired",
        "DEADLINE_EXCEEDED": "the call took longer than its deadline; retry, or raise the timeout",
    }
    return AggregatorBusyError(
        f"gRPC call failed: {name}: {details}",
        code=f"{RPC_CODE_PREFIX}{name}",
        hint=hints.get(name, "see the aggregator's log"),
        status=status,
    )


def kept_receipt(kept: object) -> Receipt:
    """Read an upload receipt this site kept (``Receipt.to_dict``); damage is E_STATE_CORRUPT."""
    return Receipt.from_dict(
        kept, damaged=lambda why: state_corrupt(why, "a stored upload receipt")
    )


def _receipt_error(message: str) -> LedgerError:
    return LedgerError(
        message, code="E_RECEIPT", hint="do not trust this receipt; report it to the federation"
    )


def verify_receipt(
    receipt: Receipt,
    *,
    log_vkey: str,
    log_origin: str | None = None,
    module_id: str | None = None,
    site_id: str | None = None,
) -> Checkpoint:
    """Check a receipt offline: checkpoint signature, inclusion proof, and what the entry says.

    Returns the verified checkpoint. Raises LedgerError (E_CHECKPOINT_*, E_PROOF, E_RECEIPT).
    """
    cp = open_checkpoint(receipt.checkpoint, log_vkey, origin=log_origin)
    if cp.size != receipt.tree_size:
        raise _receipt_error(
            f"receipt says tree size {receipt.tree_size}, its checkpoint says {cp.size}"
        )
    verify_inclusion(
        leaf_hash(receipt.entry),
        receipt.index,
        receipt.tree_size,
        receipt.inclusion_proof,
        cp.root_hash,
    )
    entry = validate_entry(receipt.entry)
    if entry["type"] != EntryType.MODULE_REGISTERED:
        raise _receipt_error(f"receipt entry is a {entry['type']!r}, not module.registered")
    facts = entry["facts"]
    if facts.get("module_id") != receipt.module_id:
        raise _receipt_error("receipt entry names another module than the receipt")
    if module_id is not None and facts.get("module_id") != module_id:
        raise _receipt_error(
            f"receipt entry is for module {facts.get('module_id')}, not {module_id}"
        )
    if site_id is not None and (
        facts.get("site_id") != site_id or entry["actor"] != f"site:{site_id}"
    ):
        raise _receipt_error(f"receipt entry is for site {facts.get('site_id')}, not {site_id}")
    return cp


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: sleep U(0, min(max_delay, base * 2**attempt))."""

    max_attempts: int = 8
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * (2**attempt)))


@dataclass
class UploadStats:
    """What the last upload did (for logs, tests and benchmarks)."""

    upload_id: str = ""
    attempts: int = 0
    resumed_from: list[int] = field(default_factory=list)
    bytes_sent: int = 0


@dataclass(frozen=True)
class DeletionResult:
    entries: list[tuple[int, bytes]]
    checkpoint: str
    tree_size: int


@dataclass(frozen=True)
class FetchedClassifier:
    """A classifier downloaded from the aggregator, its bytes checked against its ledger entry."""

    classifier_id: str
    sha256: str
    weights: bytes
    config: dict
    dataset_id: str
    module_ids: list[str]
    trained_index: int
    trained_entry: bytes
    published: bool
    published_index: int

    def model(self):
        """The torch model (rebuilt from the safetensors bytes and ``config["model"]``)."""
        # heavy: torch, only when a fetched classifier is run
        from ffsecure.classifier import from_safetensors

        return from_safetensors(self.weights, self.config["model"])[0]


def _retryable(exc: grpc.RpcError) -> bool:
    status = exc.code()
    code = error_from_rpc(exc).code if status == grpc.StatusCode.RESOURCE_EXHAUSTED else None
    return is_retryable(status, code)


class AggregatorClient:
    """A site's mTLS connection to the aggregator."""

    def __init__(
        self,
        endpoint: str,
        *,
        ca_cert_pem: bytes,
        cert_pem: bytes,
        key_pem: bytes,
        server_name: str | None = None,
        timeout_s: float = 30.0,
        upload_timeout_s: float = 600.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        retry: RetryPolicy | None = None,
        log_vkey: str | None = None,
        log_origin: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_bytes_per_s: int = 0,
    ):
        self.endpoint = endpoint
        self.max_bytes_per_s = int(max_bytes_per_s)  # upload throttle; 0 = no limit
        self.timeout_s = timeout_s
        self.upload_timeout_s = upload_timeout_s
        self.chunk_bytes = int(chunk_bytes)
        self.retry = retry or RetryPolicy()
        self.log_vkey = log_vkey
        self.log_origin = log_origin
        self.last_upload = UploadStats()
        self._sleep = sleep
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca_cert_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        options: list[tuple[str, int | str]] = [
            ("grpc.max_send_message_length", self.chunk_bytes + MESSAGE_OVERHEAD),
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.enable_retries", 0),  # retries are ours: resumable and with backoff
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.channel = grpc.secure_channel(endpoint, creds, options=options)
        self.stub = pb_grpc.AggregatorStub(self.channel)

    @classmethod
    def from_files(
        cls, endpoint: str, *, ca_cert: str | Path, cert: str | Path, key: str | Path, **kwargs
    ) -> AggregatorClient:
        return cls(
            endpoint,
            ca_cert_pem=Path(ca_cert).read_bytes(),
            cert_pem=Path(cert).read_bytes(),
            key_pem=Path(key).read_bytes(),
            **kwargs,
        )

    def use_federation(self, federation) -> None:
        """Verify receipts with the log key named in the (already verified) federation manifest."""
        self.log_vkey = federation.aggregator["log_public_key"]
        self.log_origin = federation.aggregator["log_origin"]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AggregatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------
    def _unary(self, method, request, *, retries: bool = True):
        attempt = 0
        while True:
            try:
                return method(request, timeout=self.timeout_s)
            except grpc.RpcError as exc:
                if retries and _retryable(exc) and attempt + 1 < self.retry.max_attempts:
                    self._sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise error_from_rpc(exc) from None

    # -- federation ------------------------------------------------------------
    def federation_info(self, *, retries: bool = True) -> pb.FederationInfo:
        """The raw signed manifest and CRL; verify with :meth:`get_federation`."""
        return self._unary(
            self.stub.GetFederationInfo, pb.GetFederationInfoRequest(), retries=retries
        )

    def get_federation(self, ca_cert):
        """The federation manifest, verified against the CA certificate the site already holds."""

        info = self.federation_info()
        return load_signed_manifest(bytes(info.signed_manifest), ca_cert)

    # -- uploads ---------------------------------------------------------------
    def upload_status(self, upload_id: str) -> pb.UploadStatus:
        return self._unary(
            self.stub.GetUploadStatus, pb.GetUploadStatusRequest(upload_id=upload_id)
        )

    def _chunks(
        self,
        upload_id: str,
        data: bytes,
        offset: int,
        sha: bytes,
        stats: UploadStats,
        chunk_bytes: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[pb.UploadChunk]:
        view = memoryview(data)
        total = len(data)
        start, sent = time.monotonic(), 0
        while offset < total:
            end = min(total, offset + chunk_bytes)
            if self.max_bytes_per_s > 0:  # throttle: never run ahead of the byte budget
                ahead = sent / self.max_bytes_per_s - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            stats.bytes_sent += end - offset
            sent += end - offset
            yield pb.UploadChunk(
                upload_id=upload_id,
                offset=offset,
                data=bytes(view[offset:end]),
                total_size=total,
                total_sha256=sha,
            )
            offset = end
            if progress is not None:
                progress(offset, total)

    def upload(
        self,
        sealed: bytes,
        *,
        upload_id: str | None = None,
        module_id: str | None = None,
        site_id: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Receipt:
        """Upload a sealed package (resuming and retrying as needed) and return its verified
        receipt.

        ``module_id`` / ``site_id``, when given, must be what the receipt's entry names.
        Without a log key (``use_federation``) the receipt is returned unverified.
        """
        upload_id = upload_id or secrets.token_hex(16)
        sha = hashlib.sha256(sealed).digest()
        stats = self.last_upload = UploadStats(upload_id=upload_id)
        attempt = 0
        while True:
            stats.attempts += 1
            try:
                status = self.stub.GetUploadStatus(
                    pb.GetUploadStatusRequest(upload_id=upload_id), timeout=self.timeout_s
                )
                if status.state == pb.UploadStatus.DELETED:
                    deleted = ModuleDeletedRefusal(
                        f"the module of upload {upload_id} was deleted and cannot be sent again",
                        hint="a new module needs a new random module id",
                    )
                    # only a registration the site can verify was ever deleted
                    deleted.receipt = Receipt.from_pb(status.receipt)
                    if self.log_vkey is not None:
                        verify_receipt(
                            deleted.receipt,
                            log_vkey=self.log_vkey,
                            log_origin=self.log_origin,
                            module_id=module_id,
                            site_id=site_id,
                        )
                    raise deleted
                if status.state == pb.UploadStatus.REGISTERED:
                    receipt = Receipt.from_pb(status.receipt)
                else:
                    offset = (
                        status.committed_offset
                        if status.state == pb.UploadStatus.IN_PROGRESS
                        else 0
                    )
                    if offset and (
                        status.total_size != len(sealed) or bytes(status.total_sha256) != sha
                    ):
                        raise AggregatorError(
                            f"upload id {upload_id} holds a different package",
                            code="E_UPLOAD_MISMATCH",
                            hint="use a new upload id",
                        )
                    stats.resumed_from.append(offset)
                    chunk = min(self.chunk_bytes, status.max_chunk_bytes or self.chunk_bytes)
                    reply = self.stub.UploadModule(
                        self._chunks(upload_id, sealed, offset, sha, stats, chunk, progress),
                        timeout=self.upload_timeout_s,
                    )
                    receipt = Receipt.from_pb(reply)
                break
            except grpc.RpcError as exc:
                if _retryable(exc) and attempt + 1 < self.retry.max_attempts:
                    delay = self.retry.delay(attempt)
                    log.info(
                        "upload %s attempt %d failed (%s); retrying in %.2f s",
                        upload_id,
                        attempt + 1,
                        exc.code().name,
                        delay,
                    )
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise error_from_rpc(exc) from None
        if self.log_vkey is not None:
            verify_receipt(
                receipt,
                log_vkey=self.log_vkey,
                log_origin=self.log_origin,
                module_id=module_id,
                site_id=site_id,
            )
        return receipt

    # -- log ---------------------------------------------------------------------
    def get_checkpoint(self) -> tuple[str, int]:
        cp = self._unary(self.stub.GetCheckpoint, pb.GetCheckpointRequest())
        return cp.note, cp.tree_size

    def get_inclusion_proof(self, index: int, tree_size: int) -> tuple[list[bytes], bytes]:
        r = self._unary(
            self.stub.GetInclusionProof,
            pb.GetInclusionProofRequest(index=index, tree_size=tree_size),
        )
        return [bytes(h) for h in r.hashes], bytes(r.entry)

    def get_consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        r = self._unary(
            self.stub.GetConsistencyProof,
            pb.GetConsistencyProofRequest(old_size=old_size, new_size=new_size),
        )
        return [bytes(h) for h in r.hashes]

    # -- deletion ------------------------------------------------------------------
    def request_deletion(self, module_ids: Sequence[str], reason: str) -> DeletionResult:
        """Ask the aggregator to delete this site's modules; returns the entries it appended."""
        r = self._unary(
            self.stub.RequestDeletion,
            pb.DeletionRequest(module_ids=list(module_ids), reason=reason),
            retries=False,
        )
        entries = [(e.index, bytes(e.entry)) for e in r.entries]
        if self.log_vkey is not None:
            cp = open_checkpoint(r.checkpoint.note, self.log_vkey, origin=self.log_origin)
            for index, entry in entries:
                if index >= cp.size:
                    raise _receipt_error(
                        f"deletion entry {index} is outside the checkpoint of size {cp.size}"
                    )
                hashes, _ = self.get_inclusion_proof(index, cp.size)
                verify_inclusion(leaf_hash(entry), index, cp.size, hashes, cp.root_hash)
        return DeletionResult(
            entries=entries, checkpoint=r.checkpoint.note, tree_size=r.checkpoint.tree_size
        )

    # -- evaluation reports ----------------------------------------------------------
    def report_evaluation(self, report, *, site_id: str | None = None) -> EvaluationReceipt:
        """Send aggregate metrics (an ``ffsecure.evalreport.EvaluationReport``) and check the
        receipt.

        Checks: the classifier.evaluated entry names this classifier (and ``site_id``
        when given) and commits to exactly this report with the returned salt; with a
        log key (``use_federation``) its checkpoint is signed and the entry is proven
        included. Retried on transient failures: an identical report is idempotent.
        """

        request = pb.EvaluationReport(
            classifier_id=report.classifier_id,
            n_test=report.n_test,
            accuracy=report.accuracy,
            per_class_recall=[
                pb.ClassRecall() if r is None else pb.ClassRecall(recall=r)
                for r in report.per_class_recall
            ],
            confusion=[c for row in report.confusion for c in row]
            if report.confusion is not None
            else [],
        )
        if report.auroc is not None:
            request.macro_auroc = report.auroc
        r = self._unary(self.stub.ReportEvaluation, request)
        entry = validate_entry(bytes(r.entry))
        facts = entry["facts"]
        expected = commitment(report, r.salt)
        if (
            entry["type"] != EntryType.CLASSIFIER_EVALUATED
            or facts.get("classifier_id") != report.classifier_id
            or r.classifier_id != report.classifier_id
            or facts.get("report_sha256") != expected
            or entry["actor"] != f"site:{facts.get('site_id')}"
            or (site_id is not None and facts.get("site_id") != site_id)
        ):
            raise _receipt_error(
                "the classifier.evaluated entry does not record the report this site sent"
            )
        if self.log_vkey is not None:
            cp = open_checkpoint(r.checkpoint, self.log_vkey, origin=self.log_origin)
            if cp.size != r.tree_size:
                raise _receipt_error(
                    f"receipt says tree size {r.tree_size}, its checkpoint says {cp.size}"
                )
            verify_inclusion(
                leaf_hash(bytes(r.entry)),
                r.index,
                r.tree_size,
                [bytes(h) for h in r.inclusion_proof],
                cp.root_hash,
            )
        receipt = Receipt(
            index=r.index,
            entry=bytes(r.entry),
            tree_size=r.tree_size,
            checkpoint=r.checkpoint,
            inclusion_proof=[bytes(h) for h in r.inclusion_proof],
            existing=r.existing,
        )
        return EvaluationReceipt(r.classifier_id, r.salt, receipt, report_sha256=expected)

    # -- classifier ------------------------------------------------------------------
    def fetch_classifier(
        self, classifier_id: str | None = None, *, timeout_s: float | None = None
    ) -> FetchedClassifier:
        """Download the published classifier (or the one named) and check it.

        Checks: the bytes hash to ``sha256``; the classifier.trained entry names
        this classifier, its dataset and that hash; with a log key
        (``use_federation``) the entry is proven included in a signed checkpoint.
        Raises AggregatorError (E_NO_CLASSIFIER when none is published) or
        LedgerError E_RECEIPT when a check fails.
        """

        attempt = 0
        while True:
            try:
                stream = self.stub.GetClassifier(
                    pb.GetClassifierRequest(classifier_id=classifier_id or ""),
                    timeout=timeout_s or self.upload_timeout_s,
                )
                info, parts = None, []
                for chunk in stream:
                    if info is None:
                        if not chunk.HasField("info"):
                            raise _receipt_error(
                                "the classifier stream did not start with its metadata"
                            )
                        info = chunk.info
                    else:
                        parts.append(bytes(chunk.data))
                break
            except grpc.RpcError as exc:
                if _retryable(exc) and attempt + 1 < self.retry.max_attempts:
                    self._sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise error_from_rpc(exc) from None
        if info is None:
            raise _receipt_error("the classifier stream was empty")
        weights = b"".join(parts)
        if len(weights) != info.size or hashlib.sha256(weights).hexdigest() != info.sha256:
            raise _receipt_error(
                f"classifier {info.classifier_id} bytes do not match their SHA-256"
            )
        entry = validate_entry(bytes(info.trained_entry))
        facts = entry["facts"]
        if (
            entry["type"] != EntryType.CLASSIFIER_TRAINED
            or facts.get("classifier_id") != info.classifier_id
            or facts.get("sha256") != info.sha256
            or facts.get("dataset_id") != info.dataset_id
        ):
            raise _receipt_error(
                f"the classifier.trained entry does not describe classifier {info.classifier_id}"
            )
        if self.log_vkey is not None:
            note, _ = self.get_checkpoint()
            cp = open_checkpoint(note, self.log_vkey, origin=self.log_origin)
            if info.trained_index >= cp.size:
                raise _receipt_error(
                    f"entry {info.trained_index} is outside the checkpoint of size {cp.size}"
                )
            hashes, _ = self.get_inclusion_proof(info.trained_index, cp.size)
            verify_inclusion(
                leaf_hash(bytes(info.trained_entry)),
                info.trained_index,
                cp.size,
                hashes,
                cp.root_hash,
            )
        return FetchedClassifier(
            classifier_id=info.classifier_id,
            sha256=info.sha256,
            weights=weights,
            config=canonical.loads(bytes(info.config)),
            dataset_id=info.dataset_id,
            module_ids=list(info.module_ids),
            trained_index=info.trained_index,
            trained_entry=bytes(info.trained_entry),
            published=info.published,
            published_index=info.published_index,
        )
