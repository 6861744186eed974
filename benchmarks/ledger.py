"""Ledger benchmark: appends, inclusion proofs and proof sizes for growing logs.

For logs of 10^3, 10^4, 10^5 (and 10^6 with ``--full``) entries it measures

- in-memory Merkle appends per second (``ffsecure.ledger.MemoryTree``),
- durable appends per second through the SQLite store (one transaction and
  fsync per append, the way the service appends events),
- inclusion-proof generation per second from the SQLite node table,
- inclusion-proof verification per second (RFC 9162 section 2.1.3.2),
- inclusion and consistency proof sizes (hashes and bytes).

Writes ``<out>/ledger.json`` and ``<out>/ledger.md``, with the ``meta`` block
every benchmark result carries (machine, date, commit, command, settings).

    python -m benchmarks.ledger [--full] [--sizes 1000,10000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from aggregator.home import LogSigner
from aggregator.store import SQLiteStore
from benchmarks import common
from ffsecure.ledger import (
    MemoryTree,
    entry_bytes,
    leaf_hash,
    make_entry,
    open_checkpoint,
    verify_inclusion,
)

ORIGIN = "ffsecure.local/bench/log"


def _entry(i: int) -> dict:
    return make_entry(
        "cert.revoked",
        "operator:bench",
        {"serial": f"{i:016x}", "reason": "benchmark"},
        time="2026-11-22T12:00:00Z",
    )


def bench_size(n: int, *, durable_appends: int, proofs: int, rng: random.Random) -> dict:
    entries = [_entry(i) for i in range(n)]

    datas = [entry_bytes(e) for e in entries]
    t = time.perf_counter()
    tree = MemoryTree()
    for d in datas:
        tree.append(d)
    memory_rate = n / (time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore.open(
            tmp, origin=ORIGIN, kek=os.urandom(32), log_signer=LogSigner.generate(ORIGIN)
        )
        t = time.perf_counter()
        for start in range(0, n, 20_000):
            store.append_many(entries[start : start + 20_000])
        bulk_rate = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(durable_appends):
            store.append(_entry(n + i))
        durable_rate = durable_appends / (time.perf_counter() - t)
        size = store.size()
        cp = open_checkpoint(store.checkpoint(), store.vkey)
        assert (
            cp.root_hash
            == MemoryTree(
                [leaf_hash(d) for d in datas] + [leaf_hash(d) for d in store.entries(n, size)]
            ).root()
        )
        indices = [rng.randrange(size) for _ in range(proofs)]
        t = time.perf_counter()
        made = [store.inclusion_proof(i, size) for i in indices]
        gen_rate = proofs / (time.perf_counter() - t)
        leaves = [leaf_hash(store.entry(i)) for i in indices]
        t = time.perf_counter()
        for i, leaf, proof in zip(indices, leaves, made, strict=True):
            verify_inclusion(leaf, i, size, proof, cp.root_hash)
        verify_rate = proofs / (time.perf_counter() - t)
        cons = [len(store.consistency_proof(rng.randrange(1, size), size)) for _ in range(50)]
        store.close()  # checkpoints the WAL into the database file
        db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("store.sqlite*"))
    lens = [len(p) for p in made]
    return {
        "entries": n,
        "memory_appends_per_s": round(memory_rate),
        "sqlite_bulk_appends_per_s": round(bulk_rate),
        "sqlite_durable_appends_per_s": round(durable_rate, 1),
        "inclusion_proofs_per_s": round(gen_rate),
        "inclusion_verifications_per_s": round(verify_rate),
        "inclusion_proof_hashes_max": max(lens),
        "inclusion_proof_bytes_max": 32 * max(lens),
        "consistency_proof_hashes_max": max(cons),
        "database_bytes": db_bytes,
    }


def to_markdown(result: dict) -> str:
    rows = result["results"]
    head = (
        "| entries | memory appends/s | SQLite bulk appends/s | SQLite durable appends/s | "
        "proofs generated/s | proofs verified/s | inclusion proof (hashes / bytes) | "
        "consistency proof (hashes) | database size |"
    )
    lines = [
        "# Ledger benchmark\n",
        f"{common.meta_line(result['meta'])} Command: `{result['command']}`.\n",
        "Durable appends are one SQLite transaction each (WAL, synchronous=FULL); bulk appends are "
        "20,000 per transaction.\n",
        head,
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r['entries']:,} | {r['memory_appends_per_s']:,} | "
            f"{r['sqlite_bulk_appends_per_s']:,} | {r['sqlite_durable_appends_per_s']:,} | "
            f"{r['inclusion_proofs_per_s']:,} | {r['inclusion_verifications_per_s']:,} | "
            f"{r['inclusion_proof_hashes_max']} / {r['inclusion_proof_bytes_max']} | "
            f"{r['consistency_proof_hashes_max']} | {r['database_bytes'] / 1e6:.1f} MB |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="include the 10^6-entry log")
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="log sizes, comma-separated (--full adds 1000000)",
    )
    parser.add_argument("--out", default="benchmarks/results", help="output directory")
    parser.add_argument("--durable-appends", type=int, default=200)
    parser.add_argument("--proofs", type=int, default=2000)
    args = parser.parse_args(argv)
    try:
        sizes = [int(x) for x in args.sizes.split(",")] + ([10**6] if args.full else [])
    except ValueError:
        parser.error(f"--sizes wants whole numbers separated by commas, not {args.sizes!r}")
    if any(n < 1 for n in sizes):
        parser.error("--sizes must be positive")
    settings = {"sizes": sizes, "durable_appends": args.durable_appends, "proofs": args.proofs}
    meta = common.meta("ledger", settings)  # machine load and date as the run starts
    rng = random.Random(1)
    results = []
    for n in sizes:
        r = bench_size(n, durable_appends=args.durable_appends, proofs=args.proofs, rng=rng)
        print(json.dumps(r), flush=True)
        results.append(r)
    command = " ".join(["python -m benchmarks.ledger", *(sys.argv[1:] if argv is None else argv)])
    result = {"benchmark": "ledger", "meta": meta, "command": command, "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ledger.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ledger.md").write_text(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
