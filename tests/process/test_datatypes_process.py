"""Counters, sets, conditional writes and buckets on real processes (contract 5-7).

One module-scoped 3-node cluster (N=3, R=W=2, LMDB, group commit) of `ringkv serve`
processes; each test uses keys and buckets of its own and spreads its requests over
every node, so that what one coordinator wrote another one serves. The last test
pauses a node and resumes it before it ends.
"""

from __future__ import annotations

import base64
import itertools
import random
from collections.abc import Iterator
from urllib.parse import quote, unquote_to_bytes

import httpx
import pytest

from tests.support.procs import Cluster, NodeProc, key_path, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(make_module_cluster) -> Iterator[Cluster]:  # type: ignore[no-untyped-def]
    yield make_module_cluster(size=3)


@pytest.fixture
def nodes(cluster: Cluster) -> list[NodeProc]:
    for node in cluster:
        assert node.alive, f"{node.node_id} died:\n{node.tail()}"
    cluster.wait_all_up(timeout=15)
    return list(cluster)


def ok(resp: httpx.Response, status: int = 204) -> httpx.Response:
    assert resp.status_code == status, (resp.status_code, resp.text)
    return resp


def counter(node: NodeProc, path: str) -> int:
    value: int = ok(node.request("GET", path), 200).json()["value"]
    return value


def props(node: NodeProc, bucket: str) -> dict[str, object]:
    doc: dict[str, object] = ok(node.request("GET", f"/buckets/{bucket}/props"), 200).json()
    return doc


def wait_props(node: NodeProc, bucket: str, name: str, value: object) -> dict[str, object]:
    """The bucket's properties as `node` serves them, once `name` has `value` there."""
    def applied() -> dict[str, object]:
        got = props(node, bucket)
        return got if got[name] == value else {}

    return wait_until(applied, 10, f"{bucket} {name}={value} on {node.node_id}")


def read_set(node: NodeProc, path: str) -> tuple[list[str], str]:
    doc = ok(node.request("GET", path), 200).json()
    return doc["value"], doc["context"]


# --------------------------------------------------------------------------- counters


def test_increments_through_different_nodes_sum_up(nodes: list[NodeProc]) -> None:
    rng = random.Random(7)
    amounts = [rng.choice([-1, 1]) * rng.randint(1, 1000) for _ in range(30)]
    for node, amount in zip(itertools.cycle(nodes), amounts, strict=False):
        ok(node.request("POST", "/counters/sum", json={"increment": amount}))
    for node in nodes:
        assert counter(node, "/counters/sum") == sum(amounts), node.node_id
        assert counter(node, "/counters/sum?r=all") == sum(amounts), node.node_id
    assert nodes[0].request("GET", "/kv/sum").status_code == 404  # another key


def test_a_retry_with_the_same_idempotency_key_counts_once(nodes: list[NodeProc]) -> None:
    first, second, third = nodes
    ok(first.request("POST", "/counters/paid", json={"increment": 5}))
    headers = {"Idempotency-Key": "order-1234"}
    for node in (first, second, third, first):  # the retry reaches other coordinators
        ok(node.request("POST", "/counters/paid", json={"increment": 100},
                        headers=headers))
    ok(third.request("POST", "/counters/paid", json={"increment": 100},
                     headers={"Idempotency-Key": "order-5678"}))
    for node in nodes:
        assert counter(node, "/counters/paid?r=all") == 205, node.node_id


# ------------------------------------------------------------------------------- sets


def test_set_add_remove_and_add_wins_across_nodes(nodes: list[NodeProc]) -> None:
    a, b, c = nodes
    ok(a.request("POST", "/sets/tags", json={"add": ["red", "green", "blue"]}))
    elements, seen = read_set(b, "/sets/tags")
    assert elements == ["blue", "green", "red"]
    ok(c.request("POST", "/sets/tags", json={"remove": ["blue"], "context": seen}))
    # "red" is added again after that read (by another node): the remove made with the
    # old context removes only the add it observed, and the new add wins.
    ok(a.request("POST", "/sets/tags", json={"add": ["red"]}))
    ok(b.request("POST", "/sets/tags", json={"remove": ["red", "green"], "context": seen}))
    for node in nodes:
        assert read_set(node, "/sets/tags?r=all")[0] == ["red"], node.node_id
    resp = c.request("POST", "/sets/tags", json={"remove": ["purple"], "context": seen})
    assert resp.status_code == 400 and "nothing observed" in resp.json()["error"]


# ------------------------------------------------------------------ conditional writes


def test_a_conditional_create_succeeds_once(nodes: list[NodeProc]) -> None:
    a, b, _ = nodes
    ok(a.put("create-once", "first", headers={"If-None-Match": "*"}))
    resp = b.put("create-once", "second", headers={"If-None-Match": "*"})
    assert resp.status_code == 412, resp.text
    for node in nodes:
        got = ok(node.get("create-once"), 200)
        assert got.content == b"first" and got.headers["ETag"] == resp.json()["etag"]


