"""Expiry and tombstone-compaction bookkeeping grows per key, not per write.

Every write to a key with a TTL (and every delete) used to add one heap entry, so 5,000
TTL writes to one key held 5,000 entries until each came due. The node keeps one
scheduled deadline per key; rewriting the key moves it.
"""

from __future__ import annotations

from coordinator.requests import WriteOk, WriteRequest
from ring.token import key_token
from storage.versions import EMPTY_CONTEXT
from tests.support.memnet import MemNet

WRITES = 5000
SMALL = 8  # entries per key the queues may hold (the current one plus stale slack)


def test_ttl_writes_and_deletes_to_one_key_hold_a_constant_number_of_entries() -> None:
    net = MemNet(seed=5)
    net.start(3)
    net.run_for(1.0)
    key = b"hot"
    ctx = EMPTY_CONTEXT
    for i in range(WRITES):
        value = None if i % 2 else b"v%d" % i  # TTL puts, deletes in between
        resp = net.request("n1", WriteRequest(key, value, "text/plain", ctx, None, 3600))
        assert isinstance(resp, WriteOk), resp
        ctx = resp.context
    for node in net.nodes.values():
        ae = node.anti_entropy
        assert len(ae._expiring) <= SMALL
        assert len(ae._dead_due) <= SMALL
    # Expiry still works: the last TTL write expires and becomes a tombstone.
    put = net.request("n1", WriteRequest(key, b"brief", "text/plain", ctx, None, 1))
    assert isinstance(put, WriteOk)
    net.run_for(3.0)
    for node in net.nodes.values():
        record = node.store.get_record(key_token(key), key)
        assert record is not None
        assert all(s.value is None for s in record.versions.siblings)
