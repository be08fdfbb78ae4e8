"""Anti-entropy between real nodes in memory: repair without reads, deletes, TTL.

Every test checks replicas' local records (`KeyStore.get_record`), never a client read,
so read repair cannot be what brought them together.
"""

from __future__ import annotations

from coordinator.messages import ReplicaPut
from coordinator.requests import ReadOk, ReadRequest, WriteOk, WriteRequest
from ring.token import key_token
from storage.record import Record
from storage.versions import EMPTY_CONTEXT, Context, Versions, update
from tests.support.memnet import MemNet


def cluster(count: int = 3) -> MemNet:
    net = MemNet(seed=5)
    net.start(count)
    net.run_for(1.0)
    return net


def put(net: MemNet, node: str, key: bytes, value: bytes | None, ctx=EMPTY_CONTEXT,
        ttl: int | None = None):
    resp = net.request(node, WriteRequest(key, value, "text/plain", ctx, None, ttl))
    assert isinstance(resp, WriteOk), resp
    return resp


def local(net: MemNet, node: str, key: bytes) -> Versions | None:
    record = net.nodes[node].store.get_record(key_token(key), key)
    return None if record is None else record.versions


def same_everywhere(net: MemNet, key: bytes) -> bool:
    states = [local(net, n, key) for n in sorted(net.nodes)]
    first = states[0]
    return all(s is not None and first is not None and s.same_as(first) for s in states)


def drop_hints(net: MemNet) -> None:
    for node in net.nodes.values():
        for target in node.store.hint_targets():
            for hkey in list(node.store.hint_index.get(target, ())):
                node.store.delete_hint(hkey)


def test_lost_records_come_back_without_reads() -> None:
    net = cluster()
    keys = [f"k{i}".encode() for i in range(60)]
    for k in keys:
        put(net, "n1", k, b"v" + k)
    lost = keys[::6]
    store = net.nodes["n2"].store
    for k in lost:
        store.delete_record(key_token(k), k)
    assert all(local(net, "n2", k) is None for k in lost)
    net.run_for(4.0)
    assert all(same_everywhere(net, k) for k in keys)
    ae = net.nodes["n2"].anti_entropy.stats
    others = sum(net.nodes[n].anti_entropy.stats.keys_repaired for n in ("n1", "n3"))
    assert ae.keys_repaired + others >= len(lost)
    # Repaired keys only: nobody sent anything like the whole data set.
    sent = sum(n.anti_entropy.stats.keys_sent for n in net.nodes.values())
    assert sent < len(keys)


def test_trees_agree_once_replicas_agree() -> None:
    net = cluster()
    for i in range(30):
        put(net, "n2", f"t{i}".encode(), b"x")
    net.run_for(2.0)
    roots = [{r: t.root for r, t in n.anti_entropy.trees.items()} for n in net.nodes.values()]
    shared = set(roots[0]) & set(roots[1]) & set(roots[2])
    assert shared
    assert all(roots[0][r] == roots[1][r] == roots[2][r] for r in shared)


def test_replica_that_missed_a_delete_agrees_and_tombstone_is_compacted() -> None:
    net = cluster()
    key = b"gone"
    ctx = put(net, "n1", key, b"alive").context
    net.run_for(0.5)
    net.down.add("n3")
    net.run_for(1.0)
    put(net, "n1", key, None, ctx)  # a delete with the context of the live write
    drop_hints(net)  # the delete must reach n3 by anti-entropy alone
    net.down.discard("n3")
    live_before = local(net, "n3", key)
    assert live_before is not None and live_before.live(int(net.now * 1000))
    net.run_for(4.0)
    for n in net.nodes:
        state = local(net, n, key)
        assert state is not None and not state.live(int(net.now * 1000)), n
    # After the grace period (2 s in the test profile) and confirmation from every
    # replica, the tombstone is dropped and the causal context stays.
    net.run_for(6.0)
    for n in net.nodes:
        state = local(net, n, key)
        assert state is not None and state.siblings == () and state.context, (n, state)
    # A late copy of the deleted live version (an old hint) cannot bring it back.
    node = net.nodes["n3"]
    net._apply("n3", node.receive("n2", ReplicaPut(0, key, live_before, None), net.now))
    net.run_for(3.0)
    for n in net.nodes:
        state = local(net, n, key)
        assert state is not None and not state.live(int(net.now * 1000)), n
    resp = net.request("n1", ReadRequest(key, 3))
    assert not isinstance(resp, ReadOk)


def test_expired_versions_become_the_same_tombstone_everywhere() -> None:
    net = cluster()
    key = b"short"
    put(net, "n1", key, b"brief", ttl=1)
    net.run_for(2.5)
    states = [local(net, n, key) for n in sorted(net.nodes)]
    for s in states:
        assert s is not None and all(sib.value is None for sib in s.siblings), s
    assert same_everywhere(net, key)
    assert sum(n.anti_entropy.stats.expired for n in net.nodes.values()) >= 1


def test_truncated_leaves_and_small_batches_still_converge(monkeypatch) -> None:
    # Tiny limits force every path of the pacing: leaves listed in part, pushes cut.
    from ringkv.core import anti_entropy

    monkeypatch.setattr(anti_entropy, "MAX_LEAF_KEYS", 1)
    monkeypatch.setattr(anti_entropy, "MAX_KEYS", 5)
    monkeypatch.setattr(anti_entropy, "MAX_NODES", 20)
    net = MemNet(seed=9)
    net.start(3, vnodes=1)
    net.run_for(1.0)
    keys = [f"many-{i}".encode() for i in range(1500)]
    versions, _ = update(None, Context(), ("w", 1, 1), b"v", "text/plain", 5)
    for node in ("n1", "n3"):
        store = net.nodes[node].store
        for k in keys:
            store.put_record(key_token(k), k, Record(versions))
        net._commit(node)
    net.run_for(30.0)
    assert all(local(net, "n2", k) is not None for k in keys)
    assert all(same_everywhere(net, k) for k in keys)


def test_pushes_are_bounded_in_bytes() -> None:
    from ringkv.core.anti_entropy import MAX_PUSH_BYTES, _bounded

    big, _ = update(None, Context(), ("w", 1, 1), b"x" * (1 << 20), "text/plain", 5)
    items = [(b"k%d" % i, big) for i in range(20)]
    cut = _bounded(items)
    assert 1 <= len(cut) < len(items)
    assert sum(len(v.siblings[0].value or b"") for _, v in cut) <= MAX_PUSH_BYTES
    assert _bounded(items[:1]) == items[:1]
