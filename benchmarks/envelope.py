"""Envelope benchmark: HPKE seal + open throughput against plain AES-256-GCM.

For packages of 1, 10 and 100 MB (random bytes) it measures, in one run and on
the same bytes:

- ``ffsecure.envelope.seal`` followed by ``open_sealed`` (HPKE base mode,
  X25519 or ML-KEM-768+X25519, HKDF-SHA256, AES-256-GCM), and
- plain ``AESGCM`` encrypt + decrypt with a fixed 256-bit key (the floor:
  what the bulk cipher alone costs),

and reports MB/s for both and their ratio (HPKE throughput / AES-GCM
throughput; 1.0 means the envelope adds nothing over the cipher). Each figure
is the median of ``--repeat`` runs.

Writes ``<out>/envelope.json`` and ``<out>/envelope.md``.

    python -m benchmarks.envelope [--sizes 1,10,100] [--repeat 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ffsecure import envelope

MB = 1_000_000


def _median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_size(size_mb: int, suite: str, repeat: int) -> dict:
    data = os.urandom(size_mb * MB)
    private, public = envelope.generate_keypair(suite)
    kid = envelope.key_id(public)

    def hpke_round_trip():
        sealed = envelope.seal(data, public, federation_id="bench", key_id=kid, suite=suite)
        assert len(envelope.open_sealed(sealed, private, federation_id="bench", key_id=kid)) == len(
            data
        )

    aes = AESGCM(AESGCM.generate_key(bit_length=256))

    def aes_round_trip():
        nonce = os.urandom(12)
        assert len(aes.decrypt(nonce, aes.encrypt(nonce, data, None), None)) == len(data)

    hpke_round_trip(), aes_round_trip()  # warm up
    t_hpke = _median_seconds(hpke_round_trip, repeat)
    t_aes = _median_seconds(aes_round_trip, repeat)
    sealed = envelope.seal(data, public, federation_id="bench", key_id=kid, suite=suite)
    return {
        "size_mb": size_mb,
        "suite": suite,
        "hpke_seal_open_s": t_hpke,
        "aesgcm_enc_dec_s": t_aes,
        "hpke_mb_s": size_mb / t_hpke,
        "aesgcm_mb_s": size_mb / t_aes,
        "ratio": t_aes / t_hpke,
        "overhead_bytes": len(sealed) - len(data),
    }


def to_markdown(result: dict) -> str:
    lines = [
        "# Envelope throughput (seal + open vs plain AES-256-GCM)",
        "",
        f"Machine: {result['machine']}; median of {result['repeat']} runs; same bytes, same run.",
        "",
        "| size | suite | HPKE seal+open MB/s | AES-256-GCM enc+dec MB/s | ratio | envelope "
        "overhead |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['size_mb']} MB | {r['suite']} | {r['hpke_mb_s']:.0f} | "
            f"{r['aesgcm_mb_s']:.0f} | {r['ratio']:.2f} | {r['overhead_bytes']} B |"
        )
    lines += [
        "",
        "ratio = HPKE throughput / AES-GCM throughput (1.00 = no cost beyond the cipher).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100", help="package sizes in MB")
    parser.add_argument("--suites", default="x25519,mlkem768-x25519")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results", help="output directory")
    args = parser.parse_args(argv)
    rows = []
    for suite in args.suites.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            row = bench_size(size, suite, args.repeat)
            print(json.dumps(row), flush=True)
            rows.append(row)
    result = {
        "benchmark": "envelope",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "repeat": args.repeat,
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "envelope.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "envelope.md").write_text(to_markdown(result))
    return result


if __name__ == "__main__":
    main()
