"""The node's coordinator paths, driven in memory with a virtual clock (no sockets)."""

from __future__ import annotations

from coordinator.requests import (
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    Rejected,
    WriteOk,
    WriteRequest,
)
from ring.token import key_token
from storage.keys import data_key
from storage.versions import EMPTY_CONTEXT
from tests.support.memnet import MemNet


def put(net, node, key, value, ctx=EMPTY_CONTEXT, w=None):
    return net.request(node, WriteRequest(key, value, "text/plain", ctx, w))


def get(net, node, key, r=None):
    return net.request(node, ReadRequest(key, r))


def values(resp):
    assert isinstance(resp, ReadOk), resp
    return sorted(s.value for s in resp.siblings)


def cluster(count=5, **kw):
    net = MemNet(seed=3)
    net.start(count, **kw)
    net.run_for(1.0)
    for node in net.nodes.values():
        assert node.joined and len(node.members.members()) == count
    return net


def test_join_gives_every_node_the_same_ring():
    net = cluster()
    rings = {tuple(sorted(n.ring.token_map().items())) for n in net.nodes.values()}
    assert len(rings) == 1


def test_read_your_write_through_another_node():
    net = cluster()
    assert isinstance(put(net, "n1", b"k", b"v"), WriteOk)
    for node in net.nodes:
        assert values(get(net, node, b"k")) == [b"v"]


def test_blind_writes_are_siblings_and_context_write_resolves():
    net = cluster()
    put(net, "n1", b"k", b"a")
    put(net, "n4", b"k", b"b")
    resp = get(net, "n2", b"k")
    assert values(resp) == [b"a", b"b"]
    put(net, "n5", b"k", b"c", ctx=resp.context)
    assert values(get(net, "n3", b"k", r=3)) == [b"c"]


def test_writer_context_keeps_the_other_writers_sibling():
    net = cluster()
    ok_a = put(net, "n1", b"k", b"a")
    put(net, "n2", b"k", b"b")
    put(net, "n3", b"k", b"a2", ctx=ok_a.context)
    assert values(get(net, "n4", b"k", r=3)) == [b"a2", b"b"]


def test_delete_is_not_found_with_context_and_a_later_write_supersedes_it():
    net = cluster()
    put(net, "n1", b"k", b"a")
    ctx = get(net, "n2", b"k").context
    assert isinstance(net.request("n3", WriteRequest(b"k", None, "", ctx)), WriteOk)
    gone = get(net, "n4", b"k")
    assert isinstance(gone, NotFound) and gone.context is not None
    put(net, "n5", b"k", b"again", ctx=gone.context)
    assert values(get(net, "n1", b"k", r=3)) == [b"again"]


def test_quorum_out_of_range_is_rejected():
    net = cluster()
    assert isinstance(put(net, "n1", b"k", b"v", w=4), Rejected)
    assert isinstance(get(net, "n1", b"k", r=0), Rejected)


def test_sloppy_quorum_hints_and_handoff():
    net = cluster()
    key = b"hinted"
    primaries = net.nodes["n1"].preference_list(key)
    down = primaries[:2]
    net.down.update(down)
    net.run_for(1.0)  # failure detection
    coordinator = next(n for n in net.nodes if n not in down)
    assert isinstance(put(net, coordinator, key, b"v"), WriteOk)
    holders = [n for n, node in net.nodes.items() if node.store.hints_pending()]
    assert holders and not set(holders) & set(down)
    net.down.clear()
    net.run_for(2.0)
    for n in down:
        rec = net.nodes[n].store.get_record(key_token(key), key)
        assert rec is not None and [s.value for s in rec.versions.siblings] == [b"v"]
    assert sum(node.store.hints_pending() for node in net.nodes.values()) == 0
    assert sum(node.stats.hints_delivered for node in net.nodes.values()) >= 2


def test_below_quorum_is_quorum_failed_with_counts():
    net = cluster()
    key = b"k"
    primaries = net.nodes["n1"].preference_list(key)
    others = [n for n in net.nodes if n not in primaries]
    # Every node but one primary is unreachable, but not yet detected as down.
    net.down.update(n for n in net.nodes if n != primaries[0])
    resp = put(net, primaries[0], key, b"v")
    assert isinstance(resp, QuorumFailed) and resp.acks == 1 and resp.required == 2
    assert others


