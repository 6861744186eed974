"""A tiny threaded HTTP CONNECT proxy on loopback, for tests of clients behind a proxy.

It answers ``CONNECT host:port`` with ``200``, then relays bytes both ways
without looking at them; it records every CONNECT target and keeps the bytes
the client sent through the tunnel, so a test can check what a proxy (or
anyone on the path) sees. Any other request gets ``405``. Not a general
proxy: no authentication, no keep-alive, no plain HTTP forwarding.
"""

from __future__ import annotations

import select
import socket
import threading


class ConnectProxy:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets: list[str] = []
        self.client_bytes = bytearray()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="connect-proxy").start()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def __enter__(self) -> ConnectProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _read_head(self, conn: socket.socket) -> tuple[str, bytes] | None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(4096)
            if not data or len(buf) > 16384:
                return None
            buf += data
        head, rest = buf.split(b"\r\n\r\n", 1)
        return head.split(b"\r\n")[0].decode("latin-1"), rest

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            got = self._read_head(conn)
            if got is None:
                return
            line, rest = got
            parts = line.split(" ")
            if len(parts) != 3 or parts[0] != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                return
            with self._lock:
                self.targets.append(parts[1])
            host, _, port = parts[1].rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), timeout=30) as up:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    self._note(rest)
                    up.sendall(rest)
                self._relay(conn, up)

    def _note(self, data: bytes) -> None:
        with self._lock:
            self.client_bytes += data

    def _relay(self, conn: socket.socket, up: socket.socket) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([conn, up], [], [], 1.0)
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                if sock is conn:
                    self._note(data)
                    up.sendall(data)
                else:
                    conn.sendall(data)
