"""Scale: what an aggregator costs as a federation grows to 10, 100 and 1,000 sites.

For each site count, in one run on one machine:

1. **Registration**: every site (its own certificate, its own mTLS connection) registers one
   tiny module (the fixture's small cvae, real weights, signed and HPKE-sealed) against a
   real ``aggregator serve``, at most ``--in-flight`` at once; with SQLite, with PostgreSQL
   and one ``serve``, and with PostgreSQL and two ``serve`` processes sharing the database
   (sites split between them). Registrations/s and p50/p99 latency per setup; the
   PostgreSQL server is a throwaway one started in a temporary directory
   (``tests/pg_fixture.py``).
2. **Synthesis and training** on the registered modules of the SQLite home
   (``aggregator.operations``, as ``aggregator synthesize`` / ``train`` run them), at world
   size 1 and 2 (``--nproc``, :mod:`ffsecure.distributed`, gloo on the CPU): seconds each,
   whether the dataset is the same at both world sizes (it must be), and whether a second
   training at world size 2 gives the same weights (it must).
3. **Audit**: ``aggregator ledger export`` of that home and ``ffsecure audit verify`` of the
   bundle with the CA pinned (both as the CLI runs them): seconds and verdict.

Writes ``<out>/scale.json`` and ``<out>/scale.md`` with the ``meta`` block every benchmark
carries, and the cost growth per site between the smallest and the largest count.

    python -m benchmarks.scale [--sites 10,100,1000] [--stores all] [--per-class 250]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import common  # noqa: E402
from benchmarks.grpc_load import STORES, Server, register_all, store_federation  # noqa: E402

CLASSES = 4


def _cli(*args: str, timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    return time.perf_counter() - t, proc


def register(root: Path, n: int, store: str, dsn: str | None, args) -> tuple[dict, Any]:
    backend, n_servers = STORES[store]
    sites = [f"site-{i:04d}" for i in range(n)]
    t = time.perf_counter()
    fed, configs = store_federation(root, sites, dsn, n_servers)
    packages = {s: fed.make_package(s, classes=[i % CLASSES]) for i, s in enumerate(sites)}
    setup_s = time.perf_counter() - t
    servers = [Server(fed, c) for c in configs]
    try:
        run = register_all(
            fed, sites, packages, [s.address for s in servers], args.timeout, args.in_flight
        )
    finally:
        for srv in servers:
            srv.stop()
    row = {"sites": n, "store": store, "backend": backend, "servers": n_servers}
    row.update(run, setup_s=setup_s)
    return row, fed


def synthesis_and_training(fed, per_class: int) -> dict:
    """Synthesize and train on the home's live modules at world size 1 and 2."""
    import hashlib

    from aggregator.operations import Operations
    from aggregator.store import open_home_store
    from ffsecure.classifier import TrainConfig

    out: dict[str, Any] = {}
    with open_home_store(fed.home) as store:
        ops = Operations(store, fed.manifest)
        shas, weights = {}, {}
        for w in (1, 2):
            t = time.perf_counter()
            ds = ops.synthesize(per_class=per_class, seed=0, grid=False, nproc=w)
            out[f"synthesis_s_w{w}"] = time.perf_counter() - t
            shas[w] = ds.sha256
            settings = TrainConfig(epochs=3, batch_size=128, seed=0, world_size=w)
            t = time.perf_counter()
            clf = ops.train(ds.dataset_id, settings=settings, width=8, threads=1, data=ds.tensors())
            out[f"training_s_w{w}"] = time.perf_counter() - t
            weights[w] = clf.sha256
        again = ops.train(
            ds.dataset_id,
            settings=TrainConfig(epochs=3, batch_size=128, seed=0, world_size=2),
            width=8,
            threads=1,
            data=ds.tensors(),
        )
        out["images"] = per_class * CLASSES
        out["dataset_same_at_w1_w2"] = shas[1] == shas[2]
        out["w2_weights_repeat"] = again.sha256 == weights[2]
        out["w1_vs_w2_weights_equal"] = weights[1] == weights[2]
        out["dataset_sha256"] = hashlib.sha256(shas[1].encode()).hexdigest()[:12]
    return out


def audit(fed, root: Path, timeout: float) -> dict:
    bundle = root / "bundle"
    export_s, proc = _cli(
        "-m", "aggregator", "ledger", "export", "--dir", str(fed.home.root), "--out", str(bundle),
        timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"export failed: {proc.stderr[-2000:]}")
    ca_pem = str(fed.ca.directory / "ca.pem")
    verify_s, proc = _cli(
        "-m", "ffsecure", "audit", "verify", str(bundle), "--ca", ca_pem, "--json",
        timeout=timeout,
    )  # fmt: skip
    verdict = json.loads(proc.stdout).get("verdict") if proc.stdout.strip() else None
    return {"export_s": export_s, "audit_s": verify_s, "verdict": verdict, "exit": proc.returncode}