def test_read_repair_restores_a_replica_that_lost_a_record():
    net = cluster()
    key = b"repair-me"
    put(net, "n1", key, b"v")
    victim = net.nodes["n1"].preference_list(key)[2]
    net.engines[victim].delete("data", data_key(key_token(key), key))
    assert net.nodes[victim].store.get_record(key_token(key), key) is None
    assert values(get(net, "n1", key, r=3)) == [b"v"]
    net.run_for(0.2)
    rec = net.nodes[victim].store.get_record(key_token(key), key)
    assert rec is not None and [s.value for s in rec.versions.siblings] == [b"v"]
    assert sum(n.stats.read_repairs for n in net.nodes.values()) >= 1


def test_a_node_that_lost_its_disk_rejoins_and_fetches_its_ranges_without_reads():
    net = cluster()
    keys = [f"k{i}".encode() for i in range(60)]
    for key in keys:
        put(net, "n1", key, b"v")
    victim = "n4"
    mine = [k for k in keys if victim in net.nodes["n1"].preference_list(k)]
    net.crash(victim, lose_disk=True)
    net.restart(victim)
    # Its new key is taken once its old life is judged down (a seed's join of a member
    # still heard from would be a hijack), a few seconds.
    for _ in range(200):
        if net.nodes["n1"].members.get(victim).status == "joining":
            break
        net.run_for(0.1)
    # Back with no data: joining, so reads do not ask it, while writes reach it.
    assert net.nodes["n1"].members.get(victim).status == "joining"
    assert victim not in net.nodes["n1"].preference_list(mine[0])
    net.settle()
    node = net.nodes[victim]
    for key in mine:
        rec = node.store.get_record(key_token(key), key)
        assert rec is not None and [s.value for s in rec.versions.siblings] == [b"v"]
    assert node.transfers.stats.keys_received >= len(mine)
    assert sum(n.stats.read_repairs for n in net.nodes.values()) == 0


def test_restart_keeps_data_and_place_in_ring():
    net = cluster()
    put(net, "n2", b"k", b"v")
    tokens = net.nodes["n3"].ring.tokens_of("n3")
    for n in list(net.nodes):
        net.crash(n)
    for n in sorted(net.engines):
        net.restart(n)
    net.run_for(1.0)
    assert net.nodes["n3"].ring.tokens_of("n3") == tokens
    assert values(get(net, "n4", b"k", r=3)) == [b"v"]


def test_lost_disk_node_reuses_no_counter():
    net = cluster()
    key = b"k"
    coord = net.nodes["n1"].preference_list(key)[0]
    ok = put(net, coord, key, b"a")
    actor_before = next(iter(ok.context.vector))
    net.crash(coord, lose_disk=True)
    net.restart(coord)
    net.run_for(1.0)
    for _ in range(200):  # rejoined once its old life is judged down (its key is new)
        if net.nodes[coord].joined:
            break
        net.run_for(0.1)
    ok2 = put(net, coord, key, b"b")  # blind: must be a sibling, never overwrite a
    assert values(get(net, "n5", key, r=3)) == [b"a", b"b"]
    actors = set(ok2.context.vector) | {a for a, _ in ok2.context.cloud}
    assert actor_before not in actors or actor_before[1] != net.nodes[coord].generation


def test_one_seed_list_for_every_node_founds_exactly_one_cluster():
    net = MemNet(seed=5)
    seeds = ("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")
    for i in range(1, 5):
        net.add(f"n{i}", seeds)
    net.run_for(3.0)
    for node in net.nodes.values():
        assert node.joined and node.members.ids() == ["n1", "n2", "n3", "n4"]
    assert isinstance(put(net, "n4", b"k", b"v"), WriteOk)
    assert values(get(net, "n2", b"k")) == [b"v"]


def test_garbage_context_in_forwarded_write_never_reaches_the_node():
    import pytest

    from ringkv.core import wire

    with pytest.raises(wire.WireError):
        wire.decode(b"\x92\x14\x92\x01\x97\xa1k\xc0\xa0\xa3!!!\xc0\xc0\xc0")


