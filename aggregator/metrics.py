"""Prometheus metrics of ``aggregator serve``: off unless configured, loopback unless allowed.

What is exposed (every name starts with ``ffsecure_aggregator_``; the list with
meanings and alert rules is in docs/operator-guide.md, "Monitoring"):

* counters, moved by the service where each event happens once: uploads
  accepted (``site``) and refused (``site``, ``code``), bytes received in
  upload chunks, rate-limit hits (``site``, ``limit``);
* gauges, read from their source of truth at every scrape (so they never
  drift from what ``aggregator status`` shows): ledger size, modules active
  and deleted, last registration time per site, CRL age and days to its
  nextUpdate, days to expiry of the aggregator's TLS certificate and of the
  CA (:mod:`ffsecure.pki.expiry`, the one rule for days left).

Label values are bounded: ``site`` is a site id from a certificate that
chained to the federation CA (or ``-`` when the caller showed none), ``code``
is a registered error code (:mod:`ffsecure.errorcodes`), ``limit`` is one of
the two limiters. Each server has its own :class:`CollectorRegistry`, never
the process-wide one, so two servers in one process (the tests) never mix.

Exposure: the endpoint is plain HTTP without authentication, and its labels
name every site and when it was last active, which is federation membership
and activity an outsider must not learn. So :func:`parse_listen` refuses an
address that is not loopback unless ``[metrics] allow_non_loopback = true``
(for a scraper on another host, behind a firewall or an authenticating
proxy). No metric holds module ids, data sizes of a site's images, or keys.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aggregator.store.base import Store
from ffsecure.errors import ConfigError
from ffsecure.pki.expiry import cert_expiry, crl_expiry
from ffsecure.records.ids import parse_port
from ffsecure.timefmt import parse_rfc3339, utcnow

log = logging.getLogger("aggregator.metrics")

PREFIX = "ffsecure_aggregator_"
#: The ``site`` label of a call that showed no site identity.
NO_SITE = "-"


class Metrics:
    """The counters the service moves, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.uploads_accepted = Counter(
            PREFIX + "uploads_accepted",
            "Uploads registered (a receipt was sent), by site.",
            ["site"],
            registry=self.registry,
        )
        self.uploads_refused = Counter(
            PREFIX + "uploads_refused",
            "UploadModule calls refused, by site and error code.",
            ["site", "code"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            PREFIX + "upload_bytes_received",
            "Bytes received in upload chunks (all sites).",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            PREFIX + "rate_limited",
            "Calls refused by a per-site rate limit, by site and limit (calls or uploads).",
            ["site", "limit"],
            registry=self.registry,
        )

    def upload_accepted(self, site_id: str) -> None:
        self.uploads_accepted.labels(site=site_id).inc()

    def upload_refused(self, site_id: str | None, code: str) -> None:
        self.uploads_refused.labels(site=site_id or NO_SITE, code=code).inc()

    def bytes_received(self, count: int) -> None:
        self.upload_bytes.inc(count)

    def rate_limit_hit(self, limit: str, site_id: str) -> None:
        self.rate_limited.labels(site=site_id, limit=limit).inc()

    def watch(self, state: ServeState) -> None:
        """Add the gauges read from ``state`` at every scrape."""
        self.registry.register(_StateCollector(state))


@dataclass(frozen=True)
class ServeState:
    """Where the gauges are read from: the store (under serve's lock), the CRL, the certs."""

    store: Store
    lock: threading.RLock
    crl: Callable[[], x509.CertificateRevocationList | None]
    tls_cert: x509.Certificate
    ca_cert: x509.Certificate


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        family = GaugeMetricFamily(PREFIX + name, doc)
        family.add_metric([], value)
        yield family


class _StateCollector(Collector):
    def __init__(self, state: ServeState):
        self._state = state

    def collect(self) -> Iterator[Metric]:
        s = self._state
        with s.lock:
            size = s.store.size()
            modules = s.store.list_modules()
        yield from _gauge("ledger_size", "Entries in the transparency ledger.", size)
        active = sum(m.status == "active" for m in modules)
        yield from _gauge("modules_active", "Modules registered and not deleted.", active)
        yield from _gauge("modules_deleted", "Modules deleted.", len(modules) - active)
        last = GaugeMetricFamily(
            PREFIX + "site_last_registration_timestamp_seconds",
            "Unix time of the site's last registered module.",
            labels=["site"],
        )
        newest: dict[str, float] = {}
        for m in modules:
            when = parse_rfc3339(m.created).timestamp()
            newest[m.site_id] = max(when, newest.get(m.site_id, when))
        for site_id, when in sorted(newest.items()):
            last.add_metric([site_id], when)
        yield last
        yield from self._expiry()

    def _expiry(self) -> Iterator[Metric]:
        s = self._state
        now = utcnow()
        crl = s.crl()
        if crl is not None:
            age = (now - crl.last_update_utc).total_seconds()
            yield from _gauge("crl_age_seconds", "Seconds since the CRL's thisUpdate.", age)
            yield from _gauge(
                "crl_days_left",
                "Days until the CRL's nextUpdate (absent: no nextUpdate).",
                crl_expiry(crl, now=now).days_left,
            )
        yield from _gauge(
            "certificate_days_left",
            "Days until the aggregator's TLS certificate expires.",
            cert_expiry(s.tls_cert, "aggregator certificate", now).days_left,
        )
        yield from _gauge(
            "ca_days_left",
            "Days until the federation CA certificate expires.",
            cert_expiry(s.ca_cert, "CA certificate", now).days_left,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def parse_listen(listen: str, *, allow_non_loopback: bool) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) of the endpoint; a non-loopback host needs the explicit
    ``allow_non_loopback`` (module docstring). Raises ConfigError ``E_METRICS_LISTEN``."""
    host, sep, port_text = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    port = parse_port(port_text)
    if not sep or not host or port is None:
        raise ConfigError(
            f"metrics listen address {listen!r} is not host:port",
            code="E_METRICS_LISTEN",
            hint='e.g. listen = "127.0.0.1:9464" (port 0 picks a free one)',
        )
    if not allow_non_loopback and not _is_loopback(host):
        raise ConfigError(
            f"metrics listen address {listen!r} is not a loopback address",
            code="E_METRICS_LISTEN",
            hint="the metrics name every site and its activity, over plain HTTP: listen on "
            "127.0.0.1, or set [metrics] allow_non_loopback = true behind a firewall",
        )
    return host, port


class MetricsEndpoint:
    """The HTTP endpoint (``/metrics``) of one registry; its bound port goes to ``port_file``."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, *, port_file: Path
    ) -> None:
        self.port_file = port_file
        try:
            server, self._thread = start_http_server(port, host, registry=registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                code="E_METRICS_LISTEN",
                hint="the port is in use or the address is not local; change [metrics] listen",
            ) from None
        self._server: WSGIServer = server
        self.port = int(server.server_port)
        self.address = f"{host}:{self.port}"
        tmp = port_file.with_name(f".{port_file.name}.tmp")
        tmp.write_text(f"{self.port}\n", encoding="ascii")
        os.replace(tmp, port_file)
        log.info(
            "metrics on http://%s/metrics",
            self.address,
            extra={"event": "metrics_listening", "address": self.address},
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.port_file.unlink(missing_ok=True)
