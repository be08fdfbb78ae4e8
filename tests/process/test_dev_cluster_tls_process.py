"""`ringkv dev-cluster --tls` as a user runs it: real node processes on loopback that
speak HTTPS to clients (verified against the CA dev-cluster made and printed) and
mutual TLS to each other, refuse plaintext on the client port, and, with
`--tokens-file`, refuse requests without a token of the file."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ringkv.client import AuthError, Client, TransportError

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
WRITE_TOKEN = "3f9c0d6e8a1b4c2d9e7f6a5b4c3d2e1f"
READ_TOKEN = "a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1"


def _free_base(count: int) -> tuple[int, int]:
    """Bases P and Q with P..P+count-1 and Q..Q+count-1 all free right now."""
    for _ in range(200):
        http, rpc = random.randrange(20000, 40000), random.randrange(40000, 60000)
        try:
            for port in [*range(http, http + count), *range(rpc, rpc + count)]:
                with socket.socket() as sock:
                    sock.bind((HOST, port))
        except OSError:
            continue
        return http, rpc
    raise AssertionError("no free port ranges")


@contextmanager
def dev_cluster(data_dir: Path, http: int, rpc: int, *extra: str) -> Iterator[str]:
    """Run `ringkv dev-cluster --tls --nodes 3 ...` until it says it is up; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringkv", "dev-cluster", "--tls", "--nodes", "3",
         "--storage", "memory", "--base-http-port", str(http), "--base-rpc-port", str(rpc),
         "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        lines: list[bytes] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if b"press Ctrl-C" in line:
                break
        output = b"".join(lines).decode("utf-8", "replace")
        assert "press Ctrl-C" in output, output
        yield output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _plaintext_fails(port: int) -> None:
    """A plain HTTP request to an HTTPS client port gets no HTTP answer."""
    with httpx.Client(timeout=5, trust_env=False) as plain, pytest.raises(httpx.HTTPError):
        plain.get(f"http://{HOST}:{port}/health")


def test_dev_cluster_tls_serves_https_verified_by_its_ca(tmp_path: Path) -> None:
    http, rpc = _free_base(3)
    with dev_cluster(tmp_path, http, rpc) as output:
        ca = (tmp_path / "tls" / "ca.crt").resolve()
        assert f"CA: {ca}" in output
        urls = [f"https://{HOST}:{http + i}" for i in range(3)]
        for url in urls:
            assert url in output
        assert not re.search(r"http://127\.0\.0\.1:\d+", output), output
        # write through one node, read through another, over HTTPS verified by the CA
        with Client(urls[0], ca=ca) as kv:
            kv.put("greeting", b"hello over tls")
        with Client(urls=urls[1:], ca=ca) as kv:
            assert kv.get("greeting", r=3).values == [b"hello over tls"]
            members = kv.cluster()["members"]
            assert sorted(m["status"] for m in members) == ["up"] * 3
        # without the CA the client refuses the node, naming it
        with Client(urls[2]) as kv, pytest.raises(TransportError, match=re.escape(urls[2])):
            kv.get("greeting")
        for i in range(3):
            _plaintext_fails(http + i)


def test_dev_cluster_tls_with_tokens_needs_a_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{WRITE_TOKEN} write\n{READ_TOKEN} read\n")
    http, rpc = _free_base(3)
    data = tmp_path / "data"
    with dev_cluster(data, http, rpc, "--tokens-file", str(tokens)) as output:
        ca = (data / "tls" / "ca.crt").resolve()
        assert WRITE_TOKEN not in output and READ_TOKEN not in output
        url = f"https://{HOST}:{http + 1}"
        with Client(url, ca=ca, token=WRITE_TOKEN) as kv:
            kv.put("k", b"v")
        with Client(url, ca=ca, token=READ_TOKEN) as kv:
            assert kv.get("k").value == b"v"
            with pytest.raises(AuthError) as refused:
                kv.put("k", b"not allowed")
            assert refused.value.status == 403
        with Client(url, ca=ca) as kv, pytest.raises(AuthError) as info:
            kv.get("k")
        assert info.value.status == 401
        _plaintext_fails(http)
