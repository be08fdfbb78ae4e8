"""Liveness and readiness as a user sees them: `GET /health` and `GET /ready`, and
`ringkv dev-cluster` waiting for readiness with a secret it never puts on a command line.

Real `ringkv serve` processes on loopback (`tests/support/procs.py`). `/health` is 200
once a node is up and holds its ranges and 503 while it joins, leaves or has left;
`/ready` is 200 only when the node also sees enough members up for the default R and
W (the larger of the two), so the first write after it never fails for lack of peers.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.procs import HOST, Cluster, NodeProc, wait_until

pytestmark = pytest.mark.slow

MakeCluster = Callable[..., Cluster]


def _ready(node: NodeProc) -> httpx.Response:
    return node.http.get("/ready")


def test_ready_waits_for_enough_members_to_reach_r_and_w(make_cluster: MakeCluster) -> None:
    # R=3, W=2: readiness needs the larger, three members up.
    cluster = make_cluster(size=3, start=False, extra_args=("--n", "3", "--r", "3", "--w", "2"))
    n1, n2, n3 = cluster.nodes
    n1.start()
    n1.wait_healthy()  # live: up and holding its ranges ...
    resp = _ready(n1)  # ... but not ready: alone it reaches neither quorum
    assert resp.status_code == 503, resp.text
    assert (resp.json()["up"], resp.json()["required"]) == (1, 3)
    assert resp.json()["status"] == "not ready"

    n2.start()
    n2.wait_healthy()
    wait_until(lambda: n1.statuses().get("n2") == "up", 30, "n1 to see n2 up")
    resp = _ready(n1)  # W=2 is reachable now, R=3 is not
    assert resp.status_code == 503, resp.text
    assert (resp.json()["up"], resp.json()["required"]) == (2, 3)

    n3.start()
    wait_until(lambda: all(_ready(n).status_code == 200 for n in cluster), 30,
               "every node to be ready")
    doc = _ready(n2).json()
    assert (doc["status"], doc["node_id"], doc["up"], doc["required"]) == ("ready", "n2", 3, 3)
    # Ready means what it says: the first write and read succeed at once.
    assert n3.put("first", b"write").status_code == 204
    got = n1.get("first")
    assert (got.status_code, got.content) == (200, b"write")

    # A member going down takes readiness away again (liveness stays).
    n3.kill()
    wait_until(lambda: _ready(n1).status_code == 503, 15, "n1 to see n3 down")
    assert (_ready(n1).json()["up"], _ready(n1).json()["required"]) == (2, 3)
    assert n1.http.get("/health").status_code == 200


def test_a_node_that_left_is_not_live(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(size=4)
    leaver = cluster["n4"]
    assert leaver.http.get("/health").status_code == 200
    resp = leaver.http.post("/cluster/leave")
    assert resp.status_code == 202, resp.text
    rest = cluster.others(leaver)
    wait_until(lambda: leaver.statuses()["n4"] == "left", 30, "n4 to have left")
    health = leaver.http.get("/health")
    assert health.status_code == 503, health.text
    assert (health.json()["status"], health.json()["node_id"]) == ("left", "n4")
    assert health.json()["reason"]
    ready = _ready(leaver)
    assert (ready.status_code, ready.json()["membership"]) == (503, "left")
    for node in rest:
        assert node.http.get("/health").status_code == 200


# -------------------------------------------------------------------------- dev-cluster


def _free_base(count: int) -> tuple[int, int]:
    """Bases P and Q with P..P+count-1 and Q..Q+count-1 all free right now."""
    for _ in range(200):
        http, rpc = random.randrange(20000, 40000), random.randrange(40000, 60000)
        ports = [*range(http, http + count), *range(rpc, rpc + count)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind((HOST, port))
        except OSError:
            continue
        return http, rpc
    raise AssertionError("no free port ranges")


def _node_pids(data_dir: Path) -> dict[str, int]:
    """Node id -> pid of every `ringkv serve` process whose data dir is under data_dir."""
    pids: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and b"--node-id" in argv and str(data_dir).encode() in b" ".join(argv):
            pids[argv[argv.index(b"--node-id") + 1].decode()] = int(entry)
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dev_cluster_is_ready_when_it_says_so_and_keeps_its_secret_off_argv(
    tmp_path: Path,
) -> None:
    http, rpc = _free_base(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGKV_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringkv", "dev-cluster", "--nodes", "3", "--storage", "memory",
         "--base-http-port", str(http), "--base-rpc-port", str(rpc),
         "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        lines: list[bytes] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if b"press Ctrl-C" in line:
                break
        output = b"".join(lines).decode("utf-8", "replace")
        assert "press Ctrl-C" in output, output
        urls = [f"http://{HOST}:{http + i}" for i in range(3)]
        # The new user's first steps: a write right after the cluster says it is up.
        with httpx.Client(timeout=10, trust_env=False) as client:
            for url in urls:
                assert client.get(url + "/ready").status_code == 200
            for i, url in enumerate(urls):
                resp = client.put(f"{url}/kv/first-{i}", content=b"hello")
                assert resp.status_code == 204, resp.text
        pids = _node_pids(tmp_path.resolve())
        assert sorted(pids) == ["n1", "n2", "n3"], pids
        secrets = set()
        for pid in pids.values():
            environ = dict(item.split(b"=", 1) for item in
                           Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
            secret = environ[b"RINGKV_CLUSTER_SECRET"]
            assert len(secret) >= 32
            assert secret not in Path(f"/proc/{pid}/cmdline").read_bytes()
            secrets.add(secret)
        assert len(secrets) == 1  # one secret for the whole cluster
        assert secret.decode() not in output
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
