"""The ``ffsecure.v1.Aggregator`` gRPC servicer.

Each method: authenticate the peer from its client certificate
(:mod:`aggregator.auth`), apply the per-site rate limits, do the work through
the store / staging / registration pipeline, and turn any
:class:`~ffsecure.errors.FFSecureError` into a gRPC status with the error code
in the trailing metadata (:mod:`aggregator.grpc_errors`). Every refusal is
logged with the peer identity. Store access is serialized by one lock; the
expensive steps (HPKE open, signature and tensor checks) run outside it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import grpc
from google.protobuf.message import Message  # type: ignore[import-untyped]  # no stubs in the lock

from aggregator.auth import Authenticator, Peer
from aggregator.grpc_errors import RequestError, abort_with, log_refusal
from aggregator.metrics import Metrics
from aggregator.ratelimit import RateLimiter
from aggregator.registration import Registrar, check_module_id, receipt_for_module
from aggregator.site_activity import SiteActivity
from aggregator.site_reports import record_evaluation
from aggregator.store.base import Store
from aggregator.uploads import UploadStaging, check_upload_id
from aggregator.watchdog import Watchdog
from ffsecure import canonical
from ffsecure.errors import FFSecureError, NotFoundError
from ffsecure.ledger import make_entry, open_checkpoint
from ffsecure.records.entries import EntryType
from ffsecure.records.ids import MAX_REASON_CHARS, check_artifact_id, clean_reason
from ffsecure.records.receipts import Receipt
from ffsecure.v1 import aggregator_pb2 as pb
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc

log = logging.getLogger("aggregator.service")

MAX_DELETE_IDS = 64

# deleter(store, module_id, actor, reason, request_entry) -> [(index, entry_bytes), ...]
Deleter = Callable[[Store, str, str, str, dict], list[tuple[int, bytes]]]


def store_delete(
    store: Store, module_id: str, actor: str, reason: str, request_entry: dict
) -> list[tuple[int, bytes]]:
    """Default deletion path: crypto-shred the module and append its ledger entries."""
    return list(
        store.delete_module(module_id, actor=actor, reason=reason, request_entry=request_entry)
    )


@dataclass
class ServiceDeps:
    """Everything the servicer needs; built by :mod:`aggregator.server` from the aggregator home."""

    authenticator: Authenticator
    registrar: Registrar
    staging: UploadStaging
    signed_manifest: bytes
    log_vkey: str
    log_origin: str
    call_limiter: RateLimiter
    upload_limiter: RateLimiter
    upload_deadline_s: float = 600.0
    download_deadline_s: float = 600.0
    max_concurrent_verifications: int = 2
    max_chunk_bytes: int = 1 << 20
    deleter: Deleter = store_delete
    # fires the upload and download deadlines of every call from one thread
    watchdog: Watchdog = field(default_factory=lambda: Watchdog(name="call-deadlines"))
    # counters of aggregator.metrics (exposed only when serve's endpoint is on)
    metrics: Metrics = field(default_factory=Metrics)
    # last contact and last refusal of each site, kept in the store (aggregator status)
    activity: SiteActivity | None = None

    @property
    def store(self) -> Store:
        return self.registrar.store

    @property
    def store_lock(self) -> threading.RLock:
        return self.registrar.store_lock


def _receipt_pb(r: Receipt, module_id: str) -> pb.Receipt:
    return replace(r, module_id=module_id).to_pb()


def _rpc(method: str, *, upload: bool = False):
    """Authenticate, rate-limit, and map errors for one RPC handler."""

    def wrap(fn):
        @functools.wraps(fn)
        def handler(self: AggregatorService, request: Message, context: grpc.ServicerContext):
            peer: Peer | None = None
            try:
                peer = self.deps.authenticator.authenticate(context)
                if self.deps.activity is not None:
                    self.deps.activity.contact(peer.site_id)
                self.deps.call_limiter.check(peer.site_id)
                if upload:
                    self.deps.upload_limiter.check(peer.site_id)
                return fn(self, request, context, peer)
            except FFSecureError as exc:
                who = (
                    peer.identity.uri if peer else self.deps.authenticator.unverified_name(context)
                )
                self._note_refusal(context, peer, exc.code, method=method, upload=upload)
                abort_with(context, exc, method=method, peer=who)
            except grpc.RpcError:
                # The client went away (cancelled or cut); nothing to answer.
                log.info(
                    "%s: call ended by the client",
                    method,
                    extra={
                        "event": "cancelled",
                        "method": method,
                        "peer_identity": peer.identity.uri if peer else None,
                    },
                )
                context.abort(grpc.StatusCode.CANCELLED, "call ended by the client")
            except Exception:  # noqa: BLE001 - a bug must not leak details to the peer
                log.exception(
                    "%s failed",
                    method,
                    extra={
                        "event": "internal_error",
                        "method": method,
                        "peer_identity": peer.identity.uri if peer else None,
                    },
                )
                abort_with(
                    context,
                    FFSecureError(
                        "internal error; the operator has the details",
                        hint="retry later; report it if it persists",
                    ),
                    method=method,
                    peer=peer.identity.uri if peer else None,
                )

        return handler

    return wrap


class AggregatorService(pb_grpc.AggregatorServicer):
    def __init__(self, deps: ServiceDeps):
        self.deps = deps
        # A complete upload is opened and verified whole (single-shot AEAD): at most this many at
        # once, so that memory is bounded by it x the module size, however many uploads finish.
        self._verifications = threading.BoundedSemaphore(deps.max_concurrent_verifications)

    def _note_refusal(
        self, context, peer: Peer | None, code: str, *, method: str, upload: bool
    ) -> None:
        """Count a refusal (upload metrics) and record it as the site's last refusal."""
        site_id = peer.site_id if peer else self.deps.authenticator.unverified_site_id(context)
        if upload:
            self.deps.metrics.upload_refused(site_id, code)
        if site_id is not None and self.deps.activity is not None:
            self.deps.activity.refusal(site_id, code, method)

    # -- federation --------------------------------------------------------
    @_rpc("GetFederationInfo")
    def GetFederationInfo(
        self, request: pb.GetFederationInfoRequest, context, peer: Peer
    ) -> pb.FederationInfo:
        return pb.FederationInfo(
            signed_manifest=self.deps.signed_manifest,
            crl_pem=self.deps.authenticator.crl.pem(),
            peer_site_id=peer.site_id,
            max_chunk_bytes=self.deps.max_chunk_bytes,
            max_upload_bytes=self.deps.staging.max_upload_bytes,
        )

    # -- uploads -----------------------------------------------------------
    @_rpc("GetUploadStatus")
    def GetUploadStatus(
        self, request: pb.GetUploadStatusRequest, context, peer: Peer
    ) -> pb.UploadStatus:
        upload_id = check_upload_id(request.upload_id)
        state = self.deps.staging.status(peer.site_id, upload_id)
        if (
            state is not None
            and not state.registered
            and state.committed_offset == state.total_size
        ):
            # Every byte arrived but the server stopped (crash, kill) before the upload was marked
            # registered: no stream can resume it (nothing is left to send), so finish it here.
            self._finish_complete_upload(peer, state)
            state = self.deps.staging.status(peer.site_id, upload_id)
        if state is None:
            return pb.UploadStatus(
                upload_id=upload_id,
                state=pb.UploadStatus.UNKNOWN,
                committed_offset=0,
                max_chunk_bytes=self.deps.max_chunk_bytes,
            )
        out = pb.UploadStatus(
            upload_id=upload_id,
            committed_offset=state.committed_offset,
            total_size=state.total_size,
            total_sha256=bytes.fromhex(state.total_sha256),
            max_chunk_bytes=self.deps.max_chunk_bytes,
        )
        if state.module_id is not None:  # registered
            module_id = state.module_id
            with self.deps.store_lock:
                deleted = self.deps.store.get_module(module_id).status == "deleted"
            out.state = pb.UploadStatus.DELETED if deleted else pb.UploadStatus.REGISTERED
            out.receipt.CopyFrom(_receipt_pb(self._existing_receipt(module_id), module_id))
        else:
            out.state = pb.UploadStatus.IN_PROGRESS
        return out

    def _existing_receipt(self, module_id: str, *, refuse_deleted: bool = False) -> Receipt:
        with self.deps.store_lock:
            if refuse_deleted and self.deps.store.get_module(module_id).status == "deleted":
                raise RequestError(
                    f"module {module_id} was deleted and cannot be registered again",
                    code="E_MODULE_DELETED",
                    hint="a new module needs a new random module id",
                )
            return receipt_for_module(self.deps.store, module_id)

    def _deadline_error(self) -> RequestError:
        return RequestError(
            f"upload took longer than {self.deps.upload_deadline_s:g} s",
            code="E_DEADLINE",
            hint="resume the upload; its received bytes are kept",
        )

    @_rpc("UploadModule", upload=True)
    def UploadModule(self, request_iterator, context, peer: Peer) -> pb.Receipt:
        deadline = time.monotonic() + self.deps.upload_deadline_s
        staged = None
        first: pb.UploadChunk | None = None
        # The server's own deadline, whatever the client asked for: a stream that stops sending
        # (and never closes) is cancelled here, so it cannot hold a worker thread for ever.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            context.cancel()

        watchdog = self.deps.watchdog.after(self.deps.upload_deadline_s, expire)
        refused = False
        try:
            for chunk in request_iterator:
                if expired.is_set() or time.monotonic() > deadline:
                    raise self._deadline_error()
                if first is None:
                    first = chunk
                    upload_id = check_upload_id(chunk.upload_id)
                    state = self.deps.staging.status(peer.site_id, upload_id)
                    if state is not None and state.module_id is not None:  # registered
                        r = self._existing_receipt(state.module_id, refuse_deleted=True)
                        return _receipt_pb(r, state.module_id)
                    staged = self.deps.staging.open(
                        peer.site_id,
                        upload_id,
                        total_size=chunk.total_size,
                        total_sha256=chunk.total_sha256,
                    )
                elif (
                    chunk.upload_id != first.upload_id
                    or chunk.total_size != first.total_size
                    or chunk.total_sha256 != first.total_sha256
                ):
                    raise RequestError(
                        "chunks of one stream name different uploads",
                        code="E_UPLOAD_MISMATCH",
                        hint="send one upload per UploadModule stream",
                    )
                if len(chunk.data) > self.deps.max_chunk_bytes:
                    raise RequestError(
                        f"chunk of {len(chunk.data)} bytes "
                        f"is larger than {self.deps.max_chunk_bytes}",
                        code="E_TOO_LARGE",
                        hint="send chunks no larger than UploadStatus.max_chunk_bytes",
                    )
                assert staged is not None  # opened with the first chunk
                staged.write(chunk.offset, chunk.data)
                self.deps.metrics.bytes_received(len(chunk.data))
            watchdog.cancel()  # every byte is in: registration is not cut short
            if expired.is_set():
                raise self._deadline_error()
            if staged is None:
                raise RequestError(
                    "the upload stream held no chunk",
                    code="E_UPLOAD_EMPTY",
                    hint="send at least one chunk",
                )
            if not staged.complete:
                raise RequestError(
                    f"stream ended at offset {staged.offset} of {staged.state.total_size}",
                    code="E_UPLOAD_INCOMPLETE",
                    hint=f"resume the upload at offset {staged.offset}",
                )
            return self._register_staged(staged, peer).to_pb()  # names its module_id
        except FFSecureError:
            refused = True  # an upload without a durable byte is dropped, not kept for resuming
            raise
        except grpc.RpcError:
            if expired.is_set():
                refused = True
                raise self._deadline_error() from None
            raise
        finally:
            watchdog.cancel()
            if staged is not None:
                staged.close(refused=refused)

    def _register_staged(self, staged, peer: Peer) -> Receipt:
        """Hash-check, open, verify and register a complete staged upload; mark it registered."""
        with self._verifications:
            sealed = staged.read_verified()
            try:
                receipt = self.deps.registrar.register(sealed, peer)
            except FFSecureError:
                staged.discard()  # a refused package can never become valid by resuming
                raise
            finally:
                del sealed
        staged.mark_registered(receipt.module_id)
        self.deps.metrics.upload_accepted(peer.site_id)
        log.info(
            "module %s registered for site %s at index %d%s",
            receipt.module_id,
            peer.site_id,
            receipt.index,
            " (existing)" if receipt.existing else "",
            extra={
                "event": "module_registered",
                "peer_identity": peer.identity.uri,
                "module_id": receipt.module_id,
                "index": receipt.index,
                "existing": receipt.existing,
            },
        )
        return receipt

    def _finish_complete_upload(self, peer: Peer, state) -> None:
        """Register an upload whose bytes are all durable but which a crash left unregistered."""
        staged = self.deps.staging.open(
            peer.site_id,
            state.upload_id,
            total_size=state.total_size,
            total_sha256=bytes.fromhex(state.total_sha256),
        )
        try:
            if staged.complete and not staged.state.registered:
                log.info(
                    "finishing upload %s of site %s left complete by a restart",
                    state.upload_id,
                    peer.site_id,
                    extra={
                        "event": "upload_finished_after_restart",
                        "peer_identity": peer.identity.uri,
                        "upload_id": state.upload_id,
                    },
                )
                self._register_staged(staged, peer)
        finally:
            staged.close()

    # -- log ----------------------------------------------------------------
    def _checkpoint(self) -> tuple[str, int]:
        """A signed checkpoint of the current tree (the store signs one per size, once)."""
        with self.deps.store_lock:
            note = self.deps.store.checkpoint()
        return note, open_checkpoint(note, self.deps.log_vkey, origin=self.deps.log_origin).size

    @_rpc("GetCheckpoint")
    def GetCheckpoint(self, request: pb.GetCheckpointRequest, context, peer: Peer) -> pb.Checkpoint:
        note, size = self._checkpoint()
        return pb.Checkpoint(note=note, tree_size=size)

    @_rpc("GetInclusionProof")
    def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context, peer: Peer
    ) -> pb.InclusionProof:
        with self.deps.store_lock:
            size = self.deps.store.size()
            if not 0 <= request.index < request.tree_size <= size:
                raise RequestError(
                    f"no entry {request.index} in a tree of size {request.tree_size} "
                    f"(the log has {size})",
                    code="E_PROOF_RANGE",
                    hint="ask for 0 <= index < tree_size <= the checkpoint's size",
                )
            hashes = self.deps.store.inclusion_proof(request.index, request.tree_size)
            entry = self.deps.store.entry(request.index)
        return pb.InclusionProof(
            index=request.index, tree_size=request.tree_size, hashes=hashes, entry=entry
        )

    @_rpc("GetConsistencyProof")
    def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context, peer: Peer
    ) -> pb.ConsistencyProof:
        with self.deps.store_lock:
            size = self.deps.store.size()
            if not 0 < request.old_size <= request.new_size <= size:
                raise RequestError(
                    f"no consistency proof from size {request.old_size} to {request.new_size} "
                    f"(the log has {size})",
                    code="E_PROOF_RANGE",
                    hint="ask for 0 < old_size <= new_size <= the checkpoint's size",
                )
            hashes = self.deps.store.consistency_proof(request.old_size, request.new_size)
        return pb.ConsistencyProof(
            old_size=request.old_size, new_size=request.new_size, hashes=hashes
        )

    # -- deletion -----------------------------------------------------------
    @_rpc("RequestDeletion")
    def RequestDeletion(self, request: pb.DeletionRequest, context, peer: Peer) -> pb.DeletionReply:
        reason = clean_reason(request.reason)
        if reason is None:
            raise RequestError(
                f"a deletion needs a printable reason of 1..{MAX_REASON_CHARS} characters",
                code="E_REASON",
                hint="say why the module must go, e.g. 'consent withdrawn'",
            )
        ids = list(dict.fromkeys(request.module_ids))
        if not ids or len(ids) > MAX_DELETE_IDS:
            raise RequestError(
                f"name 1..{MAX_DELETE_IDS} module ids to delete",
                code="E_MODULE_ID",
                hint="list the module ids from your receipts",
            )
        for module_id in ids:
            check_module_id(module_id)
        entries: list[tuple[int, bytes]] = []
        with self.deps.store_lock:
            store = self.deps.store
            # Check every id before changing anything: a refusal changes nothing.
            for module_id in ids:
                row = store.get_module(module_id)
                if row.site_id != peer.site_id:
                    raise RequestError(
                        f"module {module_id} was not registered by site {peer.site_id}",
                        code="E_NOT_OWNER",
                        hint="a site can delete only its own modules",
                    )
                if row.status == "deleted":
                    raise RequestError(
                        f"module {module_id} is already deleted",
                        code="E_MODULE_DELETED",
                        hint="nothing left to delete; see the ledger for its deletion entry",
                    )
            for module_id in ids:
                request_entry = make_entry(
                    EntryType.MODULE_DELETION_REQUESTED,
                    peer.actor,
                    {"module_id": module_id, "reason": reason},
                )
                entries.extend(
                    self.deps.deleter(store, module_id, peer.actor, reason, request_entry)
                )
        note, size = self._checkpoint()
        log.info(
            "site %s deleted %d module(s)",
            peer.site_id,
            len(ids),
            extra={
                "event": "modules_deleted",
                "peer_identity": peer.identity.uri,
                "module_ids": ids,
            },
        )
        return pb.DeletionReply(
            entries=[pb.LedgerEntry(index=i, entry=e) for i, e in entries],
            checkpoint=pb.Checkpoint(note=note, tree_size=size),
        )

    # -- classifier ---------------------------------------------------------
    @_rpc("GetClassifier")
    def GetClassifier(self, request: pb.GetClassifierRequest, context, peer: Peer):
        """Read everything before the first chunk is sent, so a refusal is a clean status."""
        info, data = published_classifier(
            self.deps.store, request.classifier_id or None, lock=self.deps.store_lock
        )
        step = self.deps.max_chunk_bytes
        log.info(
            "classifier %s sent to site %s",
            info.classifier_id,
            peer.site_id,
            extra={
                "event": "classifier_fetched",
                "peer_identity": peer.identity.uri,
                "classifier_id": info.classifier_id,
            },
        )
        chunks = [pb.ClassifierChunk(info=info)] + [
            pb.ClassifierChunk(data=data[i : i + step]) for i in range(0, len(data), step)
        ]
        return self._bounded_download(chunks, context, peer, method="GetClassifier")

    def _bounded_download(self, messages: list, context, peer: Peer, *, method: str):
        """Send ``messages`` within ``server.download_deadline_s``, whatever the client's deadline.

        gRPC sends a server stream from a worker thread that blocks while the client's
        HTTP/2 flow-control window is full; a client that opens the stream and stops reading
        would hold that worker for ever. The server's watchdog cancels the call at the bound
        (which also unblocks the pending send) and logs the refusal as E_DEADLINE; it is
        cancelled as soon as the stream ends, normally or not. (The handler has returned by
        then, so the refusal is logged here, not by ``_rpc``; the client sees CANCELLED.)
        """
        limit = self.deps.download_deadline_s

        def expire() -> None:
            log_refusal(
                context,
                RequestError(
                    f"{method} stream took longer than {limit:g} s",
                    code="E_DEADLINE",
                    hint="read the stream as it comes; fetch again",
                ),
                method=method,
                peer=peer.identity.uri,
            )
            context.cancel()

        watchdog = self.deps.watchdog.after(limit, expire)
        if not context.add_callback(watchdog.cancel):  # the call already ended
            watchdog.cancel()

        def stream():
            try:
                yield from messages
            finally:
                watchdog.cancel()

        return stream()

    # -- sites' evaluations ---------------------------------------------------
    @_rpc("ReportEvaluation")
    def ReportEvaluation(
        self, request: pb.EvaluationReport, context, peer: Peer
    ) -> pb.EvaluationReceipt:
        """Aggregate metrics of a classifier on the calling site's test data (site_reports)."""
        return record_evaluation(
            self.deps.store,
            self.deps.store_lock,
            peer=peer,
            request=request,
            num_classes=self.deps.registrar.federation.num_classes,
        )


