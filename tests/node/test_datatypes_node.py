"""Counters, sets and bucket properties through the node's coordinator paths (in memory).

Every request goes through a random node of five, so most are forwarded to a replica
over the real wire codec, the data-type update inside the ForwardWrite frame.
"""

from __future__ import annotations

from coordinator.requests import LimitExceeded, NotFound, ReadOk, ReadRequest, WriteOk, WriteRequest
from ringkv.core.buckets import BucketProps, encode_props
from storage.crdt import (
    MAX_SET_ELEMENTS,
    CounterAdd,
    PropsPut,
    SetEdit,
    counter_value,
    decode_set_context,
    observed,
    props_table,
    set_context,
    set_elements,
)
from storage.namespace import COUNTER, KV, PROPS_KEY, SET, internal_key
from storage.versions import EMPTY_CONTEXT
from tests.support.memnet import MemNet

NODES = ["n1", "n2", "n3", "n4", "n5"]


def cluster() -> MemNet:
    net = MemNet(seed=5)
    net.start(5)
    net.run_for(1.0)
    return net


def op(net: MemNet, node: str, key: bytes, operation: object):  # type: ignore[no-untyped-def]
    return net.request(node, WriteRequest(key, None, "", EMPTY_CONTEXT, op=operation))


def read(net: MemNet, node: str, key: bytes, r: int | None = None):  # type: ignore[no-untyped-def]
    return net.request(node, ReadRequest(key, r))


def test_increments_through_every_node_sum_and_a_retry_counts_once() -> None:
    net = cluster()
    key = internal_key("default", COUNTER, b"hits")
    assert isinstance(read(net, "n1", key), NotFound)
    for i, node in enumerate(NODES * 4):
        assert isinstance(op(net, node, key, CounterAdd(i + 1, None)), WriteOk)
    for node in NODES:  # the same retry through every coordinator
        assert isinstance(op(net, node, key, CounterAdd(-7, "retry-1")), WriteOk)
    net.run_for(2.0)
    for node in NODES:
        resp = read(net, node, key, r=3)
        assert isinstance(resp, ReadOk)
        assert counter_value(resp.siblings) == sum(range(1, 21)) - 7


def test_a_set_remove_deletes_what_its_context_saw_and_a_concurrent_add_wins() -> None:
    net = cluster()
    key = internal_key("carts", SET, b"alice")
    assert isinstance(op(net, "n1", key, SetEdit((b"apple", b"pear"), ())), WriteOk)
    seen = read(net, "n2", key)
    assert isinstance(seen, ReadOk)
    assert set_elements(seen.siblings) == [b"apple", b"pear"]
    ctx = decode_set_context(set_context(seen.siblings))
    # Another client adds apple again, unseen by the remover.
    assert isinstance(op(net, "n4", key, SetEdit((b"apple",), ())), WriteOk)
    removes = ((b"apple", observed(ctx, b"apple")), (b"pear", observed(ctx, b"pear")))
    assert isinstance(op(net, "n3", key, SetEdit((), removes)), WriteOk)
    net.run_for(2.0)
    for node in NODES:
        resp = read(net, node, key, r=3)
        assert isinstance(resp, ReadOk)
        assert set_elements(resp.siblings) == [b"apple"]


def test_a_set_past_its_size_limit_is_refused_and_unchanged() -> None:
    net = cluster()
    key = internal_key("default", SET, b"big")
    batch = 1000
    for start in range(0, MAX_SET_ELEMENTS, batch):
        adds = tuple(b"e%d" % i for i in range(start, start + batch))
        assert isinstance(op(net, "n1", key, SetEdit(adds, ())), WriteOk)
    resp = op(net, "n2", key, SetEdit((b"one-too-many",), ()))
    assert isinstance(resp, LimitExceeded) and resp.limit == MAX_SET_ELEMENTS
    got = read(net, "n3", key)
    assert isinstance(got, ReadOk) and len(set_elements(got.siblings)) == MAX_SET_ELEMENTS


def test_counters_and_values_of_one_name_are_distinct_keys() -> None:
    net = cluster()
    assert isinstance(op(net, "n1", internal_key("default", COUNTER, b"x"),
                         CounterAdd(5, None)), WriteOk)
    assert isinstance(read(net, "n2", internal_key("default", KV, b"x")), NotFound)


def test_bucket_properties_written_at_one_node_are_read_at_another() -> None:
    net = cluster()
    props = encode_props(BucketProps(r=1, conflict="lww"))
    assert isinstance(op(net, "n2", PROPS_KEY, PropsPut("cache", props)), WriteOk)
    resp = read(net, "n5", PROPS_KEY)
    assert isinstance(resp, ReadOk)
    net.nodes["n5"].learn_buckets(props_table(resp.siblings))
    assert net.nodes["n5"].buckets.effective("cache")["r"] == 1
    # A bucket in lww mode keeps one version of a value, even for blind writes.
    key = internal_key("cache", KV, b"k")
    for node, value in (("n1", b"a"), ("n5", b"b")):
        net.nodes[node].learn_buckets(props_table(resp.siblings))
        assert isinstance(net.request(node, WriteRequest(key, value, "text/plain",
                                                         EMPTY_CONTEXT)), WriteOk)
    got = read(net, "n5", key)
    assert isinstance(got, ReadOk) and len(got.siblings) == 1
