"""A real ``aggregator serve`` child process on a fixed loopback port, for fault tests.

The port is fixed in ``aggregator.toml`` so that sites reconnect to the same
address after a restart; ``kill()`` sends SIGKILL (no drain, no cleanup),
``start()`` brings it back from the same home.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, cli_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_port(config_path: Path, port: int) -> str:
    text = config_path.read_text()
    text, n = re.subn(r'^listen = ".*"$', f'listen = "127.0.0.1:{port}"', text, count=1, flags=re.M)
    assert n == 1
    config_path.write_text(text)
    return f"127.0.0.1:{port}"


class AggregatorProcess:
    def __init__(self, config_path: Path, log_path: Path, *, preexec=None):
        self.config_path = Path(config_path)
        self.port_file = self.config_path.parent / "serve.port"
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.preexec = preexec

    def start(self, timeout: float = 120.0) -> None:
        self.port_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aggregator",
                    "--log-level",
                    "INFO",
                    "serve",
                    "--config",
                    str(self.config_path),
                ],
                cwd=REPO,
                env=cli_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self.preexec,
            )
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"aggregator serve exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"aggregator serve did not start: {self.log_tail()}")
            time.sleep(0.02)
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> AggregatorProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
