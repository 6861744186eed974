"""Child processes of the demo: each role's CLI as its own process, always stopped.

Every child starts in its own session (process group), so that a Ctrl-C in the
terminal reaches only the demo, which then stops the children itself: SIGTERM
to each group, SIGKILL after a grace period. ``Supervisor.stop_all`` runs from
``finally`` blocks, from ``atexit`` and on SIGTERM of the demo process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ffsecure.errors import FFSecureError


class DemoError(FFSecureError):
    """A step of the demo failed; the message names the command and its log."""

    code = "E_DEMO_STEP"


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    log: Path

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            raise DemoError(
                f"`{' '.join(self.args[2:])}` printed no JSON",
                code="E_DEMO_OUTPUT",
                hint=f"see {self.log}",
            ) from None


def child_env(threads: int = 1) -> dict[str, str]:
    """The demo's environment for children: its own Python path, one math thread
    each, no GUI backend."""
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Supervisor:
    """Starts CLI processes, logs their output under ``log_dir`` and stops every one it started."""

    def __init__(self, log_dir: Path, *, cwd: Path | None = None, grace_s: float = 10.0):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cwd = cwd
        self.grace_s = grace_s
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._counter = 0
        atexit.register(self.stop_all)

    # -- starting
    def _log_path(self, name: str) -> Path:
        with self._lock:
            self._counter += 1
            n = self._counter
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
        return self.log_dir / f"{n:03d}-{safe}.log"

    def popen(
        self, tool: str, args: Sequence[Any], *, name: str, stdout=None
    ) -> tuple[subprocess.Popen, Path]:
        """Start ``python -m tool args`` in its own process group; stderr (and
        stdout unless given) go to a log."""
        return self.spawn([sys.executable, "-m", tool, *map(str, args)], name=name, stdout=stdout)

    def spawn(self, cmd: Sequence[str], *, name: str, stdout=None) -> tuple[subprocess.Popen, Path]:
        """Start ``cmd`` in a new session (its own process group), tracked until it is stopped."""
        log = self._log_path(name)
        cmd = list(cmd)
        with open(log, "wb") as fh:
            fh.write((" ".join(cmd) + "\n").encode())
            fh.flush()
            # The check, the start and the tracking are one step under the lock:
            # otherwise a job thread that passed the check could start a child after
            # stop_all took its list, a child nobody stops (and the demo would wait
            # for it at exit, in the thread pool's join).
            with self._lock:
                if self._stopping:
                    raise DemoError(
                        "the demo is stopping", code="E_DEMO_STOPPED", hint="run it again"
                    )
                proc = subprocess.Popen(
                    cmd,
                    cwd=self.cwd,
                    env=child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=stdout if stdout is not None else fh,
                    stderr=fh,
                    start_new_session=True,
                )
                self._procs.append(proc)
        return proc, log

    def run(
        self,
        tool: str,
        *args: Any,
        name: str | None = None,
        timeout: float = 900.0,
        check: bool = True,
    ) -> Result:
        """Run one command to the end; its stdout is returned, its stderr kept in the log."""
        name = name or f"{tool}-{args[0] if args else ''}"
        t0 = time.perf_counter()
        proc, log = self.popen(tool, args, name=name, stdout=subprocess.PIPE)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise DemoError(
                f"`{tool} {' '.join(map(str, args[:2]))}` ran longer than {timeout:.0f} s",
                code="E_DEMO_TIMEOUT",
                hint=f"see {log}",
            ) from None
        finally:
            with self._lock:
                if proc in self._procs and proc.poll() is not None:
                    self._procs.remove(proc)
        text = out.decode(errors="replace")
        with open(log, "a", encoding="utf-8") as fh:
            fh.write("--- stdout\n" + text)
        res = Result(
            [sys.executable, "-m", tool, *map(str, args)],
            proc.returncode,
            text,
            log.read_text(errors="replace"),
            time.perf_counter() - t0,
            log,
        )
        if check and proc.returncode != 0:
            raise DemoError(
                f"`{tool} {' '.join(map(str, args[:1]))}` exited with status {proc.returncode}: "
                f"{_last_error(res.stderr)}",
                hint=f"the whole output is in {log}",
            )
        return res

    # -- stopping
    def stop(
        self, proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float | None = None
    ) -> int | None:
        """Signal the process group of ``proc``; SIGKILL it when it outlives the grace period."""
        grace = self.grace_s if grace_s is None else grace_s
        if proc.poll() is None:
            _signal_group(proc, sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=30)
        else:  # the leader is gone; its group may not be
            _signal_group(proc, signal.SIGKILL)
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        with self._lock:  # no child starts after this (spawn checks the flag under the lock)
            self._stopping = True
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=30)
        with self._lock:
            self._procs.clear()

    def running(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs if p.poll() is None]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _last_error(stderr: str) -> str:
    """The ``error[...]`` line a CLI printed, else its last non-empty line."""
    lines = [stripped for raw in stderr.splitlines() if (stripped := raw.strip())]
    for i, line in enumerate(lines):
        if line.startswith("error[") or line.startswith('{"error"'):
            return " ".join(lines[i : i + 2])
    return lines[-1] if lines else "(no output)"


def parallel(
    jobs: Sequence[Callable[[], Any]], *, workers: int, on_error: Callable[[], None] | None = None
) -> list[Any]:
    """Run ``jobs`` at most ``workers`` at a time; results in order.

    On the first failure (or Ctrl-C) the jobs not started are cancelled and
    ``on_error`` runs before waiting for the running ones, so that it can stop
    their processes; then the failure is raised.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    futures = [pool.submit(job) for job in jobs]
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        if on_error is not None:
            on_error()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class sigterm_as_interrupt:
    """While active, SIGTERM to the demo raises KeyboardInterrupt so the finally
    blocks stop the children."""

    def __enter__(self):
        self._old = None
        if threading.current_thread() is threading.main_thread():

            def handler(signum, frame):
                raise KeyboardInterrupt(f"signal {signum}")

            self._old = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False
