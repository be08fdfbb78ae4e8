"""Multi-process tests against one shared 4-node cluster (contract section 3, 1, 2, 6).

Every test here leaves the cluster as it found it (all nodes up, no process signalled)
and uses keys of its own, so they share one module-scoped cluster of real `ringkv
serve` processes on loopback with LMDB storage and group commit (`tests/support/procs.py`).
Destructive scenarios live in `test_cluster_faults.py`.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ringkv.client import Client
from tests.support.procs import Cluster, NodeProc, key_path, run_cli, wait_until

pytestmark = pytest.mark.slow

CLUSTER_SIZE = 4


@pytest.fixture(scope="module")
def cluster(make_module_cluster) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    c = make_module_cluster(size=CLUSTER_SIZE)
    yield c


@pytest.fixture
def healthy(cluster: Cluster) -> Cluster:
    """The shared cluster, checked to be whole before each test."""
    for node in cluster:
        assert node.alive, f"{node.node_id} died:\n{node.tail()}"
    cluster.wait_all_up(timeout=15)
    return cluster


def parse_multipart(resp: httpx.Response) -> list[tuple[bytes, str]]:
    """(body, content type) of each part of a multipart/mixed answer (stdlib parser)."""
    ctype = resp.headers["Content-Type"]
    assert ctype.startswith("multipart/mixed"), ctype
    msg = email.message_from_bytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + resp.content,
        policy=email.policy.HTTP,
    )
    assert msg.is_multipart()
    parts = []
    for part in msg.iter_parts():  # type: ignore[attr-defined]
        payload = part.get_payload(decode=True)
        parts.append((payload, part["Content-Type"]))
    return parts


def json_siblings(resp: httpx.Response) -> tuple[list[tuple[bytes, str]], str]:
    doc = resp.json()
    sibs = [(base64.b64decode(s["value"]), s["content_type"]) for s in doc["siblings"]]
    return sibs, doc["context"]


def assert_json_error(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    doc = resp.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc
    return doc


# ------------------------------------------------------- guarantees 1 and 2: any node


def test_any_node_coordinates_read_your_write(healthy: Cluster) -> None:
    n1 = healthy["n1"]
    for i in range(5):
        key = f"ryw-{i}"
        value = f"value {i} \u00e9".encode()
        resp = n1.put(key, value, content_type="text/plain; charset=utf-8")
        assert resp.status_code == 204, resp.text
        assert resp.headers.get("X-Context")
        for node in healthy.others(n1):
            got = node.get(key)
            assert got.status_code == 200, (node.node_id, got.status_code, got.text)
            assert got.content == value
            assert got.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert got.headers.get("X-Context")
        # Without a Content-Type the default is stored.
        assert n1.put(key + "-raw", b"\x00\x01").status_code == 204
        got = healthy["n2"].get(key + "-raw")
        assert (got.status_code, got.content) == (200, b"\x00\x01")
        assert got.headers["Content-Type"] == "application/octet-stream"

    for key in ("ryw-0", "lookup key", "\u00fc/\u00f1", b"\xff\x00 +%"):
        lists = {node.node_id: node.lookup(key) for node in healthy}
        first = lists["n1"]
        assert len(first) == 3 and len(set(first)) == 3, first
        assert set(first) <= set(healthy.ids)
        assert all(pl == first for pl in lists.values()), lists


def test_preference_list_is_where_the_data_lives(healthy: Cluster) -> None:
    """GET /ring/lookup names exactly the nodes that store the key (no failures, so no
    fallbacks), for text keys and for keys that are not UTF-8."""
    n1 = healthy["n1"]
    keys: list[bytes] = [b"placement-%d" % i for i in range(6)]
    keys += [b"\xff-placement", b"\xfe\xff", b"placement a+b", b"placement a b",
             b"\x00-placement"]
    for key in keys:
        assert n1.put(key, b"placed").status_code == 204, key
    for key in keys:
        pref = set(healthy["n2"].lookup(key))

        def holders(key: bytes = key) -> set[str]:
            return {n.node_id for n in healthy if n.local_values(key) == [b"placed"]}

        wait_until(lambda key=key, pref=pref: holders(key) == pref, 10,  # type: ignore[misc]
                   f"exactly the preference list {sorted(pref)} to hold {key!r}")


def forwarded(cluster: Cluster) -> float:
    return sum(node.metrics().get("ringkv_forwarded_writes_total", 0.0) for node in cluster)


def test_a_client_routing_by_the_ring_sends_writes_to_a_replica(healthy: Cluster) -> None:
    """GET /ring gives the placement /ring/lookup gives; a client routing by it sends
    each write to a replica (none is forwarded), where one sent to a single node has
    its writes of keys that node does not hold forwarded."""
    n1 = healthy["n1"]
    resp = n1.http.get("/ring")
    assert resp.status_code == 200
    tag = resp.headers["ETag"]
    assert n1.http.get("/ring", headers={"If-None-Match": tag}).status_code == 304
    keys = [f"routed-{i}" for i in range(40)]
    with Client(urls=[node.url for node in healthy], route_by_ring=True) as kv:
        assert kv.get("routed-warmup").found is False  # the map is fetched here
        router = kv.router
        assert router is not None and router.ring is not None
        for key in keys[:8]:
            assert router.ring.replicas(key.encode()) == n1.lookup(key)
        before = forwarded(healthy)
        for key in keys:
            kv.put(key, b"routed")
        assert forwarded(healthy) == before
    outside = [key for key in keys if "n1" not in n1.lookup(key)]
    assert outside, "with 4 nodes and N=3, about a quarter of keys are not on n1"
    with Client(n1.url) as kv:
        for key in outside:
            kv.put(key, b"forwarded")
    assert forwarded(healthy) == before + len(outside)


def test_blind_writes_become_siblings_and_context_replaces_them(healthy: Cluster) -> None:
    n1, n2, n3, n4 = healthy.nodes
    key = "siblings-blind"
    assert n1.put(key, b"from n1", content_type="text/plain").status_code == 204
    assert n2.put(key, b'{"from": "n2"}', content_type="application/json").status_code == 204

    resp = n3.get(key)
    assert resp.status_code == 300, resp.text
    ctx = resp.headers["X-Context"]
    assert sorted(parse_multipart(resp)) == sorted(
        [(b"from n1", "text/plain"), (b'{"from": "n2"}', "application/json")])

    resp = n4.get(key, headers={"Accept": "application/json"})
    assert resp.status_code == 300
    assert resp.headers["Content-Type"].startswith("application/json")
    sibs, json_ctx = json_siblings(resp)
    assert sorted(sibs) == sorted(
        [(b"from n1", "text/plain"), (b'{"from": "n2"}', "application/json")])
    assert json_ctx == resp.headers["X-Context"]

    # A write with the 300's context replaces every sibling.
    resp = n4.put(key, b"resolved", context=ctx, content_type="text/plain")
    assert resp.status_code == 204, resp.text
    for node in healthy:
        got = node.get(key, params={"r": "3"})
        assert got.status_code == 200, (node.node_id, got.status_code, got.text)
        assert got.content == b"resolved"
        assert got.headers["Content-Type"] == "text/plain"


def test_own_context_replaces_only_own_version(healthy: Cluster) -> None:
    n1, n2, n3, _ = healthy.nodes
    key = "siblings-own-context"
    a = n1.put(key, b"A1")
    assert a.status_code == 204
    ctx_a = a.headers["X-Context"]
    assert n2.put(key, b"B1").status_code == 204  # concurrent: B never saw A1
    # A writes again with the context of its own write: it supersedes A1 only.
    assert n1.put(key, b"A2", context=ctx_a).status_code == 204
    resp = n3.get(key, params={"r": "3"}, headers={"Accept": "application/json"})
    assert resp.status_code == 300, resp.text
    sibs, _ = json_siblings(resp)
    assert sorted(v for v, _ in sibs) == [b"A2", b"B1"]

    # Two writers with the same (now stale) context: each supersedes what it read,
    # neither supersedes the other.
    key = "siblings-stale-context"
    assert n1.put(key, b"v1").status_code == 204
    ctx = n2.get(key).headers["X-Context"]
    assert n2.put(key, b"v2", context=ctx).status_code == 204
    assert n3.put(key, b"v3", context=ctx).status_code == 204
    resp = n1.get(key, params={"r": "3"}, headers={"Accept": "application/json"})
    assert resp.status_code == 300, resp.text
    sibs, ctx = json_siblings(resp)
    assert sorted(v for v, _ in sibs) == [b"v2", b"v3"]
    assert n1.put(key, b"merged", context=ctx).status_code == 204
    got = n2.get(key, params={"r": "3"})
    assert (got.status_code, got.content) == (200, b"merged")


def test_delete_is_a_version(healthy: Cluster) -> None:
    n1, n2, n3, n4 = healthy.nodes
    key = "delete-me"
    put = n1.put(key, b"v1")
    assert put.status_code == 204
    assert n2.delete(key, context=put.headers["X-Context"]).status_code == 204
    gone = n3.get(key)
    assert gone.status_code == 404, gone.text
    tomb_ctx = gone.headers.get("X-Context")
    assert tomb_ctx, "a 404 after a delete must carry the context of the deletion"
    assert n4.put(key, b"v2", context=tomb_ctx).status_code == 204
    for node in healthy:
        got = node.get(key, params={"r": "3"})
        assert (got.status_code, got.content) == (200, b"v2"), (node.node_id, got.text)

    # A delete without a context supersedes nothing.
    key = "delete-blind"
    assert n1.put(key, b"kept").status_code == 204
    assert n2.delete(key).status_code == 204
    got = n3.get(key, params={"r": "3"})
    assert (got.status_code, got.content) == (200, b"kept")

    # A write the deleter did not see survives the delete.
    key = "delete-concurrent"
    first = n1.put(key, b"seen by the deleter")
    assert first.status_code == 204
    assert n2.put(key, b"concurrent write").status_code == 204
    assert n3.delete(key, context=first.headers["X-Context"]).status_code == 204
    for node in healthy:
        got = node.get(key, params={"r": "3"})
        assert (got.status_code, got.content) == (200, b"concurrent write"), got.text


# ---------------------------------------------------------------- guarantee 6: bad input


def test_bad_http_input_is_refused_and_changes_nothing(healthy: Cluster) -> None:
    n1, n2, _, _ = healthy.nodes
    key = "bad-input"
    base = n1.put(key, b"original", content_type="text/plain")
    assert base.status_code == 204
    good_ctx = base.headers["X-Context"]
    before = n2.get(key, params={"r": "3"})
    assert before.status_code == 200

    assert_json_error(n1.put("k" * 1025, b"v"), 414)
    assert_json_error(n1.put(b"\xff" * 4000, b"v"), 414)  # 12 000 characters encoded
    assert_json_error(n1.get("k" * 1025), 414)
    assert n1.put("k" * 1024, b"v").status_code == 204  # the limit itself is fine

    too_big = b"x" * ((1 << 20) + 1)
    assert_json_error(n1.put(key, too_big), 413)
    largest = bytes(range(256)) * 4096  # exactly max_value_bytes (1 MiB) is accepted
    assert n1.put(key + "-largest", largest).status_code == 204
    assert n2.get(key + "-largest").content == largest

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is counted as it comes
        for _ in range(17):
            yield b"y" * (1 << 16)

    assert_json_error(n1.http.put(key_path(key), content=chunks()), 413)

    for bad in ("garbage!!", good_ctx[: len(good_ctx) // 2], good_ctx[:-2], "AAAA",
                good_ctx + "A", "*" * 40):
        assert_json_error(n1.put(key, b"changed", context=bad), 400)
        assert_json_error(n1.delete(key, context=bad), 400)
    for params in ({"ttl": "0"}, {"ttl": "abc"}, {"ttl": "-3"}, {"ttl": "1.5"},
                   {"timeout": "-1"}, {"timeout": "0"}, {"timeout": "soon"},
                   {"w": "4"}, {"w": "0"}, {"w": "abc"}, {"w": "+2"}, {"w": " 2"},
                   {"ttl": "1_000"}, {"timeout": "1e3"}):
        assert_json_error(n1.put(key, b"changed", params=params), 400)
    for params in ({"r": "0"}, {"r": "4"}, {"r": "many"}, {"timeout": "-1"}):
        assert_json_error(n1.get(key, params=params), 400)
    assert_json_error(n1.delete(key, params={"w": "9"}), 400)

    empty = n1.http.put("/kv/", content=b"v")
    assert empty.status_code in (400, 404), empty.text
    # The server's own errors are JSON too: an unknown path, a method not allowed.
    assert_json_error(n1.http.get("/no/such/path"), 404)
    wrong = assert_json_error(n1.http.post(key_path(key), content=b"v"), 405)
    assert "PUT" in wrong["allowed"]  # type: ignore[operator]

    after = n2.get(key, params={"r": "3"})
    assert (after.status_code, after.content) == (200, b"original")
    assert after.headers["X-Context"] == before.headers["X-Context"]
    assert after.headers["Content-Type"] == "text/plain"


def _raw_http(node: NodeProc, data: bytes) -> bytes:
    """Send raw bytes to the HTTP port; what came back before the node closed (or 10 s)."""
    out = b""
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=10) as s:
        s.sendall(data)
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def test_malformed_http_gets_400_and_node_survives(healthy: Cluster) -> None:
    node = healthy["n3"]
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"PUT /kv/raw HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nv",
        b"PUT /kv/raw HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    ):
        answer = _raw_http(node, raw)
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), (raw, answer[:200])
    assert node.alive
    assert node.healthy()
    assert node.get("raw").status_code == 404  # none of those wrote anything
    assert node.put("raw-after", b"ok").status_code == 204
    assert node.get("raw-after").content == b"ok"


def test_arbitrary_key_bytes_round_trip(healthy: Cluster) -> None:
    n1, n2, n3, _ = healthy.nodes
    keys = [b"\x00", b"\xff\xfe", b"a/b", b"/leading", b"sp ace", b"new\nline", b"tab\t",
            b".", b"..", b"%41", b"?q=1&r=3", b"#frag", "\u00fc\u00f1\u00ee".encode(),
            bytes(range(1, 256)), b"x" * 1024]
    for i, key in enumerate(keys):
        value = b"value-%d" % i
        assert n1.put(key, value).status_code == 204, key
    for i, key in enumerate(keys):
        got = n2.get(key)
        assert (got.status_code, got.content) == (200, b"value-%d" % i), key
    # Keys are distinct byte strings: "%41" is not "A".
    assert n3.get(b"A").status_code == 404


# ------------------------------------------------------------------------ TTL, metrics


def test_ttl_expires_on_every_node(healthy: Cluster) -> None:
    n1 = healthy["n1"]
    key = "ttl-key"
    assert n1.put(key, b"short-lived", params={"ttl": "2"}).status_code == 204
    got = n1.get(key)
    assert (got.status_code, got.content) == (200, b"short-lived")

    def expired_everywhere() -> bool:
        return all(node.get(key).status_code == 404 for node in healthy)

    wait_until(expired_everywhere, timeout=15, what="the TTL'd key to read 404 on every node")

    # An expired sibling disappears; its concurrent sibling stays.
    key = "ttl-sibling"
    assert n1.put(key, b"forever").status_code == 204
    assert healthy["n2"].put(key, b"short", params={"ttl": "2"}).status_code == 204
    assert healthy["n3"].get(key).status_code == 300

    def one_left() -> bool:
        return all((n.get(key).status_code, n.get(key).content) == (200, b"forever")
                   for n in healthy)

    wait_until(one_left, timeout=15, what="the TTL'd sibling to expire everywhere")


def _families(node: NodeProc) -> dict[str, object]:
    resp = node.http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(resp.text)}


def test_metrics_exposed(healthy: Cluster) -> None:
    node = healthy["n2"]
    before = node.metrics()
    key = "metrics-key"
    assert node.put(key, b"a").status_code == 204
    assert node.put(key, b"b").status_code == 204  # two blind writes: siblings
    assert node.get(key).status_code == 300
    assert node.get("metrics-missing").status_code == 404
    assert node.put(key, b"v", params={"w": "abc"}).status_code == 400
    assert node.delete("metrics-missing").status_code == 204

    fams = _families(node)
    expected = {
        "ringkv_requests": "counter",
        "ringkv_request_duration_seconds": "histogram",
        "ringkv_hints_pending": "gauge",
        "ringkv_hints_delivered": "counter",
        "ringkv_read_repairs": "counter",
        "ringkv_anti_entropy_keys_repaired": "counter",
        "ringkv_siblings": "histogram",
    }
    for name, kind in expected.items():
        assert name in fams, f"{name} missing from /metrics: {sorted(fams)}"
        assert fams[name].type == kind, (name, fams[name].type)  # type: ignore[attr-defined]

    after = node.metrics()

    def delta(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    assert delta('ringkv_requests_total{code="204",op="put"}') == 2
    assert delta('ringkv_requests_total{code="400",op="put"}') == 1
    assert delta('ringkv_requests_total{code="300",op="get"}') == 1
    assert delta('ringkv_requests_total{code="404",op="get"}') == 1
    assert delta('ringkv_requests_total{code="204",op="delete"}') == 1
    assert delta('ringkv_request_duration_seconds_count{op="put"}') == 3
    assert delta('ringkv_request_duration_seconds_count{op="get"}') == 2
    assert after['ringkv_request_duration_seconds_bucket{le="+Inf",op="get"}'] == \
        after['ringkv_request_duration_seconds_count{op="get"}']
    # One read returned two siblings.
    assert delta("ringkv_siblings_count") == 1
    assert delta("ringkv_siblings_sum") == 2
    assert delta('ringkv_siblings_bucket{le="1.0"}') == 0
    assert delta('ringkv_siblings_bucket{le="2.0"}') == 1
    for name in ("ringkv_hints_pending", "ringkv_hints_delivered_total",
                 "ringkv_read_repairs_total", "ringkv_anti_entropy_keys_repaired_total"):
        assert after[name] >= 0, name


# ------------------------------------------------------- guarantee 6: internode garbage


def _frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def _read_frame(s: socket.socket) -> object:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf

    (length,) = struct.unpack(">I", exact(4))
    return msgpack.unpackb(exact(length), raw=False)


def _handshake(port: int, node_id: str = "intruder") -> socket.socket:
    """A connection that completed the (secret-less) handshake as `node_id`."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    challenge = _read_frame(s)
    assert isinstance(challenge, list) and challenge[0] == "ringkv", challenge
    s.sendall(_frame(["ringkv", 2, node_id, b"", os.urandom(16)]))
    accept = _read_frame(s)
    assert isinstance(accept, list) and accept[:2] == ["ringkv", 2], accept
    return s


