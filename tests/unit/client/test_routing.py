"""Routing by the ring: the client's placement arithmetic equals the node's, its router
keeps a map and names a replica, and both clients send keyed requests there first.

The nodes are scripted (`httpx.MockTransport`, routed by host); their ``GET /ring``
answer is the node's own (`ringkv.server.http_ring.token_map` of a real `Ring`), so
the client is checked against the node's placement, not against itself.
"""

from __future__ import annotations

import asyncio
import json
import random
from bisect import bisect_left
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring import Ring
from ring.token import key_token as node_key_token
from ringkv.client import AsyncClient, Client
from ringkv.client.placement import RingMap, key_token, stored_key
from ringkv.client.protocol import HttpResponse
from ringkv.client.routing import Router
from ringkv.server.http_ring import token_map
from storage.namespace import internal_key

buckets = st.sampled_from(["default", "b", "cart.v2", "A" * 64])
kinds = st.sampled_from(["kv", "counter", "set"])
keys = st.binary(min_size=1, max_size=64)


def ring_doc(ring: Ring, n: int) -> dict[str, object]:
    owners, tokens, owner_of = token_map(ring)
    return {"node_id": owners[0], "n": n, "vnodes": ring.vnode_count,
            "owners": list(owners), "tokens": [str(t) for t in tokens], "owner_of": owner_of}


# ----------------------------------------------------------- placement == the node's


@given(buckets, kinds, keys)
def test_the_stored_key_and_token_are_the_nodes(bucket: str, kind: str, key: bytes) -> None:
    stored = stored_key(bucket, kind, key)
    assert stored == internal_key(bucket, kind, key)
    assert key_token(stored) == node_key_token(stored)


rings = st.dictionaries(
    st.sampled_from(["n1", "n2", "n3", "n4", "n5", "n6"]),
    # Small token spaces make shared tokens and runs of one owner common.
    st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1)), min_size=1,
             max_size=12),
    min_size=1,
)


@settings(max_examples=300)
@given(rings, st.integers(1, 7), st.lists(st.one_of(st.integers(0, 41),
                                                    st.integers(0, 2**64 - 1)), max_size=20))
def test_the_map_gives_every_token_the_nodes_preference_list(
    members: dict[str, list[int]], n: int, probes: list[int]
) -> None:
    ring = Ring(members)
    doc = json.loads(json.dumps(ring_doc(ring, n)))
    placement = RingMap.from_json(doc)
    for token in [*probes, *ring.token_map()[ring.nodes[0]]]:
        expected = ring.preference_list(token, n)
        i = bisect_left(placement.tokens, token)
        assert _walk(placement, i) == expected


def _walk(placement: RingMap, i: int) -> list[str]:
    """RingMap.replicas from an index rather than a key (a token cannot be hashed to)."""
    found: list[str] = []
    total = len(placement.tokens)
    for step in range(total):
        owner = placement.owners[placement.owner_of[(i + step) % total]]
        if owner not in found:
            found.append(owner)
            if len(found) == min(placement.n, len(placement.owners)):
                break
    return found


@given(rings, st.integers(1, 4), buckets, kinds, keys)
def test_replicas_of_a_key_are_the_nodes(members: dict[str, list[int]], n: int, bucket: str,
                                         kind: str, key: bytes) -> None:
    ring = Ring(members)
    placement = RingMap.from_json(ring_doc(ring, n))
    stored = internal_key(bucket, kind, key)
    assert placement.replicas(stored) == ring.key_preference_list(stored, n)


GOOD = {"n": 2, "owners": ["a", "b"], "tokens": ["5", "9"], "owner_of": [0, 1]}


@pytest.mark.parametrize("change", [
    {"n": 0}, {"n": True}, {"n": "2"},
    {"owners": []}, {"owners": ["a", "a"]}, {"owners": ["a", 3]}, {"owners": "ab"},
    {"tokens": ["9", "5"]}, {"tokens": ["5"]}, {"tokens": [5, 9]}, {"tokens": ["-5", "9"]},
    {"tokens": ["5", str(2**64)]}, {"tokens": ["5", "٩"]}, {"tokens": ["5", "1e3"]},
    {"owner_of": [0, 2]}, {"owner_of": [0, True]}, {"owner_of": [0, 0]},
    {"tokens": [], "owner_of": []},
])
def test_a_malformed_map_is_refused(change: dict[str, object]) -> None:
    RingMap.from_json(GOOD)
    with pytest.raises(ValueError):
        RingMap.from_json({**GOOD, **change})
    with pytest.raises(ValueError):
        RingMap.from_json([GOOD])


