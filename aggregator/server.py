"""``aggregator serve``: the mTLS gRPC server, its start-up checks and its graceful shutdown.

Start-up loads everything from the aggregator home (docs/decisions.md) and
refuses to start when the pieces do not fit together: the federation
manifest must verify against ``ca.pem``, the HPKE key and the log key must be
the ones the manifest names, and ``tls.pem`` must be this federation's
aggregator certificate. The manifest is recorded in the ledger
(``federation.loaded``, ``aggregator.federation_ledger``) when it is not the
last one recorded, as the registrar is built and so before anything can be
registered; then the CRL it loads likewise (``crl.loaded``,
``aggregator.crl_ledger``), at start and whenever the file changes.

Transport: one TLS port only (there is no insecure port, not even for
tests), client certificates required (``require_client_auth=True``), trust
anchored in the federation CA. gRPC's BoringSSL negotiates TLS 1.3 whenever
the client offers it; grpc's Python API has no switch to refuse TLS 1.2 (see
docs/grpc.md), and ``tests/integration/test_grpc_security.py`` checks that an
ordinary client gets TLS 1.3.

Health: the standard ``grpc.health.v1.Health`` service answers only callers
that :class:`~aggregator.auth.Authenticator` accepts, as every Aggregator RPC
does (CRL, role, federation of the identity): TLS alone checks only the
chain, so a revoked or another federation's certificate of this CA would
otherwise learn whether the aggregator is up. A refusal is logged like any
other (method ``Health.Check`` / ``Health.Watch``).

Monitoring: with ``[metrics] listen`` (or ``serve --metrics-listen``) set, a
Prometheus endpoint (:mod:`aggregator.metrics`) starts after the gRPC port
and stops before the store closes; a non-loopback address is refused unless
explicitly allowed. Every call's site and every refusal are recorded in the
store (:mod:`aggregator.site_activity`) for ``aggregator status``.

Shutdown: on SIGTERM or SIGINT the health status turns NOT_SERVING, new
calls are refused, and in-flight calls (uploads included) get
``shutdown_grace_s`` to finish; an upload cut by the deadline keeps its
committed bytes and resumes after the restart. Everything acknowledged (a
receipt, a committed offset) was durable before it was sent.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from aggregator.auth import Authenticator, CrlSource
from aggregator.config import AggregatorConfig, load_config
from aggregator.crl_ledger import CrlRecorder
from aggregator.federation_ledger import keep_federation
from aggregator.grpc_errors import abort_with
from aggregator.home import (
    AggregatorHome,
    load_kek,
    load_log_key,
    read_private_file,
)
from aggregator.metrics import Metrics, MetricsEndpoint, ServeState, parse_listen
from aggregator.ratelimit import RateLimiter
from aggregator.registration import Registrar, max_upload_bytes
from aggregator.request_deadline import RequestDeadlineInterceptor
from aggregator.service import AggregatorService, ServiceDeps
from aggregator.site_activity import SiteActivity
from aggregator.store import open_store
from aggregator.store.base import Store
from aggregator.unlearning import RetrainWorker, make_worker
from aggregator.uploads import UploadStaging
from ffsecure import envelope, pki
from ffsecure.errors import ConfigError, FFSecureError
from ffsecure.federation import FederationManifest, verify_federation_json
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc

log = logging.getLogger("aggregator.server")

SERVICE_NAME = "ffsecure.v1.Aggregator"
MESSAGE_OVERHEAD = 64 * 1024  # protobuf framing and the small fields next to a chunk


@dataclass
class Runtime:
    """What ``serve`` loaded from the home: config, federation, keys, store, TLS material."""

    config: AggregatorConfig
    home: AggregatorHome
    federation: FederationManifest
    signed_manifest: bytes
    ca_cert_pem: bytes
    store: Store
    deps: ServiceDeps
    tls_cert_pem: bytes
    tls_key_pem: bytes
    retrain_worker: RetrainWorker | None = None

    def close(self) -> None:
        if self.retrain_worker is not None:
            self.retrain_worker.stop(self.config.server.shutdown_grace_s)
        self.store.close()


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{what} {path} does not exist",
            hint="create the aggregator home with `aggregator init`",
        ) from None


def load_runtime(config: AggregatorConfig) -> Runtime:
    """Load and cross-check everything ``serve`` needs from the aggregator home."""
    home = AggregatorHome.at(config.home)
    ca_pem = _read(home.ca_cert, "CA certificate")
    ca_cert = pki.load_cert(ca_pem)
    signed = _read(home.federation, "federation manifest")
    verified = verify_federation_json(signed, ca_cert)
    federation = verified.manifest
    crl = CrlSource(home.crl, ca_cert)
    crl.current()  # a CRL that does not verify stops the start

    suite, hpke_private, hpke_kid = envelope.read_key_file(home.hpke_key)
    if hpke_kid != federation.hpke_key_id or suite != federation.hpke_suite:
        raise ConfigError(
            f"keys/hpke.key (key id {hpke_kid}) is not the HPKE key in federation.json "
            f"({federation.hpke_key_id})",
            hint="install the federation manifest made from this aggregator's public-keys.json",
        )
    signer = load_log_key(home)
    agg = federation.aggregator
    if signer.vkey != agg["log_public_key"] or signer.name != agg["log_origin"]:
        raise ConfigError(
            "keys/log.key is not the log key in federation.json",
            hint="install the federation manifest made from this aggregator's public-keys.json",
        )
    tls_cert_pem = _read(home.tls_cert, "TLS certificate")
    tls_key_pem = read_private_file(home.tls_key)
    pki.verify_cert(
        pki.load_cert(tls_cert_pem), ca_cert=ca_cert, crl=crl.current(), role="aggregator"
    )

    keep_federation(home, signed, verified)  # its bytes, for the audit of later exports
    store = open_store(config, origin=signer.name, kek=load_kek(home), log_signer=signer)
    lock = threading.RLock()
    try:
        registrar = Registrar(  # records the manifest in force (federation.loaded) first
            store=store,
            federation=verified,
            ca_cert=ca_cert,
            crl=crl.current,
            hpke_private_key=hpke_private,
            hpke_key_id=hpke_kid,
            store_lock=lock,
        )
        _record_crl(crl, store, ca_cert)
    except BaseException:
        store.close()
        raise
    up = config.uploads
    staging = UploadStaging(
        config.uploads_dir,
        max_upload_bytes=max_upload_bytes(federation, config.limits.max_upload_bytes),
        commit_every_bytes=up.commit_every_bytes,
        max_parallel_per_site=up.max_parallel_per_site,
        stale_after_s=up.stale_after_s,
    )
    removed = staging.cleanup_stale()
    if removed:
        log.info(
            "removed %d stale uploads",
            removed,
            extra={"event": "uploads_cleaned", "count": removed},
        )
    rl = config.rate_limit
    metrics = Metrics()
    metrics.watch(
        ServeState(
            store=store,
            lock=lock,
            crl=crl.current,
            tls_cert=pki.load_cert(tls_cert_pem),
            ca_cert=ca_cert,
        )
    )

    worker = make_worker(
        store=store,
        federation=federation,
        lock=lock,
        runs_dir=home.root / "runs",
        evaluation_section=config.evaluation,
    )
    deps = ServiceDeps(
        authenticator=Authenticator(ca_cert, crl),
        registrar=registrar,
        staging=staging,
        signed_manifest=signed,
        log_vkey=signer.vkey,
        log_origin=signer.name,
        call_limiter=RateLimiter(
            rate=rl.calls_per_second,
            burst=rl.call_burst,
            name="calls",
            on_limit=metrics.rate_limit_hit,
        ),
        upload_limiter=RateLimiter(
            rate=rl.uploads_per_minute / 60.0,
            burst=rl.upload_burst,
            name="uploads",
            on_limit=metrics.rate_limit_hit,
        ),
        upload_deadline_s=config.server.upload_deadline_s,
        download_deadline_s=config.server.download_deadline_s,
        max_concurrent_verifications=config.server.max_concurrent_verifications,
        max_chunk_bytes=config.uploads.chunk_bytes,
        deleter=worker.deleter,
        metrics=metrics,
        activity=SiteActivity(store, lock),
    )
    return Runtime(
        config=config,
        home=home,
        federation=federation,
        signed_manifest=signed,
        ca_cert_pem=ca_pem,
        store=store,
        deps=deps,
        tls_cert_pem=tls_cert_pem,
        tls_key_pem=tls_key_pem,
        retrain_worker=worker,
    )


def _record_crl(crl: CrlSource, store: Store, ca_cert: x509.Certificate) -> None:
    """From now on every CRL ``serve`` loads is recorded (``crl.loaded``), this one first."""
    crl.on_load = CrlRecorder(store, ca_cert).record
    crl.record_now()


def server_options(config: AggregatorConfig) -> list[tuple[str, int]]:
    """gRPC channel arguments: message sizes, keepalive and ping policy (docs/grpc.md)."""
    s = config.server
    return [
        ("grpc.max_receive_message_length", config.uploads.chunk_bytes + MESSAGE_OVERHEAD),
        ("grpc.max_send_message_length", 4 << 20),
        ("grpc.keepalive_time_ms", int(s.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", int(s.min_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_idle_ms", 30 * 60 * 1000),
        ("grpc.so_reuseport", 0),
    ]


class AuthenticatedHealth(health.HealthServicer):
    """The standard health service, for authenticated callers only (module docstring)."""

    def __init__(self, authenticator: Authenticator):
        super().__init__(experimental_non_blocking=True)
        self._authenticator = authenticator

    def _admit(self, context: grpc.ServicerContext, method: str) -> None:
        try:
            self._authenticator.authenticate(context)
        except FFSecureError as exc:
            peer = self._authenticator.unverified_name(context)
            abort_with(context, exc, method=method, peer=peer)

    def Check(self, request, context):
        self._admit(context, "Health.Check")
        return super().Check(request, context)

    def Watch(self, request, context, send_response_callback=None):
        self._admit(context, "Health.Watch")
        return super().Watch(request, context, send_response_callback)


class RunningServer:
    """A started server: its port, its health servicer and a way to drain and stop it.

    ``metrics_listen`` (``serve --metrics-listen``) overrides ``[metrics] listen``.
    """

    def __init__(self, runtime: Runtime, *, metrics_listen: str | None = None):
        self.runtime = runtime
        cfg = runtime.config
        self.server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=cfg.server.max_workers, thread_name_prefix="rpc"
            ),
            options=server_options(cfg),
            maximum_concurrent_rpcs=cfg.server.max_concurrent_rpcs,
            # Every unary-request method (health included) reads its request under
            # server.request_deadline_s, so a client that never sends it cannot hold a worker.
            interceptors=[
                RequestDeadlineInterceptor(
                    cfg.server.request_deadline_s,
                    runtime.deps.authenticator.unverified_name,
                    runtime.deps.watchdog,
                )
            ],
        )
        pb_grpc.add_AggregatorServicer_to_server(AggregatorService(runtime.deps), self.server)
        self.health = AuthenticatedHealth(runtime.deps.authenticator)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        creds = grpc.ssl_server_credentials(
            [(runtime.tls_key_pem, runtime.tls_cert_pem)],
            root_certificates=runtime.ca_cert_pem,
            require_client_auth=True,
        )
        self.port = self.server.add_secure_port(cfg.server.listen, creds)
        if self.port == 0:
            raise ConfigError(
                f"cannot listen on {cfg.server.listen}",
                hint="the port is in use or the address is not local; change server.listen",
            )
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        host = cfg.server.listen.rpartition(":")[0]
        self.address = f"{host}:{self.port}"
        try:
            self.metrics = _start_metrics(runtime, metrics_listen)
        except BaseException:
            self.server.stop(0).wait()
            raise
        _write_port_file(cfg.port_file, self.port)
        log.info(
            "listening on %s (mTLS)",
            self.address,
            extra={"event": "listening", "address": self.address, "port": self.port},
        )

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace``, then close the store."""
        grace = self.runtime.config.server.shutdown_grace_s if grace is None else grace
        log.info("draining (grace %.1f s)", grace, extra={"event": "draining", "grace_s": grace})
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        if self.metrics is not None:
            self.metrics.stop()
        self.runtime.deps.watchdog.close()
        self.runtime.close()
        self.runtime.config.port_file.unlink(missing_ok=True)
        log.info("stopped", extra={"event": "stopped"})


