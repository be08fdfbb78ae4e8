"""Hostile member records, from gossip and from the node's own disk, never stop a node.

A record whose id breaks the node-id rule, whose version is past the bound, or that is
otherwise malformed is refused where it is decoded; one already on disk is skipped at
start, and the node still learns every other member.
"""

from __future__ import annotations

import msgpack
import pytest

from coordinator.requests import WriteOk
from gossip.membership import COUNTER_LIMIT, REFUTE_LIMIT, UP, Member
from gossip.messages import GossipAck2
from ringkv.core import wire
from storage.store import KeyStore
from tests.node.test_node import cluster, get, put, values
from tests.support.memnet import MemNet

BAD_IDS = ["bad id!", "../x", "n" * 70]


def _ack2(*records: list[object]) -> bytes:
    packed: bytes = msgpack.packb([GossipAck2.TYPE, list(records)], use_bin_type=True)
    return packed


def _deliver(net: MemNet, dst: str, src: str, frame: bytes) -> None:
    """What a runtime does with a frame: decode it (a WireError drops it), then hand it
    to the node."""
    try:
        msg = wire.decode(frame)
    except wire.WireError:
        return
    net.nodes[dst].receive(src, msg, net.now)


def _still_works(net: MemNet) -> None:
    net.run_for(2.0)
    assert isinstance(put(net, "n2", b"still", b"works"), WriteOk)
    assert values(get(net, "n3", b"still", r=3)) == [b"works"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_a_gossiped_member_with_a_bad_id_is_refused_and_the_node_keeps_working(
        bad_id: str) -> None:
    net = cluster(3)
    record = ["placeholder", "127.0.0.1:8009", "127.0.0.1:9009", [7], UP, 1, 1]
    record[0] = bad_id
    frame = _ack2(record)
    with pytest.raises(wire.WireError):
        wire.decode(frame)
    _deliver(net, "n2", "n1", frame)
    assert bad_id not in net.nodes["n2"].members
    _still_works(net)


def test_a_bad_member_record_on_disk_is_skipped_and_the_node_learns_the_others() -> None:
    net = cluster(3)
    net.crash("n2")
    store = KeyStore(net.engines["n2"])
    saved = store.get_meta("members")
    assert isinstance(saved, list) and len(saved) == 3
    bad = [["bad id!", "127.0.0.1:8009", "127.0.0.1:9009", [7], UP, 1, 1],
           ["n9", "nohost", "127.0.0.1:9009", [7], UP, 1, 1],
           ["n8", "h:1", "h:2", [7], UP, 2**64 - 1, 1],
           "not a record"]
    store.put_meta("members", [*bad, *saved])
    engine = net.engines["n2"]
    engine.commit(engine.seal())
    node = net.restart("n2")
    assert node.joined and node.cluster.skipped_records == len(bad)
    assert node.members.ids() == ["n1", "n2", "n3"]
    for m in node.members.members():
        assert m.rpc.startswith("127.0.0.1:90")
    _still_works(net)


def test_a_version_over_the_bound_is_refused_at_decode() -> None:
    for version in (2**64 - 1, COUNTER_LIMIT):
        with pytest.raises(wire.WireError):
            wire.decode(_ack2(["n2", "h:1", "h:2", [7], UP, version, 1]))


def _forge(net: MemNet, version: int) -> Member:
    """n2's record as a forger would write it, at `version` under another generation."""
    mine = net.nodes["n2"].members.get("n2")
    assert mine is not None
    return Member(mine.node_id, mine.http, mine.rpc, mine.tokens, UP, version,
                  (mine.generation + 1) % COUNTER_LIMIT)


@pytest.mark.parametrize("version", [COUNTER_LIMIT - 1, COUNTER_LIMIT - 2, REFUTE_LIMIT])
def test_a_near_bound_record_of_itself_is_not_refuted_and_the_node_goes_on(
        version: int) -> None:
    net = cluster(3)
    mine = net.nodes["n2"].members.get("n2")
    _deliver(net, "n2", "n1", wire.encode(GossipAck2((_forge(net, version),))))  # decodes
    # Refuting would take n2's version past what peers decode: it keeps its record.
    assert net.nodes["n2"].members.get("n2") == mine
    _still_works(net)


def test_a_record_of_itself_just_under_the_limit_is_refuted_and_the_node_goes_on() -> None:
    net = cluster(3)
    mine = net.nodes["n2"].members.get("n2")
    _deliver(net, "n2", "n1", wire.encode(GossipAck2((_forge(net, REFUTE_LIMIT - 1),))))
    refuted = net.nodes["n2"].members.get("n2")
    assert mine is not None and refuted is not None
    assert refuted.version == REFUTE_LIMIT and refuted.generation == mine.generation
    # Every frame the network carries from here on goes through the real codec: a record
    # or a beat past the bound would raise in it. A status change after the refutation
    # still has room under the bound.
    _still_works(net)
    net._apply("n2", net.nodes["n2"].set_own_status("leaving", net.now))
    net.run_for(2.0)
    for node in net.nodes.values():
        seen = node.members.get("n2")
        assert seen is not None and seen.rpc == mine.rpc
        assert REFUTE_LIMIT <= seen.version < COUNTER_LIMIT
