"""What a new user gets: clone the committed HEAD into an empty folder and install it from the lock.

Steps, each of which must succeed (exit 1 names the one that did not):

1. ``git clone`` of this repository's HEAD into a new temporary folder (only
   committed files travel: an untracked file the install needs fails here);
2. ``make venv`` there with pip's cache disabled (``PIP_NO_CACHE_DIR=1``), so
   every package comes from the lock's pinned, hashed files;
3. ``scripts/check_lock.py`` in the new venv: installed == locked;
4. ``--version`` of the three programs and one quick command each
   (``site-node init``, ``aggregator init-config``, ``ffsecure pki init``
   then ``ffsecure federation init``), run from outside the clone so that
   nothing resolves through the working directory.

``make check-fresh`` runs it; ``tests/fresh/test_fresh_clone.py`` (marker
``slow``, so ``make test-all``) runs it too. The folder is removed at the
end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], what: str) -> str:
    started = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"check-fresh: {what} failed (exit {done.returncode}): {' '.join(argv)}")
    print(f"ok  {what} ({took:.0f} s)")
    return done.stdout


def check(workdir: Path, *, python: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["PIP_NO_CACHE_DIR"] = "1"
    clone = workdir / "ffsecure"
    _run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
        cwd=workdir,
        env=env,
        what="git clone of HEAD",
    )
    _run(
        ["make", "venv", f"PYTHON={python}"],
        cwd=clone,
        env=env,
        what="make venv (from the lock, no pip cache)",
    )
    bin_dir = clone / ".venv" / "bin"
    _run(
        [str(bin_dir / "python"), "scripts/check_lock.py"],
        cwd=clone,
        env=env,
        what="venv equals the lock",
    )
    outside = workdir / "user"
    outside.mkdir()
    for program in ("ffsecure", "site-node", "aggregator"):
        version = _run(
            [str(bin_dir / program), "--version"], cwd=outside, env=env, what=f"{program} --version"
        )
        print(f"    {version.strip()}")
    _run(
        [
            str(bin_dir / "site-node"),
            "init",
            "--config",
            "site.toml",
            "--site-id",
            "site-a",
            "--federation-id",
            "fresh-check",
        ],
        cwd=outside,
        env=env,
        what="site-node init",
    )
    _run(
        [str(bin_dir / "aggregator"), "init-config", "--config", "aggregator.toml"],
        cwd=outside,
        env=env,
        what="aggregator init-config",
    )
    _run(
        [
            str(bin_dir / "ffsecure"),
            "pki",
            "init",
            "--federation-id",
            "fresh-check",
            "--ca-dir",
            "ca",
        ],
        cwd=outside,
        env=env,
        what="ffsecure pki init",
    )
    _run(
        [
            str(bin_dir / "ffsecure"),
            "federation",
            "init",
            "--config",
            "federation.toml",
            "--ca-dir",
            "ca",
        ],
        cwd=outside,
        env=env,
        what="ffsecure federation init",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--python",
        default=os.environ.get("PYTHON", "python3"),
        help="interpreter to build the venv with [default: $PYTHON or python3]",
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ffsecure-fresh-"))
    started = time.monotonic()
    try:
        check(workdir, python=args.python)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"check-fresh: passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