def _send_and_close(port: int, data: bytes) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
    except OSError:
        pass  # the node may close on us mid-send: that is the point


def test_rpc_port_garbage_never_crashes_a_node(healthy: Cluster) -> None:
    target = healthy["n4"]
    port = target.rpc_port
    rng = random.Random(7)
    bad_before = target.metrics()["ringkv_rpc_bad_frames_total"]

    # Before any handshake: noise, a huge length, a zero length, half a frame.
    _send_and_close(port, rng.randbytes(4096))
    _send_and_close(port, b"\xff\xff\xff\xff" + rng.randbytes(64))
    _send_and_close(port, b"\x00\x00\x00\x00")
    _send_and_close(port, struct.pack(">I", 100) + b"half a frame")
    _send_and_close(port, b"")
    _send_and_close(port, _frame(["ringkv", 2, "bad id with spaces", b"", os.urandom(16)]))
    _send_and_close(port, _frame(["ringkv", 99, "v99", b"", os.urandom(16)]))

    # Many connections at once, some silent, some noisy.
    socks = []
    try:
        for i in range(150):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 3 == 0:
                s.sendall(rng.randbytes(rng.randint(1, 2048)))
            socks.append(s)
    finally:
        for s in socks:
            s.close()

    # After a valid handshake: frames that are not messages of ringkv's wire format.
    malformed: list[bytes] = [
        b"\xc1",  # not msgpack
        msgpack.packb(5),
        msgpack.packb([]),
        msgpack.packb({"a": 1}),
        msgpack.packb([999, 1, 2]),
        msgpack.packb([10, "x"]),
        msgpack.packb([10, 1, b"k", "not versions", None]),
        msgpack.packb([12, 1, b""]),
        msgpack.packb([12, 1, b"x" * 2000]),
        msgpack.packb([1, "seq", {}]),
        msgpack.packb([2, 1, [["bad"]], {}]),
        msgpack.packb([13, 1, [1, 2, 3]]),
        msgpack.packb([20, 1, [b"k", None, 5, "", None, None, None]]),
        msgpack.packb([21, 1, ["ok", "!!", 1]]),
    ]
    s = _handshake(port)
    try:
        for payload in malformed:
            s.sendall(struct.pack(">I", len(payload)) + payload)
        s.sendall(b"\xff\xff\xff\xff")  # and then a violation that closes it
    finally:
        s.close()
    s = _handshake(port)
    s.sendall(struct.pack(">I", 50) + b"truncated")
    s.close()

    assert target.alive, target.tail()
    wait_until(lambda: target.metrics()["ringkv_rpc_bad_frames_total"]
               >= bad_before + len(malformed), 10, "malformed frames to be counted")
    assert target.healthy()
    for node in healthy:
        resp = target.put(f"after-garbage-{node.node_id}", node.node_id.encode())
        assert resp.status_code == 204, resp.text
        got = node.get(f"after-garbage-{node.node_id}")
        assert (got.status_code, got.content) == (200, node.node_id.encode())
    healthy.wait_all_up(timeout=15)
    assert all(n.alive for n in healthy)


