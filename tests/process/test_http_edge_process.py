"""A real `ringkv serve` process stops promptly on SIGTERM, and its HTTP edge holds.

- SIGTERM while a client waits on a write that cannot complete (its replica is frozen,
  its timeout ten minutes): the node answers it 503 ("node is stopping") and exits 0
  well within the test's stop bound, instead of waiting for the handler.
- A request head that is never finished is cut after --http-header-timeout.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable

import httpx
import pytest

from tests.support.procs import HOST, STOP_TIMEOUT, Cluster, NodeProc, wait_until

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]


def _waiting(node: NodeProc) -> float:
    text = node.http.get("/metrics").text
    match = re.search(r"^ringkv_requests_waiting ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def test_sigterm_answers_a_waiting_write_and_exits_promptly(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=2, extra_args=("--n", "2", "--r", "1", "--w", "2",
                                               "--http-header-timeout", "1"))
    n1, n2 = cluster.nodes
    wait_until(lambda: n1.statuses().get("n2") == "up", 30, "n1 to see n2 up")
    n2.pause()  # its ack never comes; the write waits for its ten-minute timeout
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(
        httpx.put(f"{n1.url}/kv/k", content=b"v", params={"timeout": "600000"},
                  timeout=STOP_TIMEOUT * 2)))
    thread.start()
    wait_until(lambda: _waiting(n1) == 1.0, 30, "the write to be waiting on n1")

    # Meanwhile a half-sent request head is cut by the header timeout.
    with socket.create_connection((HOST, n1.http_port), timeout=STOP_TIMEOUT) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 408"), received[:200]

    assert n1.stop() == 0  # within STOP_TIMEOUT, or it raises
    thread.join(STOP_TIMEOUT)
    (resp,) = answers
    assert resp.status_code == 503
    assert "stopping" in resp.json()["error"]
    n2.resume()
