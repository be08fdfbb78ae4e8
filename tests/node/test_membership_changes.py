"""Joins, leaves and removals that move data, driven in memory (no sockets).

What must hold: a range in transit misses no acknowledged write, the new owners end up
holding every key without any read, no spurious siblings appear, and the node that
left or was removed is named by no preference list.
"""

from __future__ import annotations

from coordinator.requests import ReadOk, ReadRequest, WriteOk, WriteRequest
from ring.token import key_token
from storage.versions import EMPTY_CONTEXT
from tests.support.memnet import MemNet


def put(net: MemNet, node: str, key: bytes, value: bytes) -> object:
    return net.request(node, WriteRequest(key, value, "text/plain", EMPTY_CONTEXT, None))


def local_values(net: MemNet, node: str, key: bytes) -> list[bytes | None]:
    rec = net.nodes[node].store.get_record(key_token(key), key)
    return [] if rec is None else sorted(s.value or b"" for s in rec.versions.siblings)


def assert_replicated(net: MemNet, written: dict[bytes, bytes], viewer: str = "n1") -> None:
    """Every key is held, alone, by each of its N current replicas."""
    for key, value in written.items():
        for replica in net.nodes[viewer].preference_list(key):
            assert local_values(net, replica, key) == [value], (key, replica)


def statuses(net: MemNet, viewer: str) -> dict[str, str]:
    return {m.node_id: m.status for m in net.nodes[viewer].members.members()}


def started(count: int) -> MemNet:
    net = MemNet(seed=11)
    net.start(count)
    return net


def test_a_join_under_writes_loses_nothing_and_ends_with_every_replica_full() -> None:
    net = started(4)
    written = {f"pre{i}".encode(): b"old" for i in range(150)}
    for key, value in written.items():
        assert isinstance(put(net, "n1", key, value), WriteOk)
    net.add("n5", ("127.0.0.1:9001",))
    # Keep writing, through every node, while n5 joins and fetches its ranges.
    i = 0
    while not net.settled():
        key = f"during{i}".encode()
        assert isinstance(put(net, f"n{1 + i % 4}", key, b"new"), WriteOk)
        written[key] = b"new"
        i += 1
        assert i < 2000, "join did not finish"
    assert i > 10  # the join really overlapped writes
    assert all(s == "up" for s in statuses(net, "n3").values())
    assert net.nodes["n5"].transfers.stats.keys_received > 0
    assert_replicated(net, written)  # on every new replica, no siblings, no reads
    assert sum(n.stats.read_repairs for n in net.nodes.values()) == 0


def test_a_leave_hands_every_range_over_then_the_node_is_left_everywhere() -> None:
    net = started(5)
    written = {f"k{i}".encode(): f"v{i}".encode() for i in range(200)}
    for key, value in written.items():
        put(net, "n2", key, value)
    error, effects = net.nodes["n3"].start_leave(net.now)
    assert error is None
    net._apply("n3", effects)
    net.run_for(0.1)
    assert statuses(net, "n1")["n3"] == "leaving"
    net.settle()
    for viewer in ("n1", "n2", "n4", "n5"):
        assert statuses(net, viewer)["n3"] == "left"
        assert "n3" not in net.nodes[viewer].ring.nodes
    assert_replicated(net, written)
    for key, value in written.items():
        resp = net.request("n4", ReadRequest(key, 3))
        assert isinstance(resp, ReadOk) and [s.value for s in resp.siblings] == [value]
        assert "n3" not in net.nodes["n4"].preference_list(key)


def test_a_leave_waits_for_an_heir_that_is_down() -> None:
    net = started(5)
    for i in range(50):
        put(net, "n1", f"k{i}".encode(), b"v")
    net.down.add("n4")
    net.run_for(1.0)
    _, effects = net.nodes["n3"].start_leave(net.now)
    net._apply("n3", effects)
    net.run_for(3.0)
    assert statuses(net, "n3")["n3"] == "leaving"
    assert "n4" in net.nodes["n3"].transfers.waiting_for()
    net.down.discard("n4")
    net.settle()
    assert statuses(net, "n1")["n3"] == "left"


def test_removing_a_dead_node_re_replicates_its_ranges_from_the_survivors() -> None:
    net = started(5)
    written = {f"k{i}".encode(): b"v" for i in range(200)}
    for key, value in written.items():
        put(net, "n1", key, value)
    net.crash("n2")  # for good
    net.run_for(1.5)  # long enough for the others to judge it down
    error, _ = net.nodes["n1"].remove_member("n1", net.now)
    assert error is not None  # a node cannot remove itself
    error, _ = net.nodes["n1"].remove_member("n3", net.now)
    assert error is not None and "up" in error  # nor a node that is alive
    error, effects = net.nodes["n1"].remove_member("n2", net.now)
    assert error is None
    net._apply("n1", effects)
    net.settle()
    for viewer in ("n1", "n3", "n4", "n5"):
        assert statuses(net, viewer)["n2"] == "left"
    assert_replicated(net, written)
    assert sum(n.transfers.stats.keys_received for n in net.nodes.values()) > 0


