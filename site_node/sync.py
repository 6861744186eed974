"""Talk to the aggregator and keep the site's view of the log honest.

* :func:`upload_module`: seal once (the envelope and upload id are stored
  before the first byte is sent, so an interrupted upload resumes with the
  same bytes under the same id), upload with retries, keep the verified receipt.
* :func:`upload_queue`: upload modules in turn (``upload`` and ``run`` share
  it): a module the aggregator refuses for good, or that this site's own DP
  budget refuses before it is sealed (:mod:`site_node.budget`), is marked
  ``refused`` and the next one is sent; the aggregator's refusal is first held
  against the site's own re-run of its check (:mod:`site_node.refusals`), and
  one that check contradicts is an alarm (``E_REFUSAL_CONTRADICTED``) that
  stops the queue: nothing more goes to an aggregator that gave a false reason;
  a transient failure (aggregator down, busy, rate limit)
  stops the queue, since the next module would meet the same; anything else
  (a log fork, a receipt that does not verify, damaged local state) is raised.
* :func:`advance_checkpoint`: every checkpoint the site sees (receipts,
  deletions, status) must be consistent with the newest one it stored; the
  RFC 9162 consistency proof is checked in whichever direction applies, and
  a failure is ``E_LOG_FORK``: the aggregator showed two different histories.
* :func:`status_report`: the site's modules, their entries proven included in
  today's tree, and the consistency of today's tree with the stored checkpoint.
* :func:`forget_module`: delete a module, verifying the returned entries.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
import secrets
from typing import Any

from ffsecure import envelope, pki
from ffsecure.dp import DPBudgetError
from ffsecure.errors import FFSecureError, LedgerError, TransientError
from ffsecure.ledger import (
    Checkpoint,
    leaf_hash,
    open_checkpoint,
    validate_entry,
    verify_consistency,
    verify_inclusion,
)
from ffsecure.records.entries import EntryType
from site_node.budget import check_release
from site_node.client import (
    AggregatorError,
    ModuleDeletedRefusal,
    NoProofError,
    kept_receipt,
    verify_receipt,
)
from site_node.config import DPLimits
from site_node.refusals import Recheck, RefusalContradictedError, Verdict, contradiction, recheck
from site_node.state import ModuleRecord, StateDir, state_corrupt

log = logging.getLogger("site_node.sync")


def is_transient(exc: FFSecureError) -> bool:
    """A failure that retrying later may cure (the aggregator down, busy or rate-limiting)."""
    return isinstance(exc, TransientError)


def is_refusal(exc: FFSecureError) -> bool:
    """The aggregator answered and refused this module for good (policy, signature, duplicate)."""

    # a deleted module is marked deleted instead
    later_or_deleted = (TransientError, ModuleDeletedRefusal)
    return isinstance(exc, AggregatorError) and not isinstance(exc, later_or_deleted)


class LogForkError(LedgerError):
    """The aggregator's log is not an extension of what this site saw before."""

    code = "E_LOG_FORK"


def _fork(message: str) -> LogForkError:
    return LogForkError(
        message,
        hint="ALARM: the aggregator rewrote its log. Keep STATE/checkpoint.note and "
        "the receipts as evidence and tell the federation's auditors; do not "
        "upload until it is explained",
    )


def check_against_stored(
    state: StateDir, client, note: str
) -> tuple[Checkpoint, Checkpoint | None]:
    """Verify ``note`` (signature) and its consistency with the stored checkpoint; store nothing.

    Returns ``(new, stored)`` (``stored`` None when this site has none yet).
    ``note`` is always the aggregator's current tree (it signs one per change and
    hands out the newest), so a tree smaller than one it signed before is a
    rollback and raises ``E_LOG_FORK`` like a failed consistency proof.
    ``site-node check`` calls this; :func:`advance_checkpoint` stores the result.
    """
    new = open_checkpoint(note, client.log_vkey, origin=client.log_origin)
    old_note = state.read_checkpoint()
    if old_note is None:
        return new, None
    old = open_checkpoint(old_note, client.log_vkey, origin=client.log_origin)
    if new.size < old.size:
        raise _fork(
            f"the aggregator's log has {new.size} entries, fewer than the {old.size} of the "
            "checkpoint this site stored: entries were removed"
        )

    small, large = (old, new) if old.size <= new.size else (new, old)
    try:
        proof = (
            client.get_consistency_proof(small.size, large.size)
            if 0 < small.size < large.size
            else []
        )
    except NoProofError as exc:
        raise _fork(
            f"the aggregator cannot prove tree {small.size} is a prefix of tree {large.size}: "
            f"{exc.message}"
        ) from None
    try:
        verify_consistency(small.size, large.size, small.root_hash, large.root_hash, proof)
    except LedgerError as exc:
        raise _fork(
            f"the log of size {new.size} is not consistent with the checkpoint of size {old.size} "
            f"this site stored: {exc.message}"
        ) from None
    return new, old


