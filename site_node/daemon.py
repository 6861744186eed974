"""``site-node run``: the long-running loop a hospital leaves on.

Each cycle (every ``daemon.poll_interval_s``, or at once when woken):

1. train a new module when the data source's fingerprint differs from the
   one the last module was trained on, when the trigger file
   (``daemon.trigger_file``, default ``STATE/train.now``) exists, or after a
   SIGHUP;
2. upload every module not yet registered (resuming interrupted uploads).

When the federation requires a privacy report, training runs the privacy
check and compares it with the policy before the module is signed and
sealed; a module that fails is marked ``refused`` (``error.by = "site"``) and
never sent. When the aggregator cannot be reached (or is busy), the cycle
logs it and the next one comes after ``daemon.retry_interval_s``: the daemon
survives aggregator downtime and resumes the same upload. A package the
aggregator refuses for good (policy, signature) is marked ``refused``
(``error.by = "aggregator"``), not sent again, and the next module is sent.
The aggregator's refusal is first held against the site's own re-run of its check
(:mod:`site_node.refusals`). A log fork (``E_LOG_FORK``) or a refusal that check
contradicts (``E_REFUSAL_CONTRADICTED``) is an alarm: it stops the daemon with exit
status 3. ``run --once`` (``max_cycles``) exits 4 when its cycle ended in a refusal
and 1 when it failed, so a timer-driven service shows the failure
(:mod:`site_node.exitcodes`).

SIGTERM / SIGINT stop it cleanly: a training run stops at the next epoch
(nothing is written), an upload in flight is cut and resumes next time.
The state lock is held only during a cycle, so ``site-node status`` can run
between cycles. Logs are one JSON object per line with an ``event`` field.

With ``[monitoring] textfile_dir`` set, every cycle (failed ones too) ends by
writing ``ffsecure_site.prom`` for node-exporter (:mod:`site_node.textfile`);
for its CRL gauge the cycle asks the aggregator for the CRL once, without
retries, and keeps it only if it verifies against the CA. A failure to write
the file is logged and never stops the daemon.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from cryptography import x509

from ffsecure import pki
from ffsecure.errors import FFSecureError
from site_node import sync
from site_node import trust as trustlib
from site_node.config import SiteConfig
from site_node.exitcodes import EXIT_ALARM, EXIT_ERROR, EXIT_OK, EXIT_REFUSED
from site_node.state import StateDir
from site_node.sync import LogForkError, is_transient
from site_node.textfile import CycleOutcome, write_site_textfile
from site_node.training import TrainingStopped, data_fingerprint, train_module

log = logging.getLogger("site_node.daemon")

__all__ = ["Daemon", "EXIT_ALARM", "EXIT_ERROR", "EXIT_OK", "EXIT_REFUSED", "is_transient"]


class Daemon:
    def __init__(
        self,
        cfg: SiteConfig,
        *,
        max_cycles: int | None = None,
        on_cycle: Callable[[dict], None] | None = None,
    ):
        self.cfg = cfg
        self.state = StateDir(cfg.state_dir)
        self.stop_event = threading.Event()
        self.wake_event = threading.Event()
        self.train_requested = False
        self.max_cycles = max_cycles
        self.on_cycle = on_cycle
        self.failed_fingerprint: str | None = None
        self.crl: x509.CertificateRevocationList | None = None  # the last one served, verified

    # -- signals ---------------------------------------------------------------
    def install_signals(self) -> None:
        def stop(signum, _frame):
            log.info(
                "signal %s: stopping", signal.Signals(signum).name, extra={"event": "stopping"}
            )
            self.stop_event.set()
            self.wake_event.set()

        def hup(_signum, _frame):
            log.info(
                "SIGHUP: training requested", extra={"event": "train_requested", "by": "sighup"}
            )
            self.train_requested = True
            self.wake_event.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _backoff_sleep(self, seconds: float) -> None:
        """The client's retry sleep, cut short by SIGTERM (the upload resumes at the next start)."""

        if self.stop_event.wait(seconds):
            raise TrainingStopped(
                "stopped while waiting to retry", hint="the upload resumes at the next start"
            )

    # -- one cycle -------------------------------------------------------------
    def _train_reason(self) -> str | None:

        if self.train_requested:
            return "signal"
        if self.cfg.trigger_file is not None and self.cfg.trigger_file.exists():
            return "trigger_file"
        fp = data_fingerprint(self.cfg)
        last = self.state.read_data()
        if (last is None or last.get("fingerprint") != fp) and fp != self.failed_fingerprint:
            return "new_data" if last is not None else "first_run"
        return None

    def cycle(self) -> dict:
        """Train if due, then upload what is pending. Returns what happened (for logs and tests)."""

        out: dict = {
            "trained": None,
            "uploaded": [],
            "refused": [],
            "contradicted": [],
            "retry": False,
            "train_failed": None,
        }
        with self.state.locked():
            trust = trustlib.load(self.cfg)
            reason = self._train_reason()
            if reason and not self._train(reason, trust, out):
                return out
            self._upload(trust, out)
        if self.cfg.textfile_dir is not None and not self.stop_event.is_set():
            self.crl = self._fetch_crl(trust)
        return out

    def _fetch_crl(self, trust) -> x509.CertificateRevocationList | None:
        """The CRL the aggregator serves, verified against the CA (for the textfile only)."""
        try:
            with trustlib.make_client(self.cfg, trust) as client:
                pem = bytes(client.federation_info(retries=False).crl_pem)
            return pki.load_crl(pem, trust.ca_cert) if pem else None
        except FFSecureError as exc:
            log.info(
                "no CRL for the textfile this cycle: %s",
                exc,
                extra={"event": "crl_unavailable", "code": exc.code},
            )
            return None

    def _write_textfile(self, ok: bool) -> None:
        try:
            write_site_textfile(self.cfg, CycleOutcome(ok=ok, crl=self.crl))
        except (FFSecureError, OSError) as exc:
            log.error(
                "could not write the monitoring textfile: %s",
                exc,
                extra={"event": "textfile_failed"},
            )

    def _train(self, reason: str, trust, out: dict) -> bool:
        """One training run into ``out``; False when it was stopped (the cycle ends there)."""

        log.info(
            "training a new module (%s)", reason, extra={"event": "train_due", "reason": reason}
        )
        self.train_requested = False
        if self.cfg.trigger_file is not None:
            self.cfg.trigger_file.unlink(missing_ok=True)
        try:
            record = train_module(self.cfg, trust, should_stop=self.stop_event.is_set)
        except TrainingStopped:
            return False
        except FFSecureError as exc:
            self.failed_fingerprint = data_fingerprint(self.cfg)
            out["train_failed"] = exc.code
            log.error("training failed: %s", exc, extra={"event": "train_failed", "code": exc.code})
            return True
        out["trained"] = record.module_id
        self.failed_fingerprint = None
        if record.status == "refused":
            out["refused"].append(record.module_id)
        return True

    def _upload(self, trust, out: dict) -> None:

        todo = self.state.pending()
        if not todo or self.stop_event.is_set():
            return
        with trustlib.make_client(self.cfg, trust, sleep=self._backoff_sleep) as client:
            results = sync.upload_queue(
                self.state,
                client,
                trust,
                todo,
                defer_transient=True,
                limits=self.cfg.dp_limits,
                should_stop=self.stop_event.is_set,
            )
        for result in results:
            if result["outcome"] == "registered":
                out["uploaded"].append({k: v for k, v in result.items() if k != "outcome"})
            elif result["outcome"] == "refused":
                out["refused"].append(result["module_id"])
            elif result["outcome"] == "contradicted":
                out["refused"].append(result["module_id"])
                out["contradicted"].append(result["module_id"])
            else:
                out["retry"] = True

    # -- loop ------------------------------------------------------------------
    def run(self) -> int:

        log.info(
            "site-node run started",
            extra={
                "event": "started",
                "site_id": self.cfg.site_id,
                "state_dir": str(self.cfg.state_dir),
                "poll_interval_s": self.cfg.poll_interval_s,
            },
        )

        try:  # a node that is not set up should fail loudly, not retry forever
            trustlib.load(self.cfg)
        except FFSecureError as exc:
            log.error("cannot start: %s", exc, extra={"event": "start_failed", "code": exc.code})
            return EXIT_ERROR
        cycles = 0
        status = EXIT_OK  # of the last cycle; what a bounded run (--once) exits with
        while not self.stop_event.is_set():
            wait = self.cfg.poll_interval_s
            try:
                out = self.cycle()
                if out["retry"]:
                    wait = self.cfg.retry_interval_s
                log.info("cycle done", extra={"event": "cycle", **out})
                if self.on_cycle is not None:
                    self.on_cycle(out)
                status = cycle_status(out)
                self._write_textfile(status == EXIT_OK and not out["retry"])
                if status == EXIT_ALARM:  # the queue logged each alarm
                    log.critical(
                        "ALARM: the aggregator's refusal of module(s) %s is contradicted by "
                        "this site's own check; stopping",
                        ", ".join(out["contradicted"]),
                        extra={"event": "stopped", "exit_status": status},
                    )
                    return status
            except LogForkError as exc:
                log.critical(
                    "ALARM: %s", exc.message, extra={"event": "log_fork", "code": exc.code}
                )
                return EXIT_ALARM
            except FFSecureError as exc:
                transient = is_transient(exc)
                (log.warning if transient else log.error)(
                    "cycle failed: %s", exc, extra={"event": "cycle_failed", "code": exc.code}
                )
                wait = self.cfg.retry_interval_s
                status = EXIT_OK if transient else EXIT_ERROR
                self._write_textfile(False)
            cycles += 1
            if self.max_cycles is not None and cycles >= self.max_cycles:
                log.info(
                    "site-node run stopped after %d cycle(s)",
                    cycles,
                    extra={"event": "stopped", "exit_status": status},
                )
                return status
            self.wake_event.clear()
            deadline = time.monotonic() + wait
            # wake early for: a signal, or the trigger file appearing
            while not self.stop_event.is_set() and not self.wake_event.is_set():
                left = deadline - time.monotonic()
                if left <= 0 or (
                    self.cfg.trigger_file is not None and self.cfg.trigger_file.exists()
                ):
                    break
                self.wake_event.wait(min(left, 1.0))
        log.info("site-node run stopped", extra={"event": "stopped"})
        return EXIT_OK


def cycle_status(out: dict) -> int:
    """Exit status of the cycle that gave ``out``: a contradicted refusal 3 (the daemon stops
    on it), refused 4, failed 1, else 0.

    A deferred upload (aggregator down) is not a failure: the next run resumes it.
    """
    if out["contradicted"]:
        return EXIT_ALARM
    if out["refused"]:
        return EXIT_REFUSED
    if out["train_failed"]:
        return EXIT_ERROR
    return EXIT_OK