# ---------------------------------------------------------------------- the router


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_refresh(router: Router, answer: Callable[[str, str | None], HttpResponse | None]
                ) -> list[tuple[str, str | None]]:
    """Drive one refresh; `answer(path, node)` plays the nodes. The requests made."""
    made: list[tuple[str, str | None]] = []
    steps = router.refresh()
    try:
        req = next(steps)
        while True:
            made.append((req.path, req.node))
            req = steps.send(answer(req.path, req.node))
    except StopIteration:
        return made


def json_answer(status: int, doc: object, **headers: str) -> HttpResponse:
    return HttpResponse(status, headers, json.dumps(doc).encode())


RING = Ring({"n1": [10, 2**62], "n2": [2**63], "n3": [3 * 2**62]})
URLS = ("http://u1", "http://u2", "http://u3")
IDS = {"http://u1": "n1", "http://u2": "n2", "http://u3": "n3"}


def nodes_answer(ring: Ring = RING, n: int = 2, etag: str = '"e1"'
                 ) -> Callable[[str, str | None], HttpResponse | None]:
    def answer(path: str, node: str | None) -> HttpResponse | None:
        if path == "/ring":
            return json_answer(200, ring_doc(ring, n), ETag=etag)
        assert path == "/health" and node is not None
        return json_answer(200, {"status": "ok", "node_id": IDS[node]})
    return answer


def test_the_router_learns_the_map_and_each_urls_node_and_names_the_primary() -> None:
    clock = Clock()
    router = Router(URLS, clock)
    assert router.due() and router.url_for(b"k") is None
    made = run_refresh(router, nodes_answer())
    assert made == [("/ring", None), *(("/health", url) for url in URLS)]
    assert router.node_ids == IDS and not router.due()
    for i in range(200):
        key = f"k{i}".encode()
        primary = RING.key_preference_list(key, 2)[0]
        assert router.url_for(key) == {v: k for k, v in IDS.items()}[primary]
    clock.now += 30
    assert router.due()


def test_an_unchanged_map_costs_one_conditional_get() -> None:
    clock = Clock()
    router = Router(URLS, clock)
    run_refresh(router, nodes_answer())
    clock.now += 31
    sent: list[HttpResponse | None] = []

    def not_modified(path: str, node: str | None) -> HttpResponse:
        sent.append(None)
        return HttpResponse(304, {"ETag": '"e1"'}, b"")

    steps = router.refresh()
    req = next(steps)
    assert dict(req.headers)["If-None-Match"] == '"e1"'
    with pytest.raises(StopIteration):
        steps.send(not_modified(req.path, req.node))
    assert router.ring is not None and not router.due()


def test_a_changed_map_asks_every_url_again() -> None:
    clock = Clock()
    router = Router(URLS, clock)
    run_refresh(router, nodes_answer())
    clock.now += 31
    grown = RING.with_node("n4", [2**61])
    made = run_refresh(router, nodes_answer(grown, etag='"e2"'))
    assert made == [("/ring", None), *(("/health", url) for url in URLS)]
    assert router.ring is not None and "n4" in router.ring.owners


def test_a_failed_or_bad_refresh_keeps_the_old_map_and_is_retried_later() -> None:
    clock = Clock()
    router = Router(URLS, clock, retry_after=5)
    run_refresh(router, nodes_answer())
    before = router.ring
    for bad in (None, HttpResponse(200, {}, b"{not json"), json_answer(200, {"n": 3}),
                json_answer(503, {"error": "not joined"}), HttpResponse(200, {}, b"\xff")):
        clock.now += 31
        assert run_refresh(router, lambda path, node, bad=bad: bad) == [("/ring", None)]
        assert router.ring is before and not router.due()
        clock.now += 5
        assert router.due()


