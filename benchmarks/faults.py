"""Fault runs: SIGKILL during uploads and during store writes, disk full, clock skew.

Runs the fault scenarios of ``tests/faults/`` at their full sizes and records
what happened, so that the figures behind "nothing acknowledged is lost" are
kept with the machine, the date and the commit:

- ``upload_kill``: a real ``aggregator serve`` (mTLS, HPKE, SQLite, Merkle
  log) receiving one module from each of ``--uploads`` concurrent sites while
  it is SIGKILLed ``--kills`` times at random moments and restarted; the
  sites retry and resume. Checked offline afterwards: every acknowledged
  module is in the store once, decrypts to the weights its manifest hashes,
  its receipt's checkpoint is a prefix of the final log; nothing else is
  there; the exported bundle verifies.
- ``store_kill``: a writer process registering modules, appending entries and
  deleting modules is SIGKILLed at random moments until ``--entries`` entries
  are written; after each kill the store and ledger must agree and verify.
- ``cases``: the outcomes of the disk-full and clock-skew tests (pytest, each
  case with its outcome), run in this same process tree.

Writes ``<out>/results/faults.json`` and ``faults.md``.

    python -m benchmarks.faults [--uploads 100 --kills 10 --entries 1000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from benchmarks import common

CASE_FILES = ("tests/faults/test_disk_full.py", "tests/faults/test_clock_skew.py")


def upload_kill(uploads: int, kills: int, seed: int) -> dict[str, Any]:
    # test-suite module (imports pytest), only when this part runs
    from tests.faults.test_upload_kill import _kill_run

    with tempfile.TemporaryDirectory(prefix="ffbench-faults-") as tmp:
        t0 = time.perf_counter()
        r = _kill_run(
            Path(tmp), n_uploads=uploads, kills=kills, seed=seed, deadline_s=max(540, 6 * uploads)
        )
        wall = time.perf_counter() - t0
    return {
        "uploads": uploads,
        "kills": len(r["kills"]),
        "kill_log": r["kills"],
        "acknowledged": r["acknowledged"],
        "lost": r["lost"],
        "retried_sites": r["retried_sites"],
        "wall_s": round(wall, 1),
        "seed": seed,
    }


def store_kill(entries: int, seed: int) -> dict[str, Any]:
    # test-suite module (imports pytest), only when this part runs
    from tests.faults.test_store_kill import _kill_loop

    with tempfile.TemporaryDirectory(prefix="ffbench-faults-") as tmp:
        t0 = time.perf_counter()
        r = _kill_loop(Path(tmp), kills=None, target=entries, seed=seed)
        wall = time.perf_counter() - t0
    return {**r, "target_entries": entries, "lost": 0, "wall_s": round(wall, 1), "seed": seed}


def cases() -> list[dict[str, Any]]:
    """Each disk-full and clock-skew test case (slow ones included) and its outcome."""
    with tempfile.TemporaryDirectory(prefix="ffbench-faults-") as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-m",
                "",
                "-p",
                "no:cacheprovider",
                f"--junitxml={xml}",
                *CASE_FILES,
            ],
            cwd=common.REPO,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        root = ET.parse(xml).getroot()
    out = []
    for tc in root.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                break
        out.append(
            {
                "file": tc.get("classname", "").rsplit(".", 1)[-1],
                "case": tc.get("name"),
                "outcome": outcome,
                "seconds": round(float(tc.get("time") or 0), 2),
            }
        )
    return out


def to_markdown(result: dict[str, Any]) -> str:
    md = result["meta"]
    u, s = result["upload_kill"], result["store_kill"]
    lines = ["# Fault runs", "", common.meta_line(md), ""]
    lines += [
        "SIGKILL of a real `aggregator serve` during concurrent uploads (sites retry and resume; "
        "checked offline afterwards: every acknowledged module present once and verifiable, "
        "nothing else, the bundle verifies):",
        "",
        common.table(
            ["concurrent uploads", "kills", "acknowledged", "lost", "sites that retried", "wall s"],
            [
                [
                    u["uploads"],
                    u["kills"],
                    u["acknowledged"],
                    u["lost"],
                    u["retried_sites"],
                    common.f1(u["wall_s"]),
                ]
            ],
            "rrrrrr",
        ),
        "",
        "Kill moments (seconds from the start, uploads acknowledged before, uploads in flight): "
        + "; ".join(
            f"{k['at_s']} s ({k['acked_before']} acked, {k['in_flight']} in flight)"
            for k in u["kill_log"]
        )
        + ".",
        "",
    ]
    lines += [
        "SIGKILL of a store writer (register, append, delete) until the log holds the target; "
        "after every kill the store and ledger agree (`verify_integrity`) and an exported bundle "
        "verifies:",
        "",
        common.table(
            ["target entries", "kills", "restarts checked", "entries at the end", "lost", "wall s"],
            [
                [
                    s["target_entries"],
                    s["kills"],
                    s["restarts_checked"],
                    s["entries"],
                    s["lost"],
                    common.f1(s["wall_s"]),
                ]
            ],
            "rrrrrr",
        ),
        "",
    ]
    lines += [
        "Disk full and clock skew (tests/faults, slow cases included):",
        "",
        common.table(
            ["file", "case", "outcome", "s"],
            [
                [c["file"], f"`{c['case']}`", c["outcome"], common.f1(c["seconds"])]
                for c in result["cases"]
            ],
            "lllr",
        ),
        "",
    ]
    return "\n".join(lines)


def run(
    *,
    uploads: int = 100,
    kills: int = 10,
    entries: int = 1000,
    seed: int = 20261202,
    out: Path = common.DEFAULT_OUT,
) -> dict[str, Any]:
    md = common.meta(
        "faults", {"uploads": uploads, "kills": kills, "entries": entries, "seed": seed}
    )
    result = {
        "meta": md,
        "upload_kill": upload_kill(uploads, kills, seed),
        "store_kill": store_kill(entries, seed),
        "cases": cases(),
    }
    common.write_result(out, "faults", result, to_markdown(result))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uploads", type=int, default=100)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--entries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=20261202)
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    a = p.parse_args(argv)
    r = run(uploads=a.uploads, kills=a.kills, entries=a.entries, seed=a.seed, out=Path(a.out))
    print(to_markdown(r))
    return r


if __name__ == "__main__":
    main()
