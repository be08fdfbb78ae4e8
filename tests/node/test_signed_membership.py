"""A member's record changes only by its own word, in a running cluster (memnet).

The attack of the issue: one `GossipAck2` from an authenticated peer marking every member
`left` at version 2^40 stopped the whole cluster. Now nothing changes and the cluster
keeps serving, while a node's own leave and an operator's removal still spread.
"""

from __future__ import annotations

from dataclasses import replace

from coordinator.requests import WriteOk
from gossip.membership import LEFT, UP
from gossip.messages import GossipAck2
from ringkv.core import wire
from tests.node.test_node import cluster, get, put, values
from tests.support.memnet import MemNet

FORGED_VERSION = 1 << 40


def statuses(net: MemNet, viewer: str) -> dict[str, str]:
    return {m.node_id: m.status for m in net.nodes[viewer].members.members()}


def _deliver(net: MemNet, dst: str, src: str, msg: GossipAck2) -> None:
    """As the runtime does: through the codec, then to the node."""
    net._apply(dst, net.nodes[dst].receive(src, wire.decode(wire.encode(msg)), net.now))


def test_an_ack2_marking_every_member_left_stops_nothing() -> None:
    net = cluster(4)
    forged = tuple(replace(m, status=LEFT, version=FORGED_VERSION)
                   for m in net.nodes["n1"].members.members())
    for victim in ("n2", "n3", "n4"):
        _deliver(net, victim, "n1", GossipAck2(forged))
    net.run_for(3.0)
    for viewer in net.nodes:
        assert set(statuses(net, viewer).values()) == {UP}, viewer
        assert len(net.nodes[viewer].ring.nodes) == 4
    assert isinstance(put(net, "n2", b"k", b"v"), WriteOk)
    assert values(get(net, "n4", b"k", r=3)) == [b"v"]


def test_an_ack2_of_removals_signed_by_a_member_stops_nothing() -> None:
    # A member's key signs removals of every other member: they are all heard from, so
    # no one takes them, and each one refutes its own.
    net = cluster(4)
    signer = net.nodes["n1"].signer
    forged = tuple(signer.sign(replace(m, status=LEFT, version=FORGED_VERSION))
                   for m in net.nodes["n1"].members.members() if m.node_id != "n1")
    for victim in ("n2", "n3", "n4"):
        _deliver(net, victim, "n1", GossipAck2(forged))
    net.run_for(3.0)
    for viewer in net.nodes:
        assert set(statuses(net, viewer).values()) == {UP}, viewer
        # The victims refuted: their records now sit one past the forgery, everywhere.
        for victim in ("n2", "n3", "n4"):
            rec = net.nodes[viewer].members.get(victim)
            assert rec is not None and rec.version == FORGED_VERSION + 1 and not rec.author
    assert isinstance(put(net, "n3", b"k", b"v"), WriteOk)
    assert values(get(net, "n2", b"k", r=3)) == [b"v"]


def test_a_forged_record_moving_a_third_node_is_refused() -> None:
    net = cluster(4)
    true = net.nodes["n2"].members.get("n3")
    assert true is not None
    moved = replace(true, version=true.version + 7, rpc="10.9.9.9:9003",
                    tokens=tuple(range(1, 17)))
    _deliver(net, "n2", "n1", GossipAck2((moved,)))
    assert net.nodes["n2"].members.get("n3") == true  # refused, not merely refuted later
    _deliver(net, "n2", "n1", GossipAck2((net.nodes["n1"].signer.sign(moved),)))
    assert net.nodes["n2"].members.get("n3") == true
    net.run_for(2.0)
    for viewer in net.nodes:
        assert net.nodes[viewer].members.get("n3") == net.nodes["n3"].members.get("n3")
        assert net.nodes[viewer].members.get("n3").rpc == true.rpc  # type: ignore[union-attr]


def test_a_removed_node_that_comes_back_refutes_its_removal() -> None:
    net = cluster(5)
    net.crash("n5")
    net.run_for(1.5)  # judged down
    error, effects = net.nodes["n1"].remove_member("n5", net.now)
    assert error is None
    net._apply("n1", effects)
    net.run_for(3.0)
    assert all(statuses(net, v)["n5"] == LEFT for v in ("n1", "n2", "n3", "n4"))
    removal = net.nodes["n2"].members.get("n5")
    assert removal is not None and removal.author == "n1"
    net.restart("n5")  # same disk, same key: alive, so the removal is not its word
    net.run_for(5.0)
    for viewer in net.nodes:
        assert statuses(net, viewer)["n5"] == UP, viewer
