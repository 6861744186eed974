"""gRPC load benchmark: many sites uploading at once, and one large upload against a plain socket.

Everything runs on loopback against a real ``aggregator serve`` process (mTLS,
TLS 1.3, real store and ledger), with a federation built by
``tests/federation_fixture.py``. Bounded in count and time.

1. **Concurrent uploads**: ``--sites`` sites (default 200; the gRPC issue asks for 100) each upload
   one sealed module of about 2 MB (the tiny cvae generator for 3x64x64 images: real weights,
   signed, HPKE-sealed) at the same moment. Each site has its own certificate and connection; every
   receipt is verified (checkpoint signature + inclusion proof). Reports uploads/s, p50/p99 latency,
   error count (must be 0), and the server's peak resident memory.
2. **One large upload** (the default cvae for 3x64x64 images, about 17 MB sealed)
   over mTLS, end to end (transfer, staging, hash, HPKE open, verification,
   encrypted store, ledger entry, receipt), and the same bytes sent over a
   plain loopback TCP socket into a file with fsync, in the same run; the
   ratio of throughputs is the figure. Also: the same bytes over mTLS with a
   wrong announced hash, which measures transfer + staging + hashing alone
   (the server refuses at the hash check).

3. **Store backends** (``--store``, instead of the phases above): ``--sites``
   sites each register one tiny module (the fixture's small cvae) at the same
   moment, against SQLite, against PostgreSQL with one ``serve``, and against
   PostgreSQL with two ``serve`` processes sharing the database (sites split
   between them), all in one run; registrations/s and p50/p99 latency per
   store. The PostgreSQL server is a throwaway one started in a temporary
   directory (``tests/pg_fixture.py``: ``initdb`` + ``pg_ctl``).

Writes ``<out>/grpc_load.json`` and ``<out>/grpc_load.md`` (``--store``:
``grpc_load_store.json`` / ``.md``), with the ``meta`` block every benchmark
result carries (machine, date, commit, command, settings).

    python -m benchmarks.grpc_load [--sites 200] [--out benchmarks/results] [--timeout 600]
    python -m benchmarks.grpc_load --store all --sites 200
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import grpc
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from ffsecure.v1 import aggregator_pb2 as pb  # noqa: E402
from tests.federation_fixture import build_federation  # noqa: E402

# server.max_workers of the concurrent phase: calls beyond it wait in gRPC's queue
CONCURRENT_WORKERS = 32


class Server:
    """``aggregator serve`` in a child process, with its RSS sampled while it runs."""

    def __init__(self, fed, config_path: Path | None = None):
        config_path = config_path or fed.config_path
        self.port_file = config_path.parent / "serve.port"
        self.port_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        # the child writes to its own copy of the descriptor; ours closes once it has started
        with open(config_path.parent / "serve.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aggregator",
                    "--log-level",
                    "WARNING",
                    "serve",
                    "--config",
                    str(config_path),
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"aggregator serve did not start; see {config_path.parent / 'serve.log'}"
                )
            time.sleep(0.05)
        self.address = f"127.0.0.1:{int(self.port_file.read_text())}"
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = self.base_rss = self.ps.memory_info().rss
        self.peak_threads = self.base_threads = self.ps.num_threads()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
                self.peak_threads = max(self.peak_threads, self.ps.num_threads())
            except psutil.Error:
                return

    def reset_peak(self) -> None:
        self.peak_rss = self.base_rss = self.ps.memory_info().rss
        self.peak_threads = self.base_threads = self.ps.num_threads()

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def concurrent_uploads(root: Path, n_sites: int, timeout: float) -> dict:
    sites = [f"site-{i:03d}" for i in range(n_sites)]
    fed = build_federation(
        root,
        sites=sites,
        image_shape=(3, 64, 64),
        labels=[f"c{i}" for i in range(10)],
        max_workers=CONCURRENT_WORKERS,
        chunk_bytes=1 << 20,
        commit_every_bytes=4 << 20,
        calls_per_second=100.0,
        call_burst=200,
        uploads_per_minute=60.0,
        upload_burst=10,
    )
    packages = {s: fed.make_package(s, classes=[i % 10]) for i, s in enumerate(sites)}
    module_bytes = len(next(iter(packages.values()))[0])
    srv = Server(fed)
    try:
        clients = {
            s: fed.client(
                s, srv.address, chunk_bytes=1 << 20, timeout_s=120, upload_timeout_s=timeout
            )
            for s in sites
        }
        barrier = threading.Barrier(n_sites + 1)
        latencies: dict[str, float] = {}
        errors: dict[str, str] = {}

        def one(site: str) -> None:
            sealed, pkg = packages[site]
            barrier.wait()
            t = time.perf_counter()
            try:
                receipt = clients[site].upload(
                    sealed, module_id=pkg.manifest.module_id, site_id=site
                )
                assert not receipt.existing
                latencies[site] = time.perf_counter() - t
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors[site] = f"{type(exc).__name__}: {exc}"

        srv.reset_peak()
        with ThreadPoolExecutor(max_workers=n_sites) as pool:
            futures = [pool.submit(one, s) for s in sites]
            barrier.wait()
            t0 = time.perf_counter()
            done, pending = wait(futures, timeout=timeout)
            elapsed = time.perf_counter() - t0
        for c in clients.values():
            c.close()
        lat = list(latencies.values())
        return {
            "sites": n_sites,
            "module_bytes": module_bytes,
            "completed": len(lat),
            "errors": len(errors) + len(pending),
            "error_samples": list(errors.values())[:5],
            "seconds": elapsed,
            "uploads_per_s": len(lat) / elapsed,
            "mb_per_s": len(lat) * module_bytes / elapsed / 1e6,
            "latency_p50_s": percentile(lat, 0.50),
            "latency_p99_s": percentile(lat, 0.99),
            "latency_max_s": max(lat) if lat else float("nan"),
            "server_rss_before_mb": srv.base_rss / 1e6,
            "server_rss_peak_mb": srv.peak_rss / 1e6,
            "server_threads_before": srv.base_threads,
            "server_threads_peak": srv.peak_threads,
            "server_max_workers": CONCURRENT_WORKERS,
        }
    finally:
        srv.stop()


def socket_copy(data: bytes, out_dir: Path, *, to_file: bool) -> float:
    """Seconds to send ``data`` over a plain loopback TCP socket (receiver writes to a file +
    fsync)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = {}

    def receive() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.ExitStack() as stack:
            fh = stack.enter_context(open(out_dir / "socket-copy.bin", "wb")) if to_file else None
            total = 0
            while total < len(data):
                block = conn.recv(1 << 20)
                if not block:
                    break
                total += len(block)
                if fh is not None:
                    fh.write(block)
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
            received["bytes"] = total
            conn.sendall(b"k")

    t = threading.Thread(target=receive)
    t.start()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        assert s.recv(1) == b"k"
    elapsed = time.perf_counter() - start
    t.join()
    listener.close()
    assert received["bytes"] == len(data)
    return elapsed