def advance_checkpoint(state: StateDir, client, note: str) -> dict:
    """Verify ``note`` against the stored checkpoint (:func:`check_against_stored`); store the
    newer one."""
    new, old = check_against_stored(state, client, note)
    if old is None:
        state.write_checkpoint(note)
        return {"size": new.size, "previous_size": None}
    if new.size > old.size:
        state.write_checkpoint(note)
    return {"size": max(new.size, old.size), "previous_size": old.size}


def seal_for_upload(state: StateDir, record: ModuleRecord, federation) -> bytes:
    """The envelope to send for ``record``; made once and kept, so resumes send identical bytes."""
    path = state.sealed_path(record.module_id)
    if record.status == "sealed" and path.exists() and record.upload_id:
        return path.read_bytes()
    pkg_bytes = state.package_path(record.module_id).read_bytes()
    sealed = envelope.seal(
        pkg_bytes,
        federation.hpke_public_key,
        federation_id=federation.federation_id,
        key_id=federation.hpke_key_id,
        suite=federation.hpke_suite,
    )
    pki.write_public_file(path, sealed)
    record.upload_id = secrets.token_hex(16)
    record.status = "sealed"
    state.save_module(record)  # before the first byte leaves: a crash resumes this upload id
    return sealed


def upload_module(
    state: StateDir,
    client,
    trust,
    record: ModuleRecord,
    *,
    limits: DPLimits,
    progress=None,
) -> dict:
    """Upload one trained module (resuming), verify and store the receipt; returns a summary.

    ``progress(sent_bytes, total_bytes)`` is called after each chunk. A module not yet sealed
    is first composed with the site's other modules (:func:`site_node.budget.check_release`: the
    federation's ``dp_policy`` over its releases and the site's own ``limits``, site.toml's
    ``[dp]``, over every DP module it trained); over
    either budget it is neither sealed nor sent (:class:`ffsecure.dp.DPBudgetError`,
    ``E_DP_BUDGET``).
    """

    if record.status != "sealed":
        # a new release; a sealed module's envelope may have left already, and sending it again
        # releases nothing more (it counts in both budgets either way: budget.released)
        check_release(
            state,
            trust.federation.dp_policy,
            limits,
            site_id=trust.identity.site_id,
            module_id=record.module_id,
            dp=record.train.get("dp"),
        )
    sealed = seal_for_upload(state, record, trust.federation)
    log.info(
        "uploading module %s (%d bytes, upload id %s)",
        record.module_id,
        len(sealed),
        record.upload_id,
        extra={
            "event": "upload_start",
            "module_id": record.module_id,
            "upload_id": record.upload_id,
            "bytes": len(sealed),
        },
    )
    try:
        receipt = client.upload(
            sealed,
            upload_id=record.upload_id,
            module_id=record.module_id,
            site_id=trust.identity.site_id,
            progress=progress,
        )
    except ModuleDeletedRefusal as exc:
        if exc.receipt is None:  # a refusal code alone proves nothing: the module stays sealed
            raise
        advance_checkpoint(state, client, exc.receipt.checkpoint)
        record.receipt = exc.receipt.to_dict()  # verified by the client
        record.status = "deleted"
        record.deletion = record.deletion or {
            "note": "the aggregator reports this module deleted; its registration receipt "
            "is verified, no deletion entry is",
            "verified": False,
        }
        state.save_module(record)
        raise
    advance_checkpoint(state, client, receipt.checkpoint)
    stats = client.last_upload
    record.receipt = receipt.to_dict()
    record.status = "registered"
    state.save_module(record)
    state.sealed_path(record.module_id).unlink(missing_ok=True)
    summary = {
        "module_id": record.module_id,
        "index": receipt.index,
        "tree_size": receipt.tree_size,
        "existing": receipt.existing,
        "upload_id": record.upload_id,
        "attempts": stats.attempts,
        "resumed_from": list(stats.resumed_from),
        "bytes_sent": stats.bytes_sent,
        "receipt_verified": True,
    }
    log.info(
        "module %s registered at ledger index %d",
        record.module_id,
        receipt.index,
        extra={"event": "upload_done", **summary},
    )
    return summary


