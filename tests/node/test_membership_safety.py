"""Membership changes that trust no one, one at a time.

A joiner does not choose its place in the ring: the seed does. A joining node takes a
join reply only from a seed it asked (the nonce it sent) and only with sane n, r and w;
a leaving node takes `SyncDone` only from an heir it asked, for the transfer it asked
about. At most one leave or removal is in flight, none leaves fewer than N members, and
a node removes only a member it cannot hear from while it hears from most of the others.
"""

from __future__ import annotations

import pytest

from coordinator.effects import Send
from coordinator.requests import ReadOk, ReadRequest, WriteOk, WriteRequest
from gossip.membership import JOINING, UP, Member
from gossip.signing import Signer
from ring.allocation import MAX_VNODES
from ringkv.core import wire
from ringkv.core.join_wire import JoinReply, JoinRequest
from ringkv.core.transfer_wire import SyncDone
from storage.store import KeyStore
from storage.versions import EMPTY_CONTEXT
from tests.support.memnet import MemNet

TOKEN_SPACE = 1 << 64


def cluster(count: int, seed: int = 5, **overrides: object) -> MemNet:
    net = MemNet(seed=seed)
    net.start(count, **overrides)
    net.run_for(1.0)
    for node in net.nodes.values():
        assert node.joined and len(node.members.members()) == count
    return net


def put(net: MemNet, node: str, key: bytes, value: bytes) -> object:
    return net.request(node, WriteRequest(key, value, "text/plain", EMPTY_CONTEXT, None))


def serves(net: MemNet, via: str, key: bytes = b"still") -> bool:
    if not isinstance(put(net, via, key, b"serving"), WriteOk):
        return False
    resp = net.request(via, ReadRequest(key, None))
    return isinstance(resp, ReadOk) and [s.value for s in resp.siblings] == [b"serving"]


def status_of(net: MemNet, viewer: str, node: str) -> str:
    member = net.nodes[viewer].members.get(node)
    assert member is not None
    return member.status


STRANGER = Signer("n9", bytes(range(32)))  # the joiner's own key pair


def stranger(tokens: tuple[int, ...] = ()) -> Member:
    """A joiner's record as its own node sends it: carrying its key, signed by it (a seed
    refuses any other), and naming whatever tokens the joiner would like."""
    return STRANGER.sign(Member("n9", "127.0.0.1:8009", "127.0.0.1:9009", tokens, JOINING, 0,
                                77))


# --- joins: the seed places the joiner ------------------------------------------------


def test_a_joiner_that_names_tokens_taking_every_primary_gets_tokens_the_seed_chose() -> None:
    net = cluster(3)
    ring = net.nodes["n1"].ring.token_map()
    # One token just before each token of the ring: every primary would be the joiner's.
    greedy = tuple(sorted({(t - 1) % TOKEN_SPACE for ts in ring.values() for t in ts}))
    net.nodes["n1"].receive("n9", JoinRequest(stranger(greedy), 32), net.now)
    admitted = net.nodes["n1"].members.get("n9")
    assert admitted is not None and admitted.status == JOINING
    assert admitted.key == STRANGER.public_key and admitted.author == "n1"
    assert not set(admitted.tokens) & set(greedy)
    assert len(admitted.tokens) == 32
    assert not set(admitted.tokens) & {t for ts in ring.values() for t in ts}


def test_a_joiner_asking_for_more_vnodes_than_the_cluster_uses_gets_the_cluster_count() -> None:
    net = cluster(3)
    configured = net.nodes["n1"].config.vnodes
    net.nodes["n1"].receive("n9", JoinRequest(stranger(), MAX_VNODES), net.now)
    admitted = net.nodes["n1"].members.get("n9")
    assert admitted is not None and admitted.key == STRANGER.public_key
    assert len(admitted.tokens) == configured


def test_a_joiner_asking_for_millions_of_tokens_is_refused() -> None:
    net = cluster(3)
    [refusal] = net.nodes["n1"].receive("n9", JoinRequest(stranger(), 10**6), net.now)
    assert isinstance(refusal, Send) and isinstance(refusal.msg, JoinReply)
    assert not refusal.msg.ok and "n9" not in net.nodes["n1"].members
    with pytest.raises(wire.WireError):  # a record with that many tokens never decodes
        wire.decode(wire.encode(JoinRequest(stranger(tuple(range(MAX_VNODES + 1))), 8)))


# --- joins: the joiner trusts only the seed it asked -----------------------------------


def _forged_reply(net: MemNet, n: int, r: int, w: int) -> JoinReply:
    records = tuple(net.nodes["n1"].members.members())
    me = Member("n4", "127.0.0.1:8004", "127.0.0.1:9004", (1, 2, 3), JOINING, 1, 5)
    return JoinReply(True, "", (*records, me), n, r, w)


@pytest.mark.parametrize("quorums", [(0, 0, 0), (3, 2, 2)])
def test_a_join_reply_the_joiner_did_not_ask_for_is_ignored(
        quorums: tuple[int, int, int]) -> None:
    net = cluster(3)
    joiner = net.add("n4", ("127.0.0.1:9001",))
    joiner.receive("n3", _forged_reply(net, *quorums), net.now)  # n3: not its seed
    assert not joiner.joined and (joiner.n, joiner.r, joiner.w) == (3, 2, 2)
    assert joiner.members.get("n4") is None or not joiner.members.get("n4").tokens  # type: ignore[union-attr]
    net.settle()  # the real seed's answer still lets it in, with the cluster's n/r/w
    assert joiner.joined and (joiner.n, joiner.r, joiner.w) == (3, 2, 2)
    assert status_of(net, "n1", "n4") == UP