def test_a_url_that_failed_is_skipped_for_a_while() -> None:
    clock = Clock()
    router = Router(URLS, clock, suspect_for=5)
    run_refresh(router, nodes_answer())
    key = next(f"k{i}".encode() for i in range(100)
               if RING.key_preference_list(f"k{i}".encode(), 2)[0] == "n1")
    second = {v: k for k, v in IDS.items()}[RING.key_preference_list(key, 2)[1]]
    assert router.url_for(key) == "http://u1"
    router.failed("http://u1")
    assert router.url_for(key) == second
    clock.now += 5
    assert router.url_for(key) == "http://u1"


def test_a_key_with_no_replica_among_the_urls_is_left_to_failover() -> None:
    router = Router(("http://u1",), Clock())
    run_refresh(router, nodes_answer())
    key = next(f"k{i}".encode() for i in range(100)
               if "n1" not in RING.key_preference_list(f"k{i}".encode(), 2))
    assert router.url_for(key) is None
    assert router.url_for(None) is None


# ------------------------------------------------------------ the clients, end to end


class Cluster:
    """Three scripted nodes serving RING; records the host of every keyed request."""

    def __init__(self, down: frozenset[str] = frozenset()) -> None:
        self.down = set(down)
        self.keyed: list[tuple[str, str]] = []  # (host, path)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("refused", request=request)
        path = request.url.path
        if path == "/ring":
            return httpx.Response(200, json=ring_doc(RING, 2), headers={"ETag": '"e"'})
        if path == "/health":
            return httpx.Response(200, json={"status": "ok", "node_id": "n" + host[1]})
        self.keyed.append((host, path))
        if request.method == "GET":
            return httpx.Response(200, content=b"v", headers={"X-Context": "c"})
        return httpx.Response(204, headers={"X-Context": "c"})


HOST_OF = {"n1": "u1", "n2": "u2", "n3": "u3"}


def primary_host(stored: bytes) -> str:
    return HOST_OF[RING.key_preference_list(stored, 2)[0]]


def test_keyed_requests_go_to_the_primary_and_others_do_not_refresh() -> None:
    cluster = Cluster()
    with Client(urls=list(URLS), transport=httpx.MockTransport(cluster),
                route_by_ring=True) as kv:
        for i in range(30):
            kv.put(f"k{i}", b"v")
            kv.get(f"k{i}")
            kv.incr(f"c{i}", 1, bucket="b")
        assert kv.router is not None and kv.router.node_ids == IDS
    expected = []
    for i in range(30):
        host = primary_host(f"k{i}".encode())
        expected += [(host, f"/kv/k{i}"), (host, f"/kv/k{i}"),
                     (primary_host(internal_key("b", "counter", f"c{i}".encode())),
                      f"/buckets/b/counters/c{i}")]
    assert cluster.keyed == expected


def test_a_dead_primary_costs_one_attempt_then_its_keys_go_to_the_next_replica() -> None:
    cluster = Cluster(down=frozenset({"u1"}))
    mine = [f"k{i}" for i in range(200) if primary_host(f"k{i}".encode()) == "u1"][:5]
    with Client(urls=list(URLS), transport=httpx.MockTransport(cluster),
                route_by_ring=True, sleep=lambda s: None) as kv:
        for key in mine:
            assert kv.get(key).value == b"v"
    second = [HOST_OF[RING.key_preference_list(k.encode(), 2)[1]] for k in mine]
    assert [h for h, _ in cluster.keyed] == second


def test_without_route_by_ring_the_client_sends_no_map_requests() -> None:
    cluster = Cluster()
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return cluster(request)

    with Client(urls=list(URLS), transport=httpx.MockTransport(record)) as kv:
        kv.put("k", b"v")
        assert kv.router is None
    assert seen == ["/kv/k"]
    with Client(URLS[0], transport=httpx.MockTransport(record), route_by_ring=True) as kv:
        assert kv.router is None  # one node: nowhere else to send


def test_the_async_client_routes_the_same_way() -> None:
    cluster = Cluster()

    async def scenario() -> None:
        async with AsyncClient(urls=list(URLS), transport=httpx.MockTransport(cluster),
                               route_by_ring=True, rng=random.Random(1)) as kv:
            await asyncio.gather(*(kv.put(f"k{i}", b"v") for i in range(20)))
            for i in range(20):
                await kv.get(f"k{i}")

    asyncio.run(scenario())
    routed = cluster.keyed[-20:]
    assert routed == [(primary_host(f"k{i}".encode()), f"/kv/k{i}") for i in range(20)]