# --------------------------------------------------------------------------------- CLI


def test_cli_against_live_cluster(healthy: Cluster) -> None:
    url = healthy["n2"].url
    other = healthy["n3"].url

    res = run_cli("put", "cli-key", "cli value", "--node", url)
    assert res.returncode == 0, res.stderr
    res = run_cli("get", "cli-key", "--node", other)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "cli value"

    res = run_cli("get", "cli-missing", "--node", url)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)

    res = run_cli("delete", "cli-key", "--node", other)
    assert res.returncode == 0, res.stderr
    res = run_cli("get", "cli-key", "--node", url)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)

    res = run_cli("put", "cli-stdin", "-", "--node", url, input=b"from\x00stdin")
    assert res.returncode == 0, res.stderr
    assert healthy["n4"].get("cli-stdin").content == b"from\x00stdin"

    res = run_cli("cluster", "status", "--node", url)
    assert res.returncode == 0, res.stderr
    for node_id in healthy.ids:
        assert node_id in res.stdout, res.stdout
    res = run_cli("cluster", "status", "--json", "--node", url)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert sorted(m["node_id"] for m in doc["members"]) == sorted(healthy.ids)
    assert all(m["status"] == "up" for m in doc["members"])


def test_cli_bad_serve_config_exits_with_one_line() -> None:
    res = run_cli("serve", "--r", "5", "--node-id", "x", timeout=30)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "--r" in lines[0], lines[0]


