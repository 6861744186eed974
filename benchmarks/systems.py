"""Systems figures: envelope, upload, ledger, audit verification and synthesis speed.

Measured in this run, side by side with what each is compared to:

- **envelope**: HPKE seal + open MB/s against plain AES-256-GCM on the same
  bytes (``benchmarks.envelope.bench_size``);
- **audit verify**: seconds to verify a ``--audit-entries`` (10^5) entry audit
  bundle exported by a real SQLite store (``aggregator.store``): the
  ``ffsecure audit verify`` command when the installed CLI has it, else the
  library's log verifier (``ffsecure.ledger.verify.verify_bundle_log``),
  labelled as such;
- **synthesis**: images per second of ``ffsecure.synthesis.synthesize`` for
  each generator family and size on the CPU (sampling speed does not depend
  on the trained weights, so freshly initialised modules are used).

Taken from the per-part benchmarks' own result files (too expensive to rerun
here; each is labelled with the date, commit and machine of its own run, from
the file's ``meta`` block, or with the commit that last changed a file written
before results carried one):

- **upload**: ``benchmarks/results/grpc_load.json`` (mTLS gRPC upload vs a
  plain loopback socket copy; ``python -m benchmarks.grpc_load``);
- **ledger**: ``benchmarks/results/ledger.json`` (10^3..10^6 entries;
  ``python -m benchmarks.ledger --full``). ``--rerun-ledger`` reruns it up to
  10^5 entries instead.

Writes ``<out>/results/systems.json`` and ``systems.md``.

    python -m benchmarks.systems [--quick] [--audit-entries 100000] [--rerun-ledger]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aggregator.export import write_bundle
from aggregator.home import LogSigner
from aggregator.store import SQLiteStore
from benchmarks import common, envelope, ledger
from ffsecure import pki
from ffsecure.ledger import make_entry
from ffsecure.ledger.verify import verify_bundle_log

PARTS_DIR = common.REPO / "benchmarks" / "results"


def envelope_rows(sizes: list[int], suites: list[str], repeat: int) -> list[dict[str, Any]]:

    return [envelope.bench_size(size, suite, repeat) for suite in suites for size in sizes]


def part_result(name: str) -> dict[str, Any] | None:
    """A per-part result file with the date and commit that last changed it."""
    path = PARTS_DIR / f"{name}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    try:
        log = subprocess.run(
            ["git", "log", "-1", "--format=%H %cI", "--", str(path)],
            cwd=common.REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        changed = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--", str(path)],
                cwd=common.REPO,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        log, changed = [], None
    return {
        "file": f"benchmarks/results/{name}.json",
        "commit": log[0] if log else None,
        "date": log[1] if len(log) > 1 else None,
        "uncommitted": changed,
        "data": data,
    }


def ledger_rows_fresh(sizes: list[int], durable: int, proofs: int) -> list[dict[str, Any]]:

    rng = random.Random(1)
    return [ledger.bench_size(n, durable_appends=durable, proofs=proofs, rng=rng) for n in sizes]


def _cli_has_audit_verify() -> bool:
    try:
        importlib.import_module("ffsecure.commands.audit")
        return True
    except ImportError:
        return False


def audit_verify(entries: int) -> dict[str, Any]:
    """Export an ``entries``-entry bundle from a real store and time its offline verification."""

    origin = "ffsecure.local/bench/log"
    with tempfile.TemporaryDirectory(prefix="ffbench-audit-") as tmp:
        root = Path(tmp)
        ca = pki.init_ca(root / "ca", "bench")
        store = SQLiteStore.open(
            root / "home", origin=origin, kek=os.urandom(32), log_signer=LogSigner.generate(origin)
        )
        t0 = time.perf_counter()
        batch = 20_000
        for start in range(0, entries, batch):
            # key.rotated events: facts the auditor checks without a module store behind them
            store.append_many(
                [
                    make_entry(
                        "key.rotated",
                        "operator:bench",
                        {"key": "tls", "new_key_id": f"{i:064x}"},
                        time="2026-11-22T12:00:00Z",
                    )
                    for i in range(start, min(entries, start + batch))
                ]
            )
            store.checkpoint()
        build_s = time.perf_counter() - t0
        bundle = root / "bundle"
        t0 = time.perf_counter()
        write_bundle(store.snapshot(), bundle, ca_cert_pem=ca.cert_pem, crl_pem=ca.crl_pem())
        export_s = time.perf_counter() - t0
        store.close()
        bundle_bytes = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        row: dict[str, Any] = {
            "entries": entries,
            "build_s": round(build_s, 2),
            "export_s": round(export_s, 2),
            "bundle_bytes": bundle_bytes,
            "checkpoints": len(list((bundle / "checkpoints").iterdir())),
        }
        t0 = time.perf_counter()
        report = verify_bundle_log(bundle)
        row["library_verify_s"] = round(time.perf_counter() - t0, 3)
        assert report.size == entries
        if _cli_has_audit_verify():
            # test-suite module (imports pytest), only when this part runs
            from tests.conftest import cli_env

            t0 = time.perf_counter()
            (root / "log.vkey").write_text((bundle / "log.vkey").read_text())
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ffsecure",
                    "audit",
                    "verify",
                    str(bundle),
                    "--ca",
                    str(root / "ca" / "ca.pem"),
                    "--log-key",
                    str(root / "log.vkey"),
                    "--json",
                ],
                capture_output=True,
                text=True,
                env=cli_env(),
                timeout=1800,
            )
            row["cli_verify_s"] = round(time.perf_counter() - t0, 3)
            row["cli_rc"] = proc.returncode
            row["cli_tail"] = (proc.stdout + proc.stderr)[-400:]
            try:
                out = json.loads(proc.stdout)
                row["cli_result"] = {
                    k: out[k]
                    for k in ("ok", "verdict", "errors", "warnings", "tree_size")
                    if k in out and not isinstance(out[k], (list, dict))
                }
            except (ValueError, TypeError):
                pass
            row["verifier"] = (
                "ffsecure audit verify"
                if proc.returncode == 0
                else "library (CLI failed, see cli_tail)"
            )
        else:
            row["verifier"] = (
                "ffsecure.ledger.verify.verify_bundle_log (ffsecure audit verify not in this build)"
            )
        return row


def synthesis_rows(
    shapes: list[tuple[int, int, int]],
    sizes: list[str],
    n_by_family: dict[str, int],
    device: str = "cpu",
) -> list[dict[str, Any]]:
    # heavy: torch, only when this part runs (results render without it)
    from ffsecure import generators as G
    from ffsecure import synthesis

    rows = []
    k = 10
    for shape in shapes:
        for family in ("cvae", "ddpm"):
            for size in sizes:
                cfg = G.default_config(family, image_shape=shape, num_classes=k, size=size)
                gen = G.build(family, cfg)
                src = synthesis.ModuleSource(
                    module_id="0" * 32,
                    generator=gen,
                    classes=list(range(k)),
                    weights_sha256="0" * 64,
                )
                per_class = max(1, n_by_family[family] // k)
                synthesis.synthesize(
                    [src], num_classes=k, per_class=1, seed=1, device=device
                )  # warm up
                t0 = time.perf_counter()
                syn = synthesis.synthesize(
                    [src], num_classes=k, per_class=per_class, seed=0, device=device
                )
                secs = time.perf_counter() - t0
                n = int(syn.labels.numel())
                rows.append(
                    {
                        "family": family,
                        "size": size,
                        "image_shape": list(shape),
                        "images": n,
                        "seconds": round(secs, 3),
                        "images_per_s": round(n / secs, 1),
                        "device": device,
                        "sample_steps": cfg.get("sample_steps"),
                        "guidance_scale": cfg.get("guidance_scale"),
                    }
                )
    return rows


def run(
    *,
    quick: bool = False,
    audit_entries: int = 100_000,
    rerun_ledger: bool = False,
    out: Path = common.DEFAULT_OUT,
    threads: int = 1,
    progress=print,
) -> dict[str, Any]:
    # heavy: torch, only when this part runs (results render without it)
    import torch

    torch.set_num_threads(threads)
    if quick:
        audit_entries = min(audit_entries, 1000)
    env_sizes, env_suites, env_repeat = (
        ([1], ["x25519"], 1) if quick else ([1, 10, 100], ["x25519", "mlkem768-x25519"], 3)
    )
    settings = {
        "quick": quick,
        "threads": threads,
        "envelope": {"sizes_mb": env_sizes, "suites": env_suites, "repeat": env_repeat},
        "audit_entries": audit_entries,
        "rerun_ledger": rerun_ledger or quick,
    }
    result: dict[str, Any] = {"meta": common.meta("systems", settings, quick=quick)}
    progress("[systems] envelope")
    result["envelope"] = envelope_rows(env_sizes, env_suites, env_repeat)
    progress(f"[systems] audit verify, {audit_entries} entries")
    result["audit"] = audit_verify(audit_entries)
    progress("[systems] synthesis speed")
    sizes = ["tiny"] if quick else ["tiny", "default"]
    shapes = [(1, 16, 16)] if quick else [(1, 16, 16), (1, 28, 28)]
    result["synthesis"] = synthesis_rows(
        shapes, sizes, {"cvae": 50 if quick else 2000, "ddpm": 10 if quick else 200}
    )
    result["synthesis_gpu"] = (
        "not measured (no GPU in this run)" if not torch.cuda.is_available() else None
    )
    if rerun_ledger or quick:
        progress("[systems] ledger (fresh)")
        sizes_l = [1000] if quick else [10**3, 10**4, 10**5]
        result["ledger"] = {
            "source": "this run",
            "rows": ledger_rows_fresh(sizes_l, 20 if quick else 200, 200 if quick else 2000),
        }
    else:
        part = part_result("ledger")
        result["ledger"] = (
            {
                **_provenance(part),
                "command": part["data"].get("command"),
                "rows": part["data"]["results"],
            }
            if part
            else {"source": None, "rows": []}
        )
    grpc = part_result("grpc_load")
    result["upload"] = (
        {
            **_provenance(grpc),
            "concurrent": grpc["data"].get("concurrent"),
            "large": grpc["data"].get("large"),
        }
        if grpc
        else {"source": None}
    )
    common.write_result(out, "systems", result, to_markdown(result))
    return result


def _provenance(part: dict[str, Any]) -> dict[str, Any]:
    """What names the run behind a per-part file: its ``meta`` block, else the commit that last
    changed it."""
    return {
        "source": part["file"],
        "commit": part["commit"],
        "date": part["date"],
        "uncommitted": part["uncommitted"],
        "meta": part["data"].get("meta"),
        "machine": part["data"].get("machine"),
    }


def _source(part: dict[str, Any]) -> str:
    """Where a part's figures come from, as a sentence: this run, or a per-part file and its own
    run."""
    if not part.get("source"):
        return "Figures not available (run its benchmark first)."
    if part["source"] == "this run":
        return "Figures measured in this run."
    if part.get("meta"):
        # the file records its own run: name that run's date, commit and machine, not the commit of
        # the file
        return (
            f"Figures from `{part['source']}`, measured on their own. "
            f"{common.meta_line(part['meta'])}"
        )
    note = ", with uncommitted changes" if part.get("uncommitted") else ""
    return (
        f"Figures from `{part['source']}` (committed {part.get('date')}, commit "
        f"`{(part.get('commit') or '?')[:10]}`{note}; machine {part.get('machine')})."
    )


def to_markdown(result: dict[str, Any]) -> str:
    md = result["meta"]
    lines = [
        "# Systems",
        "",
        common.meta_line(md),
        "",
        "## Envelope: HPKE seal + open vs plain AES-256-GCM",
        "",
        f"Measured in this run, median of {md['settings']['envelope']['repeat']}, same bytes.",
        "",
        common.table(
            [
                "size",
                "suite",
                "HPKE seal+open MB/s",
                "AES-256-GCM enc+dec MB/s",
                "ratio",
                "overhead bytes",
            ],
            [
                [
                    f"{r['size_mb']} MB",
                    r["suite"],
                    f"{r['hpke_mb_s']:.0f}",
                    f"{r['aesgcm_mb_s']:.0f}",
                    f"{r['ratio']:.2f}",
                    r["overhead_bytes"],
                ]
                for r in result["envelope"]
            ],
            "llrrrr",
        ),
        "",
    ]
    up = result["upload"]
    lines += ["## Upload: mTLS gRPC vs plain loopback socket", "", _source(up), ""]
    if up.get("large"):
        lg, cc = up["large"], up.get("concurrent") or {}
        lines += [
            common.table(
                ["path", "MB/s"],
                [
                    [
                        f"mTLS upload end to end ({lg['bytes'] / 1e6:.1f} MB: transfer, staging, "
                        "HPKE open, verify, store, ledger, receipt)",
                        f"{lg['mtls_upload_mb_per_s']:.1f}",
                    ],
                    ["mTLS transfer + staging only", f"{lg['mtls_transfer_only_mb_per_s']:.1f}"],
                    ["plain TCP socket into a file + fsync", f"{lg['socket_file_mb_per_s']:.1f}"],
                    ["plain TCP socket into memory", f"{lg['socket_memory_mb_per_s']:.1f}"],
                ],
                "lr",
            ),
            "",
        ]
        if cc:
            lines += [
                f"Concurrent: {cc.get('completed')} of {cc.get('sites')} sites uploaded one "
                f"{cc.get('module_bytes', 0) / 1e6:.2f} MB module each at once: "
                f"{cc.get('uploads_per_s', 0):.1f} uploads/s, {cc.get('mb_per_s', 0):.1f} MB/s, "
                f"p99 latency {cc.get('latency_p99_s', 0):.2f} s, {cc.get('errors')} errors"
                + (
                    f"; the server peaked at {cc['server_threads_peak']} threads with "
                    f"{cc.get('server_max_workers')} workers"
                    if cc.get("server_threads_peak")
                    else ""
                )
                + ".",
                "",
            ]
    led = result["ledger"]
    lines += ["## Ledger", "", _source(led), ""]
    if led.get("rows"):
        lines += [
            common.table(
                [
                    "entries",
                    "memory appends/s",
                    "SQLite bulk appends/s",
                    "durable appends/s",
                    "proofs generated/s",
                    "proofs verified/s",
                    "inclusion proof bytes",
                    "database",
                ],
                [
                    [
                        f"{r['entries']:,}",
                        f"{r['memory_appends_per_s']:,}",
                        f"{r['sqlite_bulk_appends_per_s']:,}",
                        f"{r['sqlite_durable_appends_per_s']:,}",
                        f"{r['inclusion_proofs_per_s']:,}",
                        f"{r['inclusion_verifications_per_s']:,}",
                        r["inclusion_proof_bytes_max"],
                        common.human_bytes(r["database_bytes"]),
                    ]
                    for r in led["rows"]
                ],
                "rrrrrrrr",
            ),
            "",
        ]
    a = result["audit"]
    lines += [
        "## Audit bundle verification",
        "",
        f"A {a['entries']:,}-entry bundle ({common.human_bytes(a['bundle_bytes'])}, "
        f"{a['checkpoints']} checkpoints) exported from a real SQLite store (build {a['build_s']} "
        f"s, export {a['export_s']} s).",
        "",
        common.table(
            ["verifier", "seconds", "entries/s"],
            [
                [
                    "ffsecure.ledger.verify.verify_bundle_log (log part: every entry, every "
                    "checkpoint signature and root, consistency between checkpoints)",
                    a["library_verify_s"],
                    f"{a['entries'] / a['library_verify_s']:,.0f}",
                ]
            ]
            + (
                [
                    [
                        "`ffsecure audit verify BUNDLE` (whole process)"
                        + ("" if a.get("cli_rc") == 0 else f" — failed, rc {a.get('cli_rc')}"),
                        a["cli_verify_s"],
                        f"{a['entries'] / a['cli_verify_s']:,.0f}",
                    ]
                ]
                if "cli_verify_s" in a
                else []
            ),
            "lrr",
        ),
        "",
        f"Verifier of record: {a['verifier']}.",
        "",
    ]
    lines += [
        "## Synthesis speed on the CPU",
        "",
        "`ffsecure.synthesis.synthesize`, one module covering 10 classes, class-balanced, "
        f"{md['machine']['torch_threads']} torch thread(s).",
        "",
        common.table(
            ["family", "size", "image shape", "images", "seconds", "images/s", "sampling steps"],
            [
                [
                    r["family"],
                    r["size"],
                    "x".join(map(str, r["image_shape"])),
                    r["images"],
                    r["seconds"],
                    f"{r['images_per_s']:,.1f}",
                    r["sample_steps"] or "1 (decoder pass)",
                ]
                for r in result["synthesis"]
            ],
            "lllrrrr",
        ),
        "",
    ]
    if result.get("synthesis_gpu"):
        lines += [f"GPU synthesis: {result['synthesis_gpu']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--audit-entries", type=int, default=100_000)
    p.add_argument("--rerun-ledger", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    a = p.parse_args(argv)
    return run(
        quick=a.quick,
        audit_entries=a.audit_entries,
        rerun_ledger=a.rerun_ledger,
        out=Path(a.out),
        threads=a.threads,
    )


if __name__ == "__main__":
    main()