def large_upload(root: Path, timeout: float) -> dict:

    fed = build_federation(
        root,
        image_shape=(3, 64, 64),
        labels=[f"c{i}" for i in range(10)],
        generator_size="default",
        max_module_bytes=64 << 20,
        chunk_bytes=1 << 20,
        commit_every_bytes=8 << 20,
    )
    sealed, pkg = fed.make_package("st-mary", classes=[0, 1, 2])
    size = len(sealed)
    srv = Server(fed)
    try:
        # transfer + staging + hash only: announce a wrong hash, the server refuses after hashing
        with fed.client("st-mary", srv.address, chunk_bytes=1 << 20, upload_timeout_s=timeout) as c:
            sha_wrong = hashlib.sha256(b"not the package").digest()
            chunks = (
                pb.UploadChunk(
                    upload_id="e" * 32,
                    offset=o,
                    data=sealed[o : o + (1 << 20)],
                    total_size=size,
                    total_sha256=sha_wrong,
                )
                for o in range(0, size, 1 << 20)
            )
            t = time.perf_counter()
            try:
                c.stub.UploadModule(chunks, timeout=timeout)
                raise RuntimeError("an upload with a wrong hash was accepted")
            except grpc.RpcError as exc:
                if dict(exc.trailing_metadata()).get("ffsecure-error-code") != "E_UPLOAD_HASH":
                    raise
            transfer_s = time.perf_counter() - t
            srv.reset_peak()
            t = time.perf_counter()
            receipt = c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
            upload_s = time.perf_counter() - t
            assert receipt.index == 0
        socket_file_s = socket_copy(sealed, root, to_file=True)
        socket_mem_s = socket_copy(sealed, root, to_file=False)
        mb = size / 1e6
        return {
            "bytes": size,
            "mtls_upload_s": upload_s,
            "mtls_upload_mb_per_s": mb / upload_s,
            "mtls_transfer_only_s": transfer_s,
            "mtls_transfer_only_mb_per_s": mb / transfer_s,
            "socket_file_s": socket_file_s,
            "socket_file_mb_per_s": mb / socket_file_s,
            "socket_memory_mb_per_s": mb / socket_mem_s,
            "ratio_upload_vs_socket_file": (mb / upload_s) / (mb / socket_file_s),
            "ratio_transfer_vs_socket_file": (mb / transfer_s) / (mb / socket_file_s),
            "server_rss_peak_during_upload_mb": srv.peak_rss / 1e6,
            "server_rss_before_upload_mb": srv.base_rss / 1e6,
        }
    finally:
        srv.stop()


