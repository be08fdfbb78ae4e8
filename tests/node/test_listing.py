"""Key listing through real nodes on the in-memory network: following the cursor lists
every live key of a bucket exactly once, in order, also while a node joins or is down,
and a page that cannot reach R replicas of a range fails rather than skip it."""

from __future__ import annotations

from coordinator.requests import (
    ListOk,
    ListRequest,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    WriteOk,
    WriteRequest,
)
from ring.token import key_token
from storage.namespace import COUNTER, DEFAULT_BUCKET, KV, internal_key, split_internal_key
from storage.versions import EMPTY_CONTEXT
from tests.support.memnet import MemNet


def put(net: MemNet, node: str, stored: bytes, value: bytes = b"v") -> None:
    assert isinstance(net.request(node, WriteRequest(stored, value, "text/plain",
                                                     EMPTY_CONTEXT)), WriteOk)


def delete(net: MemNet, node: str, stored: bytes) -> None:
    read = net.request(node, ReadRequest(stored))
    assert isinstance(read, ReadOk)
    assert isinstance(net.request(node, WriteRequest(stored, None, "", read.context)), WriteOk)


def in_order(stored: list[bytes]) -> list[bytes]:
    """User keys in listing order: by (token, stored key)."""
    return [split_internal_key(k)[2] for k in sorted(stored, key=lambda k: (key_token(k), k))]


def pages(net: MemNet, bucket: str, limit: int, via: tuple[str, ...],
          between: object = None) -> list[bytes]:
    """Follow the cursor to the end, asking the nodes of `via` in turn, calling
    `between()` after each page."""
    keys: list[bytes] = []
    after = None
    for i in range(10_000):
        resp = net.request(via[i % len(via)], ListRequest(bucket, KV, after, limit))
        assert isinstance(resp, ListOk), resp
        assert len(resp.keys) <= limit
        keys.extend(resp.keys)
        if resp.cursor is None:
            return keys
        after = resp.cursor
        if callable(between):
            between()
    raise AssertionError("the listing never ended")


def populated(count: int = 5, seed: int = 5) -> tuple[MemNet, dict[str, list[bytes]]]:
    net = MemNet(seed=seed)
    net.start(count)
    net.run_for(0.5)
    keys = {
        "photos": [internal_key("photos", KV, b"img-%03d" % i) for i in range(180)],
        DEFAULT_BUCKET: [internal_key(DEFAULT_BUCKET, KV, b"key-%03d" % i) for i in range(150)],
    }
    nodes = sorted(net.nodes)
    for i, stored in enumerate(keys["photos"] + keys[DEFAULT_BUCKET]):
        put(net, nodes[i % len(nodes)], stored)
    # Keys of another kind in the same bucket are not among its values.
    put(net, "n1", internal_key("photos", COUNTER, b"img-000"))
    return net, keys


def test_following_the_cursor_lists_every_live_key_once_in_order() -> None:
    net, keys = populated()
    gone = keys["photos"][::7]
    for stored in gone:
        delete(net, "n2", stored)
    live = [k for k in keys["photos"] if k not in gone]
    for limit in (1, 9, 100, 1000):
        assert pages(net, "photos", limit, ("n1", "n3", "n5")) == in_order(live), limit
    assert pages(net, DEFAULT_BUCKET, 17, ("n4",)) == in_order(keys[DEFAULT_BUCKET])
    assert pages(net, "empty", 10, ("n2",)) == []
    assert all(n.coordinator.in_flight() == 0 for n in net.nodes.values())


def test_listing_while_a_node_joins_lists_every_key_once() -> None:
    net, keys = populated(count=4, seed=7)
    net.add("n5", ("127.0.0.1:9001",))
    seen_statuses: set[str] = set()

    def between() -> None:
        net.run_for(0.05)  # the join goes on between pages
        seen_statuses.update(m.status for m in net.nodes["n1"].members.members()
                             if m.node_id == "n5")

    listed = pages(net, "photos", 4, ("n1", "n2", "n3", "n4"), between)
    assert listed == in_order(keys["photos"])
    assert {"joining", "up"} <= seen_statuses  # the listing ran while n5 joined
    net.settle()
    assert "n5" in net.nodes["n1"].ring.nodes
    # And through the new member, once it holds its ranges.
    assert pages(net, "photos", 50, ("n5",)) == in_order(keys["photos"])


def test_listing_while_a_node_leaves_lists_every_key_once() -> None:
    net, keys = populated(seed=8)
    error, effects = net.nodes["n3"].start_leave(net.now)
    assert error is None
    net._apply("n3", effects)
    seen_statuses: set[str] = set()

    def between() -> None:
        net.run_for(0.05)
        seen_statuses.update(m.status for m in net.nodes["n1"].members.members()
                             if m.node_id == "n3")

    listed = pages(net, "photos", 4, ("n1", "n2", "n4", "n5"), between)
    assert listed == in_order(keys["photos"])
    assert {"leaving", "left"} <= seen_statuses  # the listing ran while n3 left
    assert "n3" not in net.nodes["n1"].ring.nodes


def test_listing_with_a_node_down_reaches_r_replicas_of_every_range() -> None:
    net, keys = populated(seed=9)
    net.down.add("n3")
    net.run_for(2.0)  # long enough for every node to judge it down
    assert not net.nodes["n1"].is_up("n3", net.now)
    assert pages(net, "photos", 23, ("n1", "n2", "n4", "n5")) == in_order(keys["photos"])


def test_a_page_with_fewer_than_r_primaries_up_fails() -> None:
    net = MemNet(seed=13)
    net.start(3)
    net.run_for(0.5)
    put(net, "n1", internal_key("b", KV, b"k"))
    net.down.update({"n2", "n3"})
    net.run_for(2.0)
    resp = net.request("n1", ListRequest("b", KV, None, 10))
    assert resp == QuorumFailed(1, 2, "too few replicas reachable")
    assert net.request("n1", ListRequest("b", KV, None, 10, r=1)) == ListOk((b"k",), None)