def test_if_match_with_a_stale_etag_is_412_and_changes_nothing(nodes: list[NodeProc]) -> None:
    a, b, c = nodes
    ok(a.put("guarded", "v1"))
    old = ok(b.get("guarded"), 200).headers["ETag"]
    ok(c.put("guarded", "v2", headers={"If-Match": old}))
    current = ok(a.get("guarded"), 200)
    assert current.content == b"v2"  # it superseded the version its tag named
    for node in nodes:
        resp = node.put("guarded", "v3", headers={"If-Match": old})
        assert resp.status_code == 412, resp.text
        assert resp.json()["etag"] == current.headers["ETag"]
        resp = node.request("DELETE", key_path("guarded"), headers={"If-Match": old})
        assert resp.status_code == 412, resp.text
    for node in nodes:
        got = ok(node.get("guarded", params={"r": "all"}), 200)
        assert (got.content, got.headers["ETag"]) == (b"v2", current.headers["ETag"])


# ---------------------------------------------------------------------------- buckets


def test_bucket_props_reach_every_node_within_seconds(nodes: list[NodeProc]) -> None:
    a, b, c = nodes
    ok(a.request("PUT", "/buckets/spread/props", json={"ttl": 3600, "max_siblings": 9}))
    for node in (b, c):
        got = wait_props(node, "spread", "max_siblings", 9)
        assert (got["ttl"], got["n"]) == (3600, 3)


def test_listing_300_keys_by_pages_of_50_returns_each_once(nodes: list[NodeProc]) -> None:
    keys = [f"key-{i:03d}".encode() for i in range(299)] + [b"\xff/ odd %"]
    for node, key in zip(itertools.cycle(nodes), keys, strict=False):
        ok(node.request("PUT", "/buckets/listed" + key_path(key), content=key))
    ok(nodes[0].request("PUT", "/buckets/elsewhere/kv/key-000", content=b"x"))
    for reader in nodes:
        seen: list[bytes] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, object] = {"limit": 50}
            if cursor is not None:
                params["cursor"] = cursor
            doc = ok(reader.request("GET", "/buckets/listed/keys", params=params), 200).json()
            assert len(doc["keys"]) <= 50
            seen += [unquote_to_bytes(k) for k in doc["keys"]]
            pages += 1
            cursor = doc["cursor"]
            if cursor is None:
                break
            assert pages < 100
        assert len(seen) == len(set(seen)) == 300, reader.node_id
        assert set(seen) == set(keys)
        assert pages >= 6


def test_mget_of_100_keys_answers_in_the_order_asked(nodes: list[NodeProc]) -> None:
    keys = [f"m-{i:03d}" for i in range(90)]
    for node, key in zip(itertools.cycle(nodes), keys, strict=False):
        ok(node.request("PUT", f"/buckets/many/kv/{key}", content=key.encode()))
    asked = keys + [f"missing-{i}" for i in range(10)]
    random.Random(3).shuffle(asked)
    for node in nodes:
        resp = ok(node.request("POST", "/buckets/many/mget", json={"keys": asked}), 200)
        results = resp.json()["results"]
        assert [r["key"] for r in results] == asked
        for r in results:
            if r["key"].startswith("missing-"):
                assert (r["status"], r["values"], r["context"]) == (404, [], None)
            else:
                assert r["status"] == 200, r
                assert base64.b64decode(r["values"][0]) == r["key"].encode()
    too_many = nodes[0].request("POST", "/buckets/many/mget", json={"keys": asked + ["x"]})
    assert too_many.status_code == 400


def test_a_bucket_r_and_w_are_honoured_and_the_query_wins(cluster: Cluster,
                                                          nodes: list[NodeProc]) -> None:
    a, b, c = nodes
    ok(a.request("PUT", "/buckets/strict/props", json={"r": 3, "w": 3}))
    for node in nodes:
        wait_props(node, "strict", "r", 3)
    ok(a.request("PUT", "/buckets/strict/kv/k", content=b"v"))
    c.pause()
    try:
        # Two of three replicas answer: enough for the default R=2, not for the
        # bucket's R=3 (and W=3), unless the request asks for less.
        for path, method in (("/buckets/strict/kv/k?timeout=1000", "GET"),
                             ("/buckets/strict/counters/k?timeout=1000", "GET")):
            resp = a.request(method, path)
            assert resp.status_code == 503, resp.text
            assert resp.json()["required"] == 3
        resp = b.request("PUT", "/buckets/strict/kv/k?timeout=1000", content=b"w")
        assert resp.status_code == 503 and resp.json()["required"] == 3, resp.text
        # A read asking for R=2 is answered. The refused write may still exist on the
        # two replicas that took it (a 503 promises nothing either way), so the answer
        # is v alone or v and w as siblings.
        read = a.request("GET", "/buckets/strict/kv/k?r=2&timeout=1000")
        assert read.status_code in (200, 300), read.text
        ok(b.request("PUT", "/buckets/strict/kv/other?w=2&timeout=1000", content=b"x"))
        ok(a.request("GET", f"/kv/{quote('default-r')}?timeout=1000"), 404)
    finally:
        c.resume()
    cluster.wait_all_up(timeout=15)