def memory_vs_size(root: Path, sizes_mb: list[int], timeout: float) -> dict:
    """Peak server RSS above idle while receiving uploads of each size (refused at the hash
    check)."""

    chunk = 1 << 20
    fed = build_federation(
        root,
        max_module_bytes=(max(sizes_mb) + 1) << 20,
        chunk_bytes=chunk,
        commit_every_bytes=4 << 20,
    )
    srv = Server(fed)
    rows = []
    try:
        with fed.client("st-mary", srv.address, chunk_bytes=chunk, upload_timeout_s=timeout) as c:
            block = os.urandom(chunk)
            # warm up the server's code paths once so that one-off allocations do not count
            for n, size_mb in enumerate([1] + sizes_mb):
                size = size_mb << 20
                upload_id = os.urandom(16).hex()
                chunks = (
                    pb.UploadChunk(
                        upload_id=upload_id,
                        offset=o,
                        data=block,
                        total_size=size,
                        total_sha256=b"\x00" * 32,
                    )
                    for o in range(0, size, chunk)
                )
                time.sleep(0.3)
                srv.reset_peak()
                t = time.perf_counter()
                try:
                    c.stub.UploadModule(chunks, timeout=timeout)
                    raise RuntimeError("an upload with a wrong hash was accepted")
                except grpc.RpcError as exc:
                    if dict(exc.trailing_metadata()).get("ffsecure-error-code") != "E_UPLOAD_HASH":
                        raise
                seconds = time.perf_counter() - t
                time.sleep(0.2)  # let the sampler see the tail
                if n == 0:
                    continue  # the warm-up upload is not reported
                rows.append(
                    {
                        "upload_mb": size_mb,
                        "seconds": seconds,
                        "mb_per_s": size / 1e6 / seconds,
                        "rss_idle_mb": srv.base_rss / 1e6,
                        "rss_peak_mb": srv.peak_rss / 1e6,
                        "rss_growth_mb": (srv.peak_rss - srv.base_rss) / 1e6,
                    }
                )
    finally:
        srv.stop()
    return {
        "chunk_bytes": chunk,
        "rows": rows,
        "max_growth_mb": max(r["rss_growth_mb"] for r in rows),
        "growth_ratio_largest_vs_smallest": (rows[-1]["rss_growth_mb"] + 1)
        / (rows[0]["rss_growth_mb"] + 1),
    }


STORES = {"sqlite": ("sqlite", 1), "postgres": ("postgres", 1), "postgres-2": ("postgres", 2)}


def register_all(
    fed, sites: list[str], packages: dict, addresses: list[str], timeout: float, in_flight: int
) -> dict:
    """Every site registers its package, at most ``in_flight`` at once, spread over
    ``addresses`` (site ``i`` to server ``i mod len``); latency counted from each call's start."""
    clients = {
        s: fed.client(s, addresses[i % len(addresses)], timeout_s=120, upload_timeout_s=timeout)
        for i, s in enumerate(sites)
    }
    barrier = threading.Barrier(min(in_flight, len(sites)) + 1)
    latencies: dict[str, float] = {}
    errors: dict[str, str] = {}

    def one(site: str) -> None:
        sealed, pkg = packages[site]
        t = time.perf_counter()
        try:
            clients[site].upload(sealed, module_id=pkg.manifest.module_id, site_id=site)
            latencies[site] = time.perf_counter() - t
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors[site] = f"{type(exc).__name__}: {exc}"

    def start_together() -> None:
        barrier.wait()  # the first wave starts at one moment

    with ThreadPoolExecutor(max_workers=min(in_flight, len(sites))) as pool:
        for _ in range(min(in_flight, len(sites))):
            pool.submit(start_together)
        futures = [pool.submit(one, s) for s in sites]
        barrier.wait()
        t0 = time.perf_counter()
        _done, pending = wait(futures, timeout=timeout)
        elapsed = time.perf_counter() - t0
    for c in clients.values():
        c.close()
    lat = list(latencies.values())
    return {
        "completed": len(lat),
        "errors": len(errors) + len(pending),
        "error_samples": list(errors.values())[:3],
        "seconds": elapsed,
        "registrations_per_s": len(lat) / elapsed,
        "latency_p50_s": percentile(lat, 0.50),
        "latency_p99_s": percentile(lat, 0.99),
        "in_flight": min(in_flight, len(sites)),
    }


