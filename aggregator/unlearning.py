"""Site-requested deletion in ``aggregator serve``: shred + retire in the RPC, retrain later.

``RequestDeletion`` must answer in well under a second, but retraining takes
minutes. So the service's deletion hook (:meth:`RetrainWorker.deleter`) does,
under the store lock and inside the RPC: crypto-shred the module, append
``module.deletion_requested`` + ``module.deleted``, and retire every dataset
and classifier whose lineage holds it (``dataset.retired`` /
``classifier.retired``). The reply lists those entries. It then wakes one
background thread that runs :meth:`aggregator.operations.Operations.retrain`
(synthesize + train again with the recorded seeds, publish the replacement
of a published classifier), taking the store lock only for store calls, so
uploads and other RPCs go on meanwhile.

A live module whose stored weights hold NaN or inf (registered before
registration checked values) does not stop the pass: it is left out of the
new dataset, logged as ``module_skipped`` with its id, and listed in the
outcome's ``skipped_modules``; ``aggregator synthesize`` run by hand names it
and stops (``E_TENSOR_VALUE``), so the operator can delete it.

Several deletions in a row coalesce into one retraining pass; a deletion
during a pass queues another one (the running pass refuses to write an
artifact naming the deleted module, ``E_LINEAGE_DELETED``). On shutdown a
running pass is cancelled at its next progress step (nothing half-written:
each artifact is one store transaction); what it did not finish stays
pending (``aggregator status`` lists it) and ``aggregator retrain`` or the
next site deletion completes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: make_worker imports Operations (and torch) when called
    from aggregator.evaluation import EvalSet
    from aggregator.operations import Operations, RetrainOutcome
    from aggregator.store.base import Store
    from ffsecure.federation import FederationManifest

log = logging.getLogger("aggregator.unlearning")


class RetrainCancelled(Exception):
    """Raised from a progress step when the worker is stopping."""


class RetrainWorker:
    """One daemon thread that retrains after site deletions."""

    def __init__(self, make_ops: Callable[..., Operations]):
        # make_ops(progress=factory) -> Operations sharing the service's store and lock
        self._make_ops = make_ops
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.passes = 0
        self.last_error: BaseException | None = None
        self.last_outcome: RetrainOutcome | None = None

    # -- the service's deletion hook ---------------------------------------------
    def deleter(
        self, store: Store, module_id: str, actor: str, reason: str, request_entry: dict
    ) -> list:
        """Shred and retire now (in the RPC), retrain later; returns the (index, entry) appended."""
        ops = self._make_ops()
        outcome = ops.delete(module_id, reason, actor=actor, request_entry=request_entry)
        # A pass already running may be using this module: it will refuse to write
        # (E_LINEAGE_DELETED), so queue another pass to redo it from the remaining modules.
        if outcome.retired_classifiers or not self._idle.is_set():
            self.request()
        return [(a.index, a.entry) for a in outcome.appended]

    # -- the thread -----------------------------------------------------------------
    def request(self) -> None:
        """Ask for a retraining pass (coalesced with one already queued)."""
        if self._stopping.is_set():
            return
        with self._start_lock:
            self._idle.clear()
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="retrain", daemon=True)
                self._thread.start()

    def _progress(self, description: str, total: int):
        def step(done: int) -> None:
            if self._stopping.is_set():
                raise RetrainCancelled(description)

        return step

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.is_set():
                break
            self._wake.clear()
            try:
                out = self._make_ops(progress=self._progress).retrain(skip_bad_modules=True)
                self.last_outcome, self.last_error = out, None
                log.info(
                    "retrained %d classifier(s) in %.1f s after a deletion",
                    len(out.classifiers),
                    out.seconds,
                    extra={
                        "event": "retrained",
                        "classifiers": [c.classifier_id for c in out.classifiers],
                        "skipped": out.skipped,
                        "skipped_modules": out.skipped_modules,
                        "seconds": round(out.seconds, 3),
                    },
                )
            except RetrainCancelled:
                log.info(
                    "retraining cancelled by shutdown; run `aggregator retrain` to finish it",
                    extra={"event": "retrain_cancelled"},
                )
                break
            except Exception as exc:  # noqa: BLE001 - keep serving; the operator sees it in the log and status
                self.last_error = exc
                log.exception(
                    "retraining after a deletion failed", extra={"event": "retrain_failed"}
                )
            finally:
                self.passes += 1
            if not self._wake.is_set():
                self._idle.set()
        self._idle.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no pass is queued or running (tests, benchmarks)."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


def make_worker(
    *,
    store: Store,
    federation: FederationManifest,
    lock: threading.RLock,
    runs_dir,
    evaluation_section: dict | None,
    device: str = "cpu",
) -> RetrainWorker:
    """The worker ``serve`` installs as the service's deletion hook."""
    # heavy: torch, imported once serve has checked its home (a bad one fails fast)
    from aggregator.evaluation import load_evaluation
    from aggregator.operations import Operations

    cache: dict[str, EvalSet | None] = {}

    def make_ops(progress=None) -> Operations:
        if (
            progress is not None and "eval" not in cache
        ):  # a retraining pass: load the test set once, lazily
            cache["eval"] = load_evaluation(
                evaluation_section,
                label_space=list(federation.label_space),
                image_shape=federation.image_shape,
            )
        return Operations(
            store,
            federation,
            actor="aggregator",
            lock=lock,
            runs_dir=runs_dir,
            evaluation=cache.get("eval"),
            progress=progress,
            device=device,
        )

    return RetrainWorker(make_ops)
