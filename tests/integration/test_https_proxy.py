"""A site behind an HTTPS proxy: gRPC tunnels mTLS through ``CONNECT`` (docs/site-operator.md).

A real ``site-node upload`` process runs with ``https_proxy`` pointing at a
small CONNECT proxy on loopback (``tests/connect_proxy.py``) and the
aggregator's endpoint written as ``localhost:PORT`` (a name in its
certificate). The proxy must see the CONNECT to that target and nothing but
TLS records; the upload must end registered, with its receipt verified, so
mutual TLS held end to end through the tunnel.

What grpc (1.85) does, measured here rather than assumed: it reads
``grpc_proxy``, then ``https_proxy``, then ``http_proxy``, and applies them
to every target, loopback included (there is no implicit bypass of
``localhost`` or ``127.0.0.1``); ``no_grpc_proxy`` / ``no_proxy`` are matched
against the target's host exactly as written (``localhost`` bypasses
``localhost:PORT``, while ``127.0.0.1`` or ``127.0.0.0/8`` bypass only a
target written as an IP address).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, cli_env
from tests.connect_proxy import ConnectProxy
from tests.federation_fixture import build_federation
from tests.integration.test_site_node import (
    DIGITS,
    InProcessAggregator,
    free_port,
    setup_site_in_process,
    write_site_config,
)

PROXY_VARS = ("grpc_proxy", "https_proxy", "http_proxy", "no_grpc_proxy", "no_proxy")


def _without_proxies(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.lower() not in PROXY_VARS}


@pytest.fixture
def aggregator(tmp_path):
    fed = build_federation(
        tmp_path / "fed",
        labels=DIGITS,
        sites=("st-john",),
        chunk_bytes=16 * 1024,
        commit_every_bytes=16 * 1024,
    )
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        yield fed, agg
    finally:
        agg.stop()


def test_site_node_uploads_through_an_https_proxy_with_mtls_intact(aggregator, tmp_path):
    fed, agg = aggregator
    port = agg.address.rsplit(":", 1)[1]
    cfg = write_site_config(tmp_path, "st-mary", f"localhost:{port}", [0, 1])
    _, _, record = setup_site_in_process(fed, cfg)
    with ConnectProxy() as proxy:
        env = {**_without_proxies(cli_env()), "https_proxy": proxy.url}
        proc = subprocess.run(
            [sys.executable, "-m", "site_node", "upload", "--config", str(cfg), "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (uploaded,) = json.loads(proc.stdout)["uploaded"]
        assert uploaded["module_id"] == record.module_id
        assert proxy.targets and set(proxy.targets) == {f"localhost:{port}"}
        seen = bytes(proxy.client_bytes)
    state = json.loads(
        (cfg.parent / "state" / "modules" / record.module_id / "module.json").read_text()
    )
    assert state["status"] == "registered" and state["receipt"]["index"] >= 1
    # the proxy relayed a TLS stream: a handshake record first, no gRPC plaintext after it
    assert seen[:2] == b"\x16\x03"
    assert state["upload_id"].encode() not in seen and b"UploadModule" not in seen


@pytest.mark.parametrize(
    "target, no_proxy, proxied",
    [
        ("localhost", "", True),  # loopback is not exempt by default
        ("127.0.0.1", "", True),
        ("localhost", "localhost", False),
        ("localhost", "127.0.0.1", True),  # matched against the name as written, not resolved
        ("127.0.0.1", "127.0.0.0/8", False),
    ],
)
def test_grpc_applies_https_proxy_to_loopback_unless_no_proxy_names_the_host(
    aggregator, monkeypatch, target, no_proxy, proxied
):
    fed, agg = aggregator
    port = agg.address.rsplit(":", 1)[1]
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    with ConnectProxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url)
        if no_proxy:
            monkeypatch.setenv("no_proxy", no_proxy)
        with fed.client("st-john", f"{target}:{port}") as client:
            _, size = client.get_checkpoint()
        assert size >= 1
        assert proxy.targets == ([f"{target}:{port}"] if proxied else [])