def pending(state: StateDir) -> list[ModuleRecord]:
    return state.pending()


def upload_queue(
    state: StateDir,
    client,
    trust,
    records: list[ModuleRecord],
    *,
    defer_transient: bool,
    limits: DPLimits,
    progress=None,
    should_stop=None,
) -> list[dict]:
    """Upload ``records`` in turn; one result per module tried (``limits``: the site's own DP
    ceilings, :func:`upload_module`).

    Each result has ``outcome``: ``registered`` (the upload summary), ``refused``,
    ``contradicted`` or ``deferred`` (with ``error``).

    A refusal marks the module ``refused`` (``error.by = "aggregator"``, or ``"site"`` when
    the site's own DP budget refused it before sealing) and goes on with the next. The
    aggregator's refusal is re-checked first (:func:`site_node.refusals.recheck`, kept as
    ``error.recheck``); one the site's check contradicts is stored as
    ``E_REFUSAL_CONTRADICTED`` (outcome ``contradicted``, logged as an ALARM) and ends the
    queue. A transient failure ends the queue (``deferred`` when ``defer_transient``, else
    raised); other errors are raised.
    ``progress(module_id)`` gives a module's byte-progress callback (or None).
    """
    results = []
    for record in records:
        if should_stop is not None and should_stop():
            break
        try:
            done = upload_module(
                state,
                client,
                trust,
                record,
                limits=limits,
                progress=progress(record.module_id) if progress else None,
            )
            results.append({**done, "outcome": "registered"})
        except DPBudgetError as exc:  # the site's own check: the aggregator's arrives as a refusal
            results.append(_refused(state, record, exc, by="site"))
            continue
        except FFSecureError as exc:
            if is_refusal(exc):
                results.append(_aggregator_refused(state, client, trust, record, exc))
                if results[-1]["outcome"] == "contradicted":
                    break
                continue
            if not (defer_transient and is_transient(exc)):
                raise
            log.warning(
                "upload of %s deferred: %s",
                record.module_id,
                exc,
                extra={"event": "upload_deferred", "module_id": record.module_id, "code": exc.code},
            )
            results.append(
                {"module_id": record.module_id, "outcome": "deferred", "error": exc.to_dict()}
            )
            break
    return results


def _aggregator_refused(
    state: StateDir, client, trust, record: ModuleRecord, exc: FFSecureError
) -> dict:
    """Record the aggregator's refusal ``exc`` with the site's own re-check of it: an alarm
    when the re-check contradicts it, else an ordinary refusal."""
    check = recheck(state, client, trust, record, exc)
    if check.verdict is Verdict.CONTRADICTS:
        exc = contradiction(record, exc, check)
    return _refused(state, record, exc, by="aggregator", check=check)


def _refused(
    state: StateDir,
    record: ModuleRecord,
    exc: FFSecureError,
    *,
    by: str,
    check: Recheck | None = None,
) -> dict:
    record = state.load_module(record.module_id)
    if record.status in ("trained", "sealed"):
        state.refuse_module(record, exc, by=by, recheck=None if check is None else check.to_dict())
    _log_refusal(record.module_id, exc, by=by, check=check)
    return {
        "module_id": record.module_id,
        "outcome": "contradicted" if isinstance(exc, RefusalContradictedError) else "refused",
        "status": record.status,
        "error": record.error or exc.to_dict(),
    }