def test_valid_but_hostile_messages_never_crash_a_node():
    """Messages that decode fine but make no sense (wrong ids, unknown peers)."""
    import random as _random

    import msgpack

    from ringkv.core import wire
    from tests.unit.core.test_wire import MESSAGES, mutate

    net = cluster(3)
    node = net.nodes["n2"]
    rng = _random.Random(4)
    for i in range(3000):
        msg = rng.choice(MESSAGES)
        doc = msgpack.unpackb(wire.encode(msg), raw=False)
        if i % 2:
            doc = mutate(doc, rng)
        try:
            decoded = wire.decode(msgpack.packb(doc, use_bin_type=True))
        except wire.WireError:
            continue
        node.receive(rng.choice(["n1", "n3", "stranger"]), decoded, net.now)
    net.run_for(1.0)
    assert isinstance(put(net, "n2", b"still", b"works"), WriteOk)
    assert values(get(net, "n3", b"still")) == [b"works"]


def test_lww_mode_silently_drops_concurrent_writes():
    net = cluster(conflict="lww")
    put(net, "n1", b"k", b"first")
    net.run_for(0.01)
    put(net, "n4", b"k", b"second")
    assert values(get(net, "n2", b"k", r=3)) == [b"second"]


def test_replica_that_never_acked_gets_the_write_by_hint():
    net = cluster()
    key = b"dropped"
    coord, _, lagging = net.nodes["n1"].preference_list(key)
    # The lagging replica is up but every message to it is lost for a while.
    net.down.add(lagging)
    assert isinstance(put(net, coord, key, b"v"), WriteOk)
    net.run_for(0.1)
    net.down.clear()  # back before failure detection ever noticed
    net.run_for(3.0)
    rec = net.nodes[lagging].store.get_record(key_token(key), key)
    assert rec is not None and [s.value for s in rec.versions.siblings] == [b"v"]
    assert net.nodes[coord].store.hints_pending() == 0


def test_restart_never_reissues_a_dot_lost_between_fan_out_and_commit():
    """The simulation's seed 57 (faults `torn`), in miniature."""
    net = cluster()
    key = b"torn"
    coord = net.nodes["n1"].preference_list(key)[0]
    put(net, coord, key, b"one")
    # Coordinate a write, let its fan-out leave, and crash before the local commit.
    cid = 10_000
    effects = net.nodes[coord].client_request(
        cid, WriteRequest(key, b"two", "text/plain", EMPTY_CONTEXT), net.now)
    engine = net.engines[coord]
    net.engines[coord] = engine.crash_copy()  # staged writes are gone
    for e in effects:
        if hasattr(e, "msg") and not e.durable and e.dst != coord:
            from ringkv.core import wire
            net._at(0.001, "msg", (coord, e.dst, wire.encode(e.msg)))
    del net.nodes[coord]
    net.run_for(0.1)
    net.restart(coord)
    net.run_for(1.0)
    put(net, coord, key, b"three")  # blind: must not reuse the lost write's dot
    assert values(get(net, "n5", key, r=3)) == [b"one", b"three", b"two"]


def test_primary_with_no_reachable_fallback_gets_a_hint():
    net = cluster(3)  # every node is a primary: no fallbacks exist
    key = b"k"
    victim = net.nodes["n1"].preference_list(key)[2]
    net.down.add(victim)
    net.run_for(1.0)
    coord = next(n for n in net.nodes if n != victim)
    assert isinstance(put(net, coord, key, b"v"), WriteOk)
    net.down.clear()
    net.run_for(2.0)
    rec = net.nodes[victim].store.get_record(key_token(key), key)
    assert rec is not None and [s.value for s in rec.versions.siblings] == [b"v"]


def test_duplicated_forward_is_coordinated_once():
    from coordinator.messages import ForwardWrite
    from ringkv.core import wire

    net = cluster()
    key = b"fwd"
    outsider = next(n for n in net.nodes if n not in net.nodes["n1"].preference_list(key))
    coord = net.nodes["n1"].preference_list(key)[0]
    fwd = ForwardWrite(77, WriteRequest(key, b"v", "text/plain", EMPTY_CONTEXT, 2))
    for _ in range(2):
        net._at(0.001, "msg", (outsider, coord, wire.encode(fwd)))
    net.run_for(0.5)
    assert values(get(net, "n2", key, r=3)) == [b"v"]