def test_a_joiner_that_crashes_mid_transfer_resumes_where_it_stopped() -> None:
    net = started(4)
    for i in range(400):
        put(net, "n1", f"k{i:04d}".encode(), b"x" * 200)
    net.add("n5", ("127.0.0.1:9001",))
    transfers = net.nodes["n5"].transfers
    while transfers.stats.keys_received == 0:  # until the fetch has started
        net.step()
    fetched_before = transfers.stats.keys_received
    assert transfers.view()["syncing"]
    net.crash("n5")
    net.run_for(0.5)
    net.restart("n5")
    assert statuses(net, "n5")["n5"] == "joining"  # a restart keeps the status
    net.settle()
    assert statuses(net, "n1")["n5"] == "up"
    fetched_after = net.nodes["n5"].transfers.stats.keys_received
    total = sum(1 for i in range(400)
                if "n5" in net.nodes["n1"].preference_list(f"k{i:04d}".encode()))
    assert fetched_after < total  # resumed: not everything was fetched again
    assert fetched_before + fetched_after >= total


def test_the_last_node_cannot_leave() -> None:
    net = started(1)
    error, effects = net.nodes["n1"].start_leave(net.now)
    assert error is not None and effects == []


def test_a_node_that_left_and_is_started_again_joins_again() -> None:
    net = started(5)
    written = {f"k{i}".encode(): b"v" for i in range(100)}
    for key, value in written.items():
        put(net, "n1", key, value)
    _, effects = net.nodes["n4"].start_leave(net.now)
    net._apply("n4", effects)
    net.settle()
    assert statuses(net, "n1")["n4"] == "left"
    fresh = {f"after{i}".encode(): b"w" for i in range(100)}
    for key, value in fresh.items():  # written while n4 is gone: it has none of them
        put(net, "n2", key, value)
    net.crash("n4")
    net.restart("n4")  # same data dir
    assert statuses(net, "n4")["n4"] == "joining"
    net.settle()
    assert all(s == "up" for s in statuses(net, "n1").values())
    assert "n4" in net.nodes["n1"].ring.nodes
    assert_replicated(net, written | fresh)
    assert net.nodes["n4"].transfers.stats.keys_received > 0


def test_a_node_still_fetching_a_range_refuses_to_serve_it() -> None:
    from ring.transition import TokenSet
    from ringkv.core.transfer_wire import RangeBatch, RangeBusy, RangeFetch

    net = started(4)
    for i in range(300):
        put(net, "n1", f"k{i}".encode(), b"v")
    net.add("n5", ("127.0.0.1:9001",))
    transfers = net.nodes["n5"].transfers
    while transfers.stats.keys_received == 0:
        net.step()
    sync = transfers._sync
    assert sync is not None and sync.queue
    piece = sync.queue[-1]
    # Asked for a range it is still fetching (a removal can make such a node a
    # source): it refuses, rather than hand over part of the range as the whole.
    [busy] = transfers.receive("n1", RangeFetch(7, piece.start, piece.end, None, 10),
                               net.now)
    assert busy.msg == RangeBusy(7)  # type: ignore[union-attr]
    # A range it is not fetching (a gap between its pieces) is served as usual.
    fetching = TokenSet()
    for p in [*sync.queue, *(f.piece for f in transfers._fetches.values())]:
        fetching.add(p.start, p.end)
    gap_start, gap_end = fetching.missing(0, 0)[0]
    [batch] = transfers.receive("n1", RangeFetch(8, gap_start, gap_end, None, 10), net.now)
    assert isinstance(batch.msg, RangeBatch)  # type: ignore[union-attr]
    # The fetcher that is refused asks the next source instead.
    req_id, fetch = next(iter(transfers._fetches.items()))
    tries = fetch.piece.tries
    assert transfers.receive(fetch.source, RangeBusy(req_id), net.now) == []
    assert req_id not in transfers._fetches and fetch.piece.tries == tries + 1
    assert fetch.piece in sync.queue
    net.settle()
    assert statuses(net, "n1")["n5"] == "up"


def test_hints_for_a_removed_node_go_to_its_heirs() -> None:
    net = started(5)
    net.crash("n3")  # for good
    net.run_for(1.5)  # judged down by the others
    written = {}
    for i in range(60):
        key = f"h{i}".encode()
        if "n3" in net.nodes["n1"].preference_list(key):
            put(net, "n1", key, b"while n3 was down")  # a hint for n3 somewhere
            written[key] = b"while n3 was down"
    assert sum(n.store.hints_pending() for n in net.nodes.values()) > 0
    _, effects = net.nodes["n1"].remove_member("n3", net.now)
    net._apply("n1", effects)
    net.settle()
    # A node that left takes no hint again: each goes to the key's new replicas.
    for _ in range(100):
        if sum(n.store.hints_pending() for n in net.nodes.values()) == 0:
            break
        net.run_for(0.1)
    assert sum(n.store.hints_pending() for n in net.nodes.values()) == 0
    assert_replicated(net, written)