def test_client_update_shopping_cart(healthy: Cluster) -> None:
    key = "cart"
    items_per_shopper = 5

    def merge(values: list[bytes]) -> bytes:
        union: set[str] = set()
        for v in values:
            union |= set(json.loads(v))
        return json.dumps(sorted(union)).encode()

    errors: list[BaseException] = []

    def shopper(node: NodeProc, who: int) -> None:
        try:
            with Client(node.url, timeout=10) as kv:
                for j in range(items_per_shopper):
                    item = f"item-{who}-{j}"

                    def add(old: bytes | None, item: str = item) -> bytes:
                        cart = set(json.loads(old)) if old else set()
                        return json.dumps(sorted(cart | {item})).encode()

                    kv.update(key, add, merge=merge, retries=10)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=shopper, args=(node, i))
               for i, node in enumerate(healthy.nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors

    with Client(healthy["n1"].url) as kv:
        result = kv.get(key, r="all")
    assert result.found
    cart = set(json.loads(merge(result.values)))
    want = {f"item-{i}-{j}" for i in range(len(healthy)) for j in range(items_per_shopper)}
    assert cart == want, (want - cart, cart - want)


def test_the_set_cart_example_keeps_adds_and_removes(healthy: Cluster) -> None:
    # The README's set-based cart: concurrent shoppers add and remove through different
    # nodes; the final cart holds every kept item and none of the removed ones.
    example = Path(__file__).resolve().parents[2] / "examples" / "shopping_cart.py"
    nodes = [arg for node in healthy.nodes for arg in ("--node", node.url)]
    res = subprocess.run([sys.executable, str(example), "--set", "--shoppers", "5",
                          "--items", "4", *nodes], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "removed ones are gone" in res.stdout