def _start_metrics(runtime: Runtime, override: str | None) -> MetricsEndpoint | None:
    """The Prometheus endpoint when configured (loopback unless allowed), else None."""
    cfg = runtime.config
    listen = override if override is not None else cfg.metrics.listen
    if not listen:
        return None
    host, port = parse_listen(listen, allow_non_loopback=cfg.metrics.allow_non_loopback)
    return MetricsEndpoint(
        runtime.deps.metrics.registry, host, port, port_file=cfg.metrics_port_file
    )


def _write_port_file(path: Path, port: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{port}\n", encoding="ascii")
    os.replace(tmp, path)


def start(config: AggregatorConfig, *, metrics_listen: str | None = None) -> RunningServer:
    """Load the home and start serving (returns at once; used by tests and ``serve``)."""
    runtime = load_runtime(config)
    try:
        return RunningServer(runtime, metrics_listen=metrics_listen)
    except BaseException:
        runtime.close()
        raise


def serve(
    config_path: str | Path,
    *,
    on_ready: Callable[[RunningServer], None] | None = None,
    metrics_listen: str | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then drain and stop."""
    config = load_config(config_path)
    stop = threading.Event()

    def _signal(signum, _frame):
        log.info("signal %d received", signum, extra={"event": "signal", "signal": signum})
        stop.set()

    previous = {sig: signal.signal(sig, _signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        running = start(config, metrics_listen=metrics_listen)
        print(f"listening on {running.address}", flush=True, file=sys.stdout)
        if on_ready is not None:
            on_ready(running)
        while not stop.wait(0.5):
            pass
        running.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
