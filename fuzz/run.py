"""Run a fuzz target: under atheris (coverage-guided) when installed, else a pure-Python mutator.

    python -m fuzz.run --target package --runs 100000            # atheris if present
    python -m fuzz.run --target package --runs 20000 --engine python --seed 7
    python -m fuzz.run --list

Exit status 0: every input was accepted or refused with a typed error.
Exit status 1: a crash; the input is written to ``fuzz/crashes/<target>-<sha256>.bin``
(``--crash-dir``) and can be replayed with ``--replay FILE``.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import random
import struct
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

from fuzz.targets import TARGETS, run_one, seeds

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF, 1 << 31, 1 << 40, (1 << 64) - 1]


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """One to four random edits: bit flips, byte sets, inserts, deletes, truncation, splices,
    length fields overwritten with boundary values, JSON-ish token swaps."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        n = len(out)
        op = rng.randrange(9)
        i = rng.randrange(n) if n else 0
        # bias towards the start, where the headers and length fields live
        if n and rng.random() < 0.5:
            i = rng.randrange(min(n, 512))
        if op == 0 and n:
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            out[i] = rng.randrange(256)
        elif op == 2:
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and n:
            del out[i : i + rng.randint(1, 64)]
        elif op == 4:
            del out[i:]
        elif op == 5 and corpus:
            other = rng.choice(corpus)
            j = rng.randrange(len(other)) if other else 0
            out[i:] = other[j : j + rng.randint(1, 4096)]
        elif op == 6 and n >= 8:
            v = rng.choice(INTERESTING)
            width, fmt = rng.choice([(2, ">H"), (4, ">I"), (8, ">Q"), (8, "<Q"), (4, "<I")])
            if i + width <= n:
                out[i : i + width] = struct.pack(fmt, v % (1 << (8 * width)))
        elif op == 7:
            token = rng.choice(
                [
                    b"{",
                    b"}",
                    b"[",
                    b"]",
                    b'"',
                    b",",
                    b":",
                    b"\\",
                    b"null",
                    b"1e999",
                    b"-0",
                    b"99999999999999999999999",
                    b'"__proto__"',
                    b"\xff",
                    b"\x00",
                    b" ",
                ]
            )
            out[i:i] = token
        elif op == 8 and n:
            out[i:i] = out[i : i + rng.randint(1, 256)] * rng.randint(
                1, 8
            )  # repetition (nesting, lengths)
    return bytes(out[: 8 << 20])


def python_driver(target: str, runs: int, seed: int, crash_dir: Path, quiet: bool = False) -> dict:
    rng = random.Random(seed)
    corpus = list(seeds(target))
    for s in corpus:  # the seeds themselves must be accepted, not merely refused
        TARGETS[target](s)
    stats = {"target": target, "engine": "python", "runs": 0, "crashes": 0, "seconds": 0.0}
    t0 = time.perf_counter()
    for k in range(runs):
        data = mutate(rng.choice(corpus), rng, corpus)
        try:
            run_one(target, data)
        except Exception:  # noqa: BLE001 - this is what a fuzzer looks for
            stats["crashes"] += 1
            path = save_crash(crash_dir, target, data)
            if not quiet:
                traceback.print_exc()
                print(f"crash saved to {path}", file=sys.stderr)
            break
        stats["runs"] = k + 1
        if rng.random() < 0.01 and len(corpus) < 64:
            corpus.append(data)  # keep some variety (no coverage feedback in this driver)
    stats["seconds"] = time.perf_counter() - t0
    return stats


def save_crash(crash_dir: Path, target: str, data: bytes) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"{target}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def atheris_driver(target: str, runs: int, extra: list[str], crash_dir: Path) -> None:

    # optional: atheris, only with the atheris engine
    import atheris

    corpus = seeds(target)
    run_one(target, corpus[0])  # import everything the target touches, then instrument our own code
    instrumented = instrument_project(atheris)
    print(f"instrumented {instrumented} functions of ffsecure/aggregator", file=sys.stderr)
    seed_dir = Path(tempfile.mkdtemp(prefix=f"ffsecure-fuzz-{target}-"))
    for k, s in enumerate(corpus):
        (seed_dir / f"seed-{k}").write_bytes(s)

    def one(data: bytes) -> None:
        run_one(target, data)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.3:
            return atheris.Mutate(data, max_size)
        return mutate(data or rng.choice(corpus), rng, corpus)[:max_size]

    crash_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-runs={runs}",
        "-max_len=4194304",
        f"-artifact_prefix={crash_dir}/{target}-",
        *extra,
        str(seed_dir),
    ]
    atheris.Setup(argv, one, custom_mutator=custom_mutator)
    atheris.Fuzz()


def instrument_project(atheris, prefixes: tuple[str, ...] = ("ffsecure", "aggregator")) -> int:
    """Add coverage instrumentation to the functions of our own packages (not torch & co.)."""

    count, seen = 0, set()

    def visit(obj) -> None:
        nonlocal count
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            if (obj.__module__ or "").startswith(prefixes):
                try:
                    atheris.instrument_func(obj)
                    count += 1
                except Exception:  # noqa: BLE001 - some code objects cannot be patched; skip them
                    pass
        elif inspect.isclass(obj) and (obj.__module__ or "").startswith(prefixes):
            for value in vars(obj).values():
                visit(getattr(value, "__func__", value))

    for name, module in list(sys.modules.items()):
        if name.startswith(prefixes) and module is not None and not name.endswith("_pb2"):
            for value in list(vars(module).values()):
                visit(value)
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz ffsecure's parsers.")
    ap.add_argument("--target", choices=sorted(TARGETS))
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--engine", choices=["auto", "atheris", "python"], default="auto")
    ap.add_argument("--seed", type=int, default=0, help="seed of the python driver")
    ap.add_argument("--crash-dir", type=Path, default=Path(__file__).resolve().parent / "crashes")
    ap.add_argument("--replay", type=Path, help="run one saved input and show the outcome")
    ap.add_argument("--list", action="store_true", help="list the targets")
    args, extra = ap.parse_known_args(argv)
    if args.list:
        print("\n".join(sorted(TARGETS)))
        return 0
    if not args.target:
        ap.error("--target is required")
    if args.replay:
        run_one(args.target, args.replay.read_bytes())
        print("no crash")
        return 0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "python"
    if engine == "atheris":
        atheris_driver(args.target, args.runs, extra, args.crash_dir)
        return 0
    stats = python_driver(args.target, args.runs, args.seed, args.crash_dir)
    print(
        f"{stats['target']}: {stats['runs']} runs, {stats['crashes']} crashes, "
        f"{stats['seconds']:.1f} s (python driver, seed {args.seed})"
    )
    return 1 if stats["crashes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