def test_a_join_reply_with_impossible_quorums_does_not_decode() -> None:
    for n, r, w in ((0, 0, 0), (3, 4, 2), (3, 2, 0), (2**40, 1, 1)):
        frame = wire.encode(JoinReply(True, "", (), n, r, w))
        with pytest.raises(wire.WireError):
            wire.decode(frame)


def test_impossible_quorums_saved_on_disk_are_not_trusted() -> None:
    net = cluster(3)
    net.crash("n2")
    store = KeyStore(net.engines["n2"])
    store.put_meta("cluster", {"n": 0, "r": 0, "w": 9})
    engine = net.engines["n2"]
    engine.commit(engine.seal())
    node = net.restart("n2")
    assert node.joined and (node.n, node.r, node.w) == (3, 2, 2)
    net.run_for(1.0)
    assert serves(net, "n2")


# --- leaving: SyncDone only from an heir that was asked --------------------------------


def test_a_forged_sync_done_does_not_let_a_leaver_go() -> None:
    net = cluster(5)
    for i in range(50):
        put(net, "n1", f"k{i}".encode(), b"v")
    net.down.add("n4")  # an heir that cannot answer: the leave must wait for it
    net.run_for(1.0)
    error, effects = net.nodes["n3"].start_leave(net.now)
    assert error is None
    net._apply("n3", effects)
    net.run_for(2.0)
    transfers = net.nodes["n3"].transfers
    assert "n4" in transfers.waiting_for()
    fp = transfers._pending_fp
    non_heirs = sorted(set(net.nodes["n3"].pending.nodes) - transfers._heirs() - {"n3"})
    for src in ["n4", "n9", *non_heirs]:  # the heir's name without the transfer id, others
        for transfer_id in (0, 1, 2**63):
            net._apply("n3", transfers.receive(src, SyncDone(fp, transfer_id), net.now))
    net._apply("n3", net.nodes["n3"].tick(net.now))
    assert status_of(net, "n3", "n3") == "leaving" and "n4" in transfers.waiting_for()
    net.down.discard("n4")
    net.settle()
    assert status_of(net, "n1", "n3") == "left"


# --- one change at a time, never below N ----------------------------------------------


def test_three_leaves_at_once_in_a_three_node_cluster_are_all_refused() -> None:
    net = cluster(3)
    errors = []
    for node in ("n1", "n2", "n3"):
        error, effects = net.nodes[node].start_leave(net.now)
        errors.append(error)
        net._apply(node, effects)
    assert all(e is not None and "fewer than" in e for e in errors), errors
    net.run_for(2.0)
    for viewer in ("n1", "n2", "n3"):
        for node in ("n1", "n2", "n3"):
            assert status_of(net, viewer, node) == UP
    assert serves(net, "n2")


def test_three_leaves_at_once_in_a_five_node_cluster_let_at_most_one_go() -> None:
    net = cluster(5)
    for i in range(60):
        put(net, "n1", f"k{i}".encode(), b"v")
    for node in ("n3", "n4", "n5"):  # in the same instant: none has heard of the others
        _, effects = net.nodes[node].start_leave(net.now)
        net._apply(node, effects)
    net.settle(limit=30.0)
    left = sorted(m.node_id for m in net.nodes["n1"].members.members() if m.status == "left")
    assert len(left) <= 1, left
    assert sum(status_of(net, "n1", n) == UP for n in net.nodes) >= 3
    assert serves(net, "n2")


def test_a_leave_or_removal_while_another_leave_is_in_flight_names_it() -> None:
    net = cluster(5)
    net.down.add("n5")  # an heir that cannot answer keeps n3's leave in flight
    net.run_for(1.0)
    _, effects = net.nodes["n3"].start_leave(net.now)
    net._apply("n3", effects)
    net.run_for(0.5)
    assert status_of(net, "n1", "n3") == "leaving"
    error, effects = net.nodes["n4"].start_leave(net.now)
    assert error is not None and "n3" in error and effects == []
    error, effects = net.nodes["n1"].remove_member("n5", net.now)
    assert error is not None and "n3" in error and effects == []
    assert status_of(net, "n1", "n5") == UP and status_of(net, "n4", "n4") == UP


def test_a_leave_at_n_members_is_refused() -> None:
    net = cluster(4)
    net.crash("n4")
    net.run_for(1.5)
    error, effects = net.nodes["n1"].remove_member("n4", net.now)
    assert error is None
    net._apply("n1", effects)
    net.settle()
    error, effects = net.nodes["n2"].start_leave(net.now)
    assert error is not None and "fewer than" in error and effects == []
    assert status_of(net, "n2", "n2") == UP


def test_removing_a_member_this_node_hears_from_is_refused() -> None:
    net = cluster(4)
    error, effects = net.nodes["n1"].remove_member("n3", net.now)
    assert error is not None and "up" in error and effects == []
    assert status_of(net, "n1", "n3") == UP


def test_a_node_cut_off_from_the_others_cannot_remove_them() -> None:
    net = cluster(5)
    net.down.add("n1")  # n1 hears from no one: to n1 every other member looks down
    net.run_for(1.5)
    assert not net.nodes["n1"].is_up("n2", net.now)
    error, effects = net.nodes["n1"].remove_member("n2", net.now)
    assert error is not None and "cut off" in error and effects == []
    assert status_of(net, "n1", "n2") == UP
