"""Cost budgets of whole requests in a 3-node in-memory cluster (N=3, R=W=2): how many
times versions are decoded, encoded and merged, counted across every node, with every
message through the real wire codec. Budgets are counts, never times.

A GET whose replicas all hold the same record costs one decode at the coordinator: the
replicas answer with their stored bytes (no record decode, no re-encode) and equal
answers are neither decoded again nor merged nor judged stale.
"""

from __future__ import annotations

from collections import Counter

import pytest

from coordinator.requests import ReadOk, ReadRequest, WriteOk, WriteRequest
from ring.token import key_token
from storage.versions import EMPTY_CONTEXT
from tests.node.test_node import cluster
from tests.support.costs import count_costs
from tests.support.memnet import MemNet

KEY = b"budget"


def _cluster() -> MemNet:
    # No anti-entropy exchange during the measured requests: they read records too.
    net: MemNet = cluster(3, anti_entropy_interval=3600.0)
    return net


def _everywhere(net: MemNet) -> None:
    net.run_for(0.1)  # the third replica's ack and any repair land
    states = {node_id: node.store.read_merged(key_token(KEY), KEY)
              for node_id, node in net.nodes.items()}
    assert all(s is not None and len(s.siblings) == 1 for s in states.values()), states


def test_a_get_of_equal_replicas_decodes_once_and_merges_and_encodes_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = _cluster()
    assert isinstance(net.request("n1", WriteRequest(KEY, b"v" * 1024, "text/plain",
                                                     EMPTY_CONTEXT)), WriteOk)
    _everywhere(net)
    for coordinator in ("n1", "n2", "n3"):
        counts = count_costs(monkeypatch)
        resp = net.request(coordinator, ReadRequest(KEY, 2))
        net.run_for(0.1)  # the third reply arrives; nothing to repair
        assert isinstance(resp, ReadOk) and resp.stale == ()
        assert counts == Counter(decode=1), coordinator
        monkeypatch.undo()
    assert sum(n.coordinator.stats.read_repairs for n in net.nodes.values()) == 0


def test_a_get_of_a_stale_replica_still_merges_and_repairs_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = _cluster()
    net.request("n1", WriteRequest(KEY, b"old", "text/plain", EMPTY_CONTEXT))
    _everywhere(net)
    net.down.add("n3")  # n3 misses the next write (its hint waits on n1 or n2)
    first = net.request("n1", ReadRequest(KEY, 2))
    assert isinstance(first, ReadOk)
    net.request("n1", WriteRequest(KEY, b"new", "text/plain", first.context))
    net.down.discard("n3")
    counts = count_costs(monkeypatch)
    resp = net.request("n2", ReadRequest(KEY, 3))
    net.run_for(0.1)
    assert isinstance(resp, ReadOk) and [s.value for s in resp.siblings] == [b"new"]
    assert resp.stale == ("n3",)
    # Two distinct answers decoded once each at the coordinator; n3 decodes its repair
    # and reads its record (records on disk are validated as they are read).
    assert counts["merge"] >= 1 and counts["decode"] == 4
    assert net.nodes["n2"].coordinator.stats.read_repairs == 1


def test_a_put_stays_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _cluster()
    net.request("n1", WriteRequest(KEY, b"v", "text/plain", EMPTY_CONTEXT))
    _everywhere(net)
    ctx = net.request("n1", ReadRequest(KEY, 2))
    assert isinstance(ctx, ReadOk)
    net.run_for(0.1)  # the read's last reply lands before counting starts
    counts = count_costs(monkeypatch)
    assert isinstance(net.request("n1", WriteRequest(KEY, b"w", "text/plain", ctx.context)),
                      WriteOk)
    net.run_for(0.1)
    # Today's costs, as a ceiling: the coordinator reads its record (1 decode: records
    # on disk are validated as they are read), stores the new state (1 encode) and
    # encodes one ReplicaPut for both other replicas (1); each of those replicas decodes
    # it (2), reads its record (2 decodes), merges (2) and stores the result (2 encodes).
    assert counts["trusted_decode"] == 0
    assert counts["decode"] <= 5
    assert counts["encode"] <= 4
    assert counts["merge"] <= 2