def store_federation(root: Path, sites: list[str], dsn: str | None, n_servers: int):
    """A federation of ``sites`` whose aggregator uses SQLite (``dsn`` None) or PostgreSQL,
    with ``n_servers`` serve configs sharing it; returns ``(fed, configs)``."""
    import shutil

    from tests.pg_fixture import use_postgres

    fed = build_federation(
        root,
        sites=sites,
        max_workers=CONCURRENT_WORKERS,
        calls_per_second=1000.0,
        call_burst=2000,
        uploads_per_minute=6000.0,
        upload_burst=1000,
    )
    if dsn is not None:
        use_postgres(fed.config_path, dsn)
    configs = [fed.config_path]
    for k in range(1, n_servers):
        shutil.copytree(fed.home.root, root / f"aggregator-{k + 1}")
        configs.append(root / f"aggregator-{k + 1}" / "aggregator.toml")
    return fed, configs


def _store_run(
    root: Path, n_sites: int, store: str, dsn: str | None, timeout: float, in_flight: int = 0
) -> dict:
    """``n_sites`` tiny registrations (all at once unless ``in_flight``) against one store
    setup; latencies per upload."""
    backend, n_servers = STORES[store]
    sites = [f"site-{i:04d}" for i in range(n_sites)]
    fed, configs = store_federation(root, sites, dsn, n_servers)
    packages = {s: fed.make_package(s, classes=[i % 4]) for i, s in enumerate(sites)}
    servers = [Server(fed, c) for c in configs]
    try:
        run = register_all(
            fed, sites, packages, [srv.address for srv in servers], timeout, in_flight or n_sites
        )
    finally:
        for srv in servers:
            srv.stop()
    return {
        "store": store,
        "backend": backend,
        "servers": n_servers,
        "module_bytes": len(next(iter(packages.values()))[0]),
        **run,
    }


def store_comparison(root: Path, n_sites: int, stores: list[str], timeout: float) -> list[dict]:
    """Each store setup in turn, on one throwaway PostgreSQL server (one database each)."""
    from tests.pg_fixture import start_cluster

    cluster = start_cluster() if any(STORES[s][0] == "postgres" for s in stores) else None
    try:
        return [
            _store_run(
                root / store,
                n_sites,
                store,
                cluster.new_database() if cluster and STORES[store][0] == "postgres" else None,
                timeout,
            )
            for store in stores
        ]
    finally:
        if cluster is not None:
            cluster.stop()