def run(args) -> dict:
    from tests.pg_fixture import start_cluster

    stores = list(STORES) if args.stores == "all" else args.stores.split(",")
    cluster = start_cluster() if any(STORES[s][0] == "postgres" for s in stores) else None
    rows, work = [], []
    try:
        with tempfile.TemporaryDirectory(prefix="ffsecure-scale-") as tmp:
            for n in args.sites:
                kept = None
                for store in stores:
                    dsn = (
                        cluster.new_database()
                        if cluster and STORES[store][0] == "postgres"
                        else None
                    )
                    print(f"[scale] {n} sites, {store}: registering", flush=True)
                    row, fed = register(Path(tmp) / f"{n}-{store}", n, store, dsn, args)
                    print(
                        f"[scale]   {row['registrations_per_s']:.1f}/s, "
                        f"p99 {row['latency_p99_s']:.2f} s, errors {row['errors']}",
                        flush=True,
                    )
                    rows.append(row)
                    if store == "sqlite":
                        kept = fed
                if kept is not None:
                    print(f"[scale] {n} sites: synthesis, training, audit", flush=True)
                    item = {"sites": n}
                    item.update(synthesis_and_training(kept, args.per_class))
                    item.update(audit(kept, Path(tmp) / f"{n}-sqlite", args.timeout))
                    print(f"[scale]   {item}", flush=True)
                    work.append(item)
    finally:
        if cluster is not None:
            cluster.stop()
    return {"registration": rows, "work": work}


def growth(work: list[dict]) -> dict | None:
    """Seconds added per extra site between the smallest and the largest site count."""
    if len(work) < 2:
        return None
    a, b = work[0], work[-1]
    extra = b["sites"] - a["sites"]
    keys = ("synthesis_s_w1", "training_s_w1", "synthesis_s_w2", "training_s_w2", "audit_s")
    return {k: (b[k] - a[k]) / extra for k in keys}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Scale: 10 to 1,000 sites",
        "",
        common.meta_line(result["meta"])
        + f" Run: `python -m benchmarks.scale --sites {','.join(map(str, s['sites']))} "
        f"--in-flight {s['in_flight']} --per-class {s['per_class']}`.",
        "",
        "Registration (one tiny module per site, real `aggregator serve`, mTLS; "
        f"at most {s['in_flight']} uploads in flight):",
        "",
        "| sites | store | serve processes | registrations/s | p50 (s) | p99 (s) | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["registration"]:
        lines.append(
            f"| {r['sites']} | {r['backend']} | {r['servers']} | {r['registrations_per_s']:.1f} "
            f"| {r['latency_p50_s']:.2f} | {r['latency_p99_s']:.2f} | {r['errors']} |"
        )
    lines += [
        "",
        f"Synthesis ({CLASSES} classes x {s['per_class']} images, 1x16x16) and training (cnn "
        "width 8, 3 epochs, 1 thread per process) on the SQLite home's modules, at world "
        "size 1 and 2 (gloo), then export and audit of the bundle (CA pinned):",
        "",
        "| sites | synthesis s (N=1) | synthesis s (N=2) | training s (N=1) | training s (N=2) "
        "| N=2 / N=1 (synth + train) | dataset same at N=1, 2 | N=2 repeat bit-identical "
        "| export s | audit s | verdict |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | --- |",
    ]
    for w in result["work"]:
        ratio = (w["synthesis_s_w2"] + w["training_s_w2"]) / (
            w["synthesis_s_w1"] + w["training_s_w1"]
        )
        lines.append(
            f"| {w['sites']} | {w['synthesis_s_w1']:.1f} | {w['synthesis_s_w2']:.1f} "
            f"| {w['training_s_w1']:.1f} | {w['training_s_w2']:.1f} | {ratio:.2f} "
            f"| {'yes' if w['dataset_same_at_w1_w2'] else 'NO'} "
            f"| {'yes' if w['w2_weights_repeat'] else 'NO'} | {w['export_s']:.1f} "
            f"| {w['audit_s']:.1f} | {w['verdict']} |"
        )
    g = result.get("growth")
    if g:
        lines += [
            "",
            "Cost growth per added site (seconds, between the smallest and the largest count): "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in g.items())
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", default="10,100,1000", type=lambda v: [int(x) for x in v.split(",")])
    ap.add_argument("--stores", default="all", help="all, or a comma list of " + ",".join(STORES))
    ap.add_argument("--in-flight", type=int, default=64, help="uploads in flight at most")
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    settings = {
        "sites": args.sites,
        "stores": args.stores,
        "in_flight": args.in_flight,
        "per_class": args.per_class,
    }
    meta = common.meta("scale", settings)
    result: dict[str, Any] = {"benchmark": "scale", "meta": meta, "settings": settings}
    result.update(run(args))
    result["growth"] = growth(result["work"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (args.out / "scale.md").write_text(markdown(result))
    print(markdown(result))
    ok = all(r["errors"] == 0 for r in result["registration"]) and all(
        w["dataset_same_at_w1_w2"] and w["w2_weights_repeat"] and w["verdict"] == "VERIFIED"
        for w in result["work"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