def _no_classifier(message: str) -> NotFoundError:
    return NotFoundError(
        message,
        code="E_NO_CLASSIFIER",
        hint="the operator publishes one with `aggregator publish`; ask again later",
    )


def published_classifier(
    store: Store, classifier_id: str | None = None, *, lock: threading.RLock | None = None
) -> tuple[pb.ClassifierInfo, bytes]:
    """The metadata and safetensors bytes of a classifier that sites may fetch.

    Without ``classifier_id``: the classifier published last. With one: that
    classifier if it is published or active (never a retired one, whose bytes
    were destroyed). Raises NotFoundError E_NO_CLASSIFIER.
    """
    lock = lock or threading.RLock()
    with lock:
        if classifier_id:
            check_artifact_id(
                classifier_id, "classifier id", hint="leave it empty for the published classifier"
            )
            try:
                row = store.get_artifact("classifier", classifier_id)
            except NotFoundError:
                raise _no_classifier(f"no classifier {classifier_id}") from None
            if row.status == "retired" or not row.has_blob:
                raise _no_classifier(
                    f"classifier {classifier_id} was retired; its weights are destroyed"
                )
        else:
            rows = store.list_artifacts("classifier", "published")
            if not rows:
                raise _no_classifier("no classifier is published yet")
            row = max(rows, key=lambda r: r.updated_index)
        data = store.artifact_blob("classifier", row.artifact_id)
        trained_entry = store.entry(row.entry_index)
    meta = row.meta
    info = pb.ClassifierInfo(
        classifier_id=row.artifact_id,
        sha256=row.meta["sha256"],
        size=len(data),
        config=canonical.dumps(meta["config"]),
        dataset_id=meta["dataset_id"],
        module_ids=[m["module_id"] for m in meta["modules"]],
        trained_index=row.entry_index,
        trained_entry=trained_entry,
        published=row.status == "published",
        published_index=row.updated_index if row.status == "published" else 0,
    )
    return info, data