def store_markdown(result: dict) -> str:
    lines = [
        "# Registrations per store backend (loopback, mTLS, real `aggregator serve`)",
        "",
        common.meta_line(result["meta"]),
        "",
        f"{result['sites']} sites each register one tiny module at the same moment.",
        "",
        "| store | serve processes | registrations/s | p50 (s) | p99 latency (s) | errors |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["stores"]:
        lines.append(
            f"| {r['backend']} | {r['servers']} | {r['registrations_per_s']:.1f} | "
            f"{r['latency_p50_s']:.2f} | {r['latency_p99_s']:.2f} | {r['errors']} |"
        )
    return "\n".join(lines) + "\n"


def store_main(args: argparse.Namespace) -> int:
    stores = list(STORES) if args.store == "all" else [args.store]
    settings = {"sites": args.sites, "stores": stores, "timeout_s": args.timeout}
    meta = common.meta("grpc_load_store", settings)
    with tempfile.TemporaryDirectory(prefix="ffsecure-store-load-") as tmp:
        runs = store_comparison(Path(tmp), args.sites, stores, args.timeout)
    result = {"benchmark": "grpc_load_store", "meta": meta, "sites": args.sites, "stores": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpc_load_store.json").write_text(
        json.dumps(result, indent=2, sort_keys=True) + "\n"
    )
    (args.out / "grpc_load_store.md").write_text(store_markdown(result))
    print(store_markdown(result))
    return 0 if all(r["errors"] == 0 for r in runs) else 1


def markdown(result: dict) -> str:
    c, big = result["concurrent"], result["large"]
    lines = [
        "# gRPC load (loopback, mTLS, real `aggregator serve`)",
        "",
        common.meta_line(result["meta"])
        + f" Run: `python -m benchmarks.grpc_load --sites {c['sites']}`.",
        "",
        f"## {c['sites']} sites uploading one {c['module_bytes'] / 1e6:.2f} MB module each, at "
        "once",
        "",
        "| uploads/s | MB/s | p50 latency (s) | p99 latency (s) | max (s) | errors | server RSS "
        "before / peak (MB) | server threads before / peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {c['uploads_per_s']:.1f} | {c['mb_per_s']:.1f} | {c['latency_p50_s']:.2f} | "
        f"{c['latency_p99_s']:.2f} | {c['latency_max_s']:.2f} | {c['errors']} | "
        f"{c['server_rss_before_mb']:.0f} / {c['server_rss_peak_mb']:.0f} | "
        f"{c['server_threads_before']} / {c['server_threads_peak']} |",
        "",
        f"## One large upload ({big['bytes'] / 1e6:.1f} MB) against a plain loopback socket",
        "",
        "| path | MB/s |",
        "| --- | --- |",
        "| mTLS upload, end to end (transfer, staging, hash, HPKE open, verify, encrypted store, "
        f"ledger, receipt) | {big['mtls_upload_mb_per_s']:.1f} |",
        f"| mTLS transfer + staging + hash only | {big['mtls_transfer_only_mb_per_s']:.1f} |",
        f"| plain TCP socket into a file + fsync | {big['socket_file_mb_per_s']:.1f} |",
        f"| plain TCP socket into memory | {big['socket_memory_mb_per_s']:.1f} |",
        "",
        "Ratio, mTLS end-to-end upload / plain socket copy: "
        f"**{big['ratio_upload_vs_socket_file']:.3f}**; mTLS transfer only / plain socket copy: "
        f"**{big['ratio_transfer_vs_socket_file']:.3f}**. Server RSS peak during the large upload: "
        f"{big['server_rss_peak_during_upload_mb']:.0f} MB (before: "
        f"{big['server_rss_before_upload_mb']:.0f} MB).",
        "",
    ]
    mem = result.get("memory")
    if mem:
        lines += [
            "## Server memory against upload size (receive, stage to disk, hash)",
            "",
            f"Chunks of {mem['chunk_bytes'] >> 20} MiB; each upload carries a wrong announced "
            "hash, so the server receives, stages and hashes every byte and then refuses with "
            "`E_UPLOAD_HASH`.",
            "",
            "| upload (MB) | MB/s | server RSS idle (MB) | peak (MB) | growth (MB) |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['upload_mb']} | {r['mb_per_s']:.1f} | {r['rss_idle_mb']:.0f} | "
            f"{r['rss_peak_mb']:.0f} | {r['rss_growth_mb']:.1f} |"
            for r in mem["rows"]
        ]
        lines += [
            "",
            f"Largest growth while receiving: {mem['max_growth_mb']:.1f} MB, for uploads up to "
            f"{mem['rows'][-1]['upload_mb']} MB: receiving does not hold the upload in memory. "
            "Verification (HPKE open, signature, tensor checks, encrypted store) then holds the "
            "whole package: the large upload above shows that peak.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=200)
    ap.add_argument(
        "--memory-sizes", default="2,16,64", help="upload sizes (MB) for the memory phase"
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="bound on each phase, seconds")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument(
        "--store",
        choices=[*STORES, "all"],
        default=None,
        help="compare store backends instead (all: sqlite, postgres, postgres with 2 serves)",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.sites <= 500:
        ap.error("--sites must be 1..500")
    if args.store is not None:
        return store_main(args)
    # heavy: torch, only when this part runs (results render without it)
    import torch

    torch.set_num_threads(2)
    settings = {
        "sites": args.sites,
        "memory_sizes_mb": args.memory_sizes,
        "timeout_s": args.timeout,
    }
    meta = common.meta("grpc_load", settings)  # machine load and date as the run starts
    with tempfile.TemporaryDirectory(prefix="ffsecure-grpc-load-") as tmp:
        concurrent = concurrent_uploads(Path(tmp) / "load", args.sites, args.timeout)
        large = large_upload(Path(tmp) / "large", args.timeout)
        memory = memory_vs_size(
            Path(tmp) / "memory", [int(x) for x in args.memory_sizes.split(",")], args.timeout
        )
    result = {
        "benchmark": "grpc_load",
        "meta": meta,  # machine, python, date, commit
        "concurrent": concurrent,
        "large": large,
        "memory": memory,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpc_load.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (args.out / "grpc_load.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if concurrent["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