def _log_refusal(module_id: str, exc: FFSecureError, *, by: str, check: Recheck | None) -> None:
    """One error line per refusal; the aggregator's message and hint are labelled as its words."""
    extra = {"module_id": module_id, "code": exc.code, "by": by}
    if isinstance(exc, RefusalContradictedError):
        claimed = exc.aggregator
        log.error(
            "ALARM: %s; the aggregator's words (untrusted): [%s] %s",
            exc.message,
            claimed["code"],
            claimed["message"],
            extra={"event": "refusal_contradicted", "aggregator_code": claimed["code"], **extra},
        )
    elif check is not None:
        log.error(
            "module %s refused by the aggregator with %s; its words (untrusted): %s; "
            "this site's re-check %s: %s",
            module_id,
            exc.code,
            exc,
            check.verdict,
            check.finding,
            extra={"event": "upload_refused", "recheck": str(check.verdict), **extra},
        )
    else:
        log.error(
            "module %s refused by this site's DP budget: %s",
            module_id,
            exc,
            extra={"event": "upload_refused", **extra},
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def status_report(state: StateDir, client) -> dict[str, Any]:
    """Today's checkpoint checked against the stored one, and every registered entry proven in
    it."""

    stored = state.read_checkpoint()
    note, _ = client.get_checkpoint()
    consistency = advance_checkpoint(state, client, note)
    cp = open_checkpoint(note, client.log_vkey, origin=client.log_origin)
    modules = []
    for r in state.modules():
        item: dict[str, Any] = {
            "module_id": r.module_id,
            "status": r.status,
            "created_at": r.created_at,
            "classes": r.classes,
            "epsilon": (r.train.get("dp") or {}).get("epsilon"),
        }
        if r.receipt:
            receipt = kept_receipt(r.receipt)
            # checked when it arrived: if it no longer verifies, the file changed here, not the log
            try:
                verify_receipt(
                    receipt,
                    log_vkey=client.log_vkey,
                    log_origin=client.log_origin,
                    module_id=r.module_id,
                )
            except LedgerError as exc:
                raise state_corrupt(
                    f"it no longer verifies against its own signed checkpoint ({exc.message})",
                    f"the stored receipt of module {r.module_id}",
                ) from None
            item["index"] = receipt.index
            if receipt.index < cp.size:
                hashes, entry = client.get_inclusion_proof(receipt.index, cp.size)
                if not hmac.compare_digest(entry, receipt.entry):
                    raise _fork(
                        f"ledger entry {receipt.index} is not the entry of module {r.module_id}'s "
                        "receipt"
                    )
                try:
                    verify_inclusion(
                        leaf_hash(receipt.entry), receipt.index, cp.size, hashes, cp.root_hash
                    )
                except LedgerError as exc:
                    raise _fork(
                        f"module {r.module_id}'s entry is not in today's tree: {exc.message}"
                    ) from None
                item["included"] = True
            else:
                raise _fork(
                    f"module {r.module_id}'s entry {receipt.index} is beyond today's tree size "
                    f"{cp.size}"
                )
        if r.deletion and r.deletion.get("entries"):
            item["deletion_indexes"] = [e["index"] for e in r.deletion["entries"]]
        modules.append(item)
    return {
        "site_id": client_site(state),
        "checkpoint": {
            "size": cp.size,
            "root_hash": _b64(cp.root_hash),
            "stored_size": consistency["previous_size"],
        },
        "consistent": True,
        "had_stored_checkpoint": stored is not None,
        "modules": modules,
    }


def client_site(state: StateDir) -> str | None:
    try:
        return pki.identity_of(pki.load_cert(state.cert.read_bytes())).site_id
    except (OSError, FFSecureError):
        return None


def forget_module(state: StateDir, client, trust, module_id: str, reason: str) -> dict:
    """Ask the aggregator to delete ``module_id``; verify the entries, proofs and checkpoint; record
    it."""
    result = client.request_deletion([module_id], reason)  # inclusion proofs checked by the client
    cp = open_checkpoint(result.checkpoint, client.log_vkey, origin=client.log_origin)
    types = []
    for index, entry in result.entries:
        obj = validate_entry(entry)
        named = obj["facts"].get("module_id")
        if (
            named is not None and named != module_id
        ):  # every entry of this deletion names its module
            raise LedgerError(
                f"deletion entry {index} ({obj['type']}) names module {named}, not {module_id}",
                code="E_RECEIPT",
                hint="the deletion is not proven; report this to the federation",
            )
        types.append(obj["type"])
    if EntryType.MODULE_DELETED not in types:
        raise LedgerError(
            f"the aggregator's reply holds no module.deleted entry for {module_id} (got {types})",
            code="E_RECEIPT",
            hint="the deletion is not proven; report this to the federation",
        )
    advance_checkpoint(state, client, result.checkpoint)
    record = None
    with contextlib.suppress(FFSecureError):
        record = state.load_module(module_id)
    deletion = {
        "reason": reason,
        "tree_size": cp.size,
        "checkpoint": result.checkpoint,
        "entries": [
            {"index": i, "type": validate_entry(e)["type"], "entry": _b64(e)}
            for i, e in result.entries
        ],
        "verified": True,
    }
    if record is not None:
        record.status = "deleted"
        record.deletion = deletion
        state.save_module(record)
        state.sealed_path(module_id).unlink(missing_ok=True)
    log.info(
        "module %s deleted; %d entries verified",
        module_id,
        len(result.entries),
        extra={"event": "module_forgotten", "module_id": module_id, "types": types},
    )
    return {
        "module_id": module_id,
        "entries": [{"index": d["index"], "type": d["type"]} for d in deletion["entries"]],
        "tree_size": cp.size,
        "verified": True,
        "known_locally": record is not None,
    }
