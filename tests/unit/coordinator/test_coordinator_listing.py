"""Key listing without a node: the walk of the ring in stretches, the merge of replica
scans and what is certain from them, the replica's filtered scan, refused replies, and
the listing messages on the wire."""

from __future__ import annotations

import pytest

from coordinator.coordinator import Coordinator
from coordinator.effects import Effect, Reply, Send, SetTimer
from coordinator.listing import END, MAX_SCANS, START, past, stretch
from coordinator.listing_messages import (
    MAX_SCAN_ENTRIES,
    ReplicaScan,
    ReplicaScanReply,
    outline,
)
from coordinator.requests import ListOk, ListRequest, QuorumFailed, Rejected
from ring.token import MAX_TOKEN, key_token
from ringkv.core import wire
from storage.keys import data_key
from storage.namespace import COUNTER, DEFAULT_BUCKET, KV, META, SET, internal_key
from storage.record import Record
from storage.versions import EMPTY_CONTEXT, Versions, lww_resolve, merge, to_wire, update
from tests.unit.coordinator.fakes import NODES, NOW, RING, FakeHost

NOW_MS = int(NOW * 1000)
TOKENS = sorted({t for node in RING.nodes for t in RING.tokens_of(node)})


def written(value: bytes | None = b"v", actor: str = "w", base: Versions | None = None,
            context=EMPTY_CONTEXT, ms: int = NOW_MS - 5000,
            expires: int | None = None) -> Versions:
    state, _ = update(base, context, (actor, 1, 1), value, "text/plain", ms, expires)
    return state


def position(stored: bytes) -> tuple[int, bytes]:
    return key_token(stored), stored


class Cluster:
    """Five coordinators on the fake ring, each with its own store, and a synchronous
    network that delivers every message through the wire codec."""

    def __init__(self, r: int = 2) -> None:
        self.hosts = {n: FakeHost(n, r=r) for n in NODES}
        self.coords = {n: Coordinator(h, 7) for n, h in self.hosts.items()}
        self.down: set[str] = set()
        self.sent: list[tuple[str, str, object]] = []

    def set_down(self, *nodes: str) -> None:
        self.down = set(nodes)
        for host in self.hosts.values():
            host.down = set(nodes)

    def store(self, stored: bytes, state: Versions, on: list[str] | None = None) -> None:
        """`state` on the key's primaries (or on `on`)."""
        token = key_token(stored)
        for node in on if on is not None else RING.preference_list(token, 3):
            self.hosts[node].store.put_record(token, stored, Record(state))

    def run(self, origin: str, effects: list[Effect]) -> list[Reply]:
        queue = [(origin, e) for e in effects]
        answers: list[Reply] = []
        while queue:
            src, effect = queue.pop(0)
            if isinstance(effect, Reply):
                answers.append(effect)
            elif isinstance(effect, Send):
                self.sent.append((src, effect.dst, effect.msg))
                if effect.dst in self.down:
                    continue
                msg = wire.decode(wire.encode(effect.msg))
                dst = effect.dst
                queue.extend((dst, e) for e in self.coords[dst].receive(src, msg, NOW))
        return answers

    def request(self, node: str, req: ListRequest, client: int = 1) -> object:
        (answer,) = self.run(node, self.coords[node].client_request(client, req, NOW))
        assert answer.client_id == client
        return answer.response

    def list_all(self, node: str, bucket: str, kind: str, limit: int) -> list[bytes]:
        keys: list[bytes] = []
        after = None
        cursors = []
        for _ in range(2000):
            resp = self.request(node, ListRequest(bucket, kind, after, limit))
            assert isinstance(resp, ListOk), resp
            assert len(resp.keys) <= limit
            keys.extend(resp.keys)
            if resp.cursor is None:
                assert all(c.in_flight() == 0 for c in self.coords.values())
                return keys
            assert after is None or resp.cursor > after  # every page moves on
            cursors.append(resp.cursor)
            after = resp.cursor
        raise AssertionError("the listing never ended")


def keys_up_to(end: int, count: int, bucket: str = "b", kind: str = KV) -> list[bytes]:
    """`count` keys of (bucket, kind) with tokens <= `end`, in position order."""
    found: list[bytes] = []
    i = 0
    while len(found) < count:
        key = internal_key(bucket, kind, b"k%d" % i)
        if key_token(key) <= end:
            found.append(key)
        i += 1
    return sorted(found, key=position)


def user_keys_in_order(stored: list[bytes], bucket: str, kind: str) -> list[bytes]:
    prefix = len(internal_key(bucket, kind, b"x")) - 1
    return [k[prefix:] for k in sorted(stored, key=position)]


# --- the walk ----------------------------------------------------------------------------


def test_stretches_cover_the_ring_in_order_each_asked_of_r_shared_up_primaries() -> None:
    for down in (set(), {"c"}):
        token, covered, count = 0, [], 0
        while True:
            found = stretch(RING, TOKENS, 3, 2, token, MAX_TOKEN,
                            lambda node, down=down: node not in down)
            assert not isinstance(found, int)
            end, nodes = found
            assert end >= token and len(nodes) >= 2 and not set(nodes) & down
            # Every token of the stretch (each arc's first and last) has them as primaries.
            for t in [token, end] + [v for v in TOKENS if token <= v <= end] + [
                    v + 1 for v in TOKENS if token <= v < end]:
                assert set(nodes) <= set(RING.preference_list(t, 3)), (t, nodes)
            covered.append((token, end))
            count += 1
            if end == MAX_TOKEN:
                break
            token = end + 1
        # Contiguous from 0 to the last token, and stretches span several arcs.
        assert covered[0][0] == 0
        assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:], strict=False))
        # Fewer scans than the arcs (40 vnodes: 41 linear arcs) they cover.
        assert count <= (len(TOKENS) + 1) // 2


def test_a_stretch_stops_at_its_limit_and_reports_too_few_up_primaries() -> None:
    first = TOKENS[3]
    end, _ = stretch(RING, TOKENS, 3, 2, first - 10, first - 5, lambda n: True)
    assert end == first - 5
    primaries = RING.preference_list(first, 3)
    found = stretch(RING, TOKENS, 3, 2, first, MAX_TOKEN, lambda n: n == primaries[0])
    assert found == 1
    assert past(MAX_TOKEN) == END and past(5) == (6, b"")


# --- listing through replicas --------------------------------------------------------------


def test_following_the_cursor_lists_every_live_key_once_in_order_and_only_its_bucket() -> None:
    cl = Cluster()
    photos = [internal_key("photos", KV, b"p%03d" % i) for i in range(120)]
    plain = [internal_key(DEFAULT_BUCKET, KV, b"k%03d" % i) for i in range(60)]
    escaped = internal_key(DEFAULT_BUCKET, KV, b"\x00odd")  # the long form of bucket default
    others = [internal_key("photos", COUNTER, b"p001"), internal_key("photos", SET, b"s"),
              internal_key("photo", KV, b"p002"), internal_key("other", KV, b"p003")]
    for key in photos + plain + [escaped] + others:
        cl.store(key, written())
    for limit in (1, 7, 100, 1000):
        assert cl.list_all("a", "photos", KV, limit) == user_keys_in_order(photos, "photos", KV)
    assert sorted(cl.list_all("b", DEFAULT_BUCKET, KV, 13)) == sorted([*plain, b"\x00odd"])
    assert cl.list_all("c", "photos", COUNTER, 10) == [b"p001"]
    assert cl.list_all("d", "nothing", KV, 10) == []


def test_an_empty_bucket_walks_the_small_ring_in_one_request() -> None:
    cl = Cluster()
    assert cl.request("a", ListRequest("empty", KV, None, 10)) == ListOk((), None)
    asked = {msg.req_id for _, _, msg in cl.sent if isinstance(msg, ReplicaScan)}
    assert 1 < len(asked) <= MAX_SCANS


def _deletes_and_expiry(cl: Cluster) -> None:
    gone, kept, expired, raced = (internal_key("b", KV, k) for k in (b"gone", b"kept",
                                                                      b"expired", b"raced"))
    live = written(b"v")
    deleted = written(None, actor="d", base=live, context=live.context, ms=NOW_MS - 10)
    first, second, third = RING.preference_list(key_token(gone), 3)
    cl.store(gone, live, on=[first])
    cl.store(gone, deleted, on=[second, third])  # the delete saw the live version
    # Only one replica holds `kept`; the delete of `raced` did not see the concurrent
    # write the third replica holds, so the write survives it as a sibling.
    cl.store(kept, live, on=RING.preference_list(key_token(kept), 3)[2:])
    cl.store(raced, written(None, actor="d"), on=RING.preference_list(key_token(raced), 3)[:2])
    cl.store(raced, written(b"w", actor="x"), on=RING.preference_list(key_token(raced), 3)[2:])
    cl.store(expired, written(b"v", expires=NOW_MS - 1))


def test_a_delete_newer_on_one_replica_hides_the_key_live_on_another() -> None:
    cl = Cluster()
    _deletes_and_expiry(cl)
    first = RING.preference_list(key_token(internal_key("b", KV, b"gone")), 3)[0]
    for down in ((), (first,)):
        cl.set_down(*down)
        for viewer in NODES:
            if viewer not in down:
                listed = cl.list_all(viewer, "b", KV, 3)
                # Any two of the three replicas include one with the delete.
                assert b"gone" not in listed and b"expired" not in listed, viewer
    # With r=3 every replica answers: the key one replica holds, and the write that a
    # delete did not see, are certain.
    cl3 = Cluster(r=3)
    _deletes_and_expiry(cl3)
    assert cl3.list_all("e", "b", KV, 2) == user_keys_in_order(
        [internal_key("b", KV, b"kept"), internal_key("b", KV, b"raced")], "b", KV)


def test_states_are_resolved_as_a_read_resolves_them() -> None:
    # A write and a later concurrent delete: siblings, so listed; under last-write-wins
    # the delete wins, so a read finds nothing and the listing must not list it.
    cl = Cluster()
    key = internal_key("b", KV, b"k")
    cl.store(key, merge(written(b"v", actor="x", ms=NOW_MS - 50),
                        written(None, actor="y", ms=NOW_MS - 10)))
    assert cl.list_all("a", "b", KV, 5) == [b"k"]
    for host in cl.hosts.values():
        host.resolve = lambda k, state: lww_resolve(state)
    assert cl.list_all("a", "b", KV, 5) == []


def test_only_what_every_reply_reached_is_settled_and_the_rest_is_asked_again() -> None:
    cl = Cluster()
    coord = cl.coords["a"]
    effects = coord.client_request(1, ListRequest("b", KV, None, 5), NOW)
    (timer,) = [e for e in effects if isinstance(e, SetTimer)]
    scans = [e for e in effects if isinstance(e, Send)]
    scan = scans[0].msg
    assert isinstance(scan, ReplicaScan) and scan.after == START and scan.limit == 5
    asked = [s.dst for s in scans]
    inside = keys_up_to(scan.end, 3)
    v = written()
    full = ReplicaScanReply(scan.req_id, tuple((k, v) for k in inside), None)
    short = ReplicaScanReply(scan.req_id, ((inside[0], v),), position(inside[0]))
    assert coord.receive(asked[0], full, NOW) == []
    more = coord.receive(asked[1], short, NOW)
    # The second replica read only to the first key: the rest is asked again, from it.
    again = [e.msg for e in more if isinstance(e, Send)]
    assert again and all(isinstance(m, ReplicaScan) for m in again)
    assert again[0].after == position(inside[0]) and again[0].end == scan.end
    assert again[0].limit == 4  # one key of five is settled
    # At the deadline the page answers what is settled: the first key, cursor on it.
    user_key = inside[0][len(internal_key("b", KV, b"x")) - 1:]
    assert coord.timer(timer.key, NOW + 2) == [
        Reply(1, ListOk((user_key,), position(inside[0])))]
    assert coord.in_flight() == 0 and coord.listing.in_flight() == 0
    assert coord.receive(asked[0], full, NOW) == []  # too late: dropped


def test_a_page_of_nothing_settled_at_its_deadline_is_quorum_failed() -> None:
    cl = Cluster()
    coord = cl.coords["a"]
    effects = coord.client_request(1, ListRequest("b", KV, None, 5), NOW)
    (timer,) = [e for e in effects if isinstance(e, SetTimer)]
    scan = next(e for e in effects if isinstance(e, Send))
    coord.receive(scan.dst, ReplicaScanReply(scan.msg.req_id, (), None), NOW)
    assert coord.timer(timer.key, NOW + 2) == [Reply(1, QuorumFailed(
        1, 2, "too few replicas answered for a range of the ring"))]


def test_too_few_up_primaries_where_the_page_starts_is_quorum_failed_at_once() -> None:
    cl = Cluster()
    first, second, _ = RING.preference_list(0, 3)
    cl.set_down(first, second)
    viewer = next(n for n in NODES if n not in (first, second))
    resp = cl.request(viewer, ListRequest("b", KV, None, 5))
    assert resp == QuorumFailed(1, 2, "too few replicas reachable")


def test_a_page_stops_before_a_stretch_short_of_r_and_the_next_page_fails_there() -> None:
    cl = Cluster()
    keys = [internal_key("b", KV, b"k%d" % i) for i in range(200)]
    for key in keys:
        cl.store(key, written())
    # Find a token past the first stretch whose primaries are then two down nodes.
    target = TOKENS[len(TOKENS) // 2]
    primaries = RING.preference_list(target, 3)
    cl.set_down(*primaries[:2])
    viewer = next(n for n in NODES if n not in primaries[:2])
    first = cl.request(viewer, ListRequest("b", KV, None, 1000))
    assert isinstance(first, ListOk) and first.cursor is not None
    assert first.cursor[0] <= target
    expected = user_keys_in_order(keys, "b", KV)
    assert list(first.keys) == expected[:len(first.keys)]
    second = cl.request(viewer, ListRequest("b", KV, first.cursor, 1000))
    assert isinstance(second, QuorumFailed) and second.required == 2
    cl.set_down()
    rest = cl.request(viewer, ListRequest("b", KV, first.cursor, 1000))
    assert isinstance(rest, ListOk) and list(first.keys + rest.keys) == expected


@pytest.mark.parametrize("req, problem", [
    (ListRequest("bad bucket!", KV, None, 5), "bucket"),
    (ListRequest("b", META, None, 5), "cannot be listed"),
    (ListRequest("b", KV, None, 0), "limit"),
    (ListRequest("b", KV, None, MAX_SCAN_ENTRIES + 1), "limit"),
    (ListRequest("b", KV, (2**64, b""), 5), "cursor"),
    (ListRequest("b", KV, (5, b"x" * 5000), 5), "cursor"),
    (ListRequest("b", KV, None, 5, r=4), "quorum"),
])
def test_a_malformed_list_request_is_rejected(req: ListRequest, problem: str) -> None:
    resp = Cluster().request("a", req)
    assert isinstance(resp, Rejected) and problem in resp.message


# --- hostile replies ------------------------------------------------------------------------


def test_replies_not_well_formed_for_their_scan_are_refused() -> None:
    cl = Cluster()
    coord = cl.coords["a"]
    effects = coord.client_request(1, ListRequest("b", KV, None, 2), NOW)
    scans = [e for e in effects if isinstance(e, Send)]
    scan = scans[0].msg
    asked = [s.dst for s in scans]
    stranger = next(n for n in NODES if n not in asked)
    inside = keys_up_to(scan.end, 3)
    v = written()
    rid = scan.req_id
    bad = [
        (stranger, ReplicaScanReply(rid, (), None)),  # not asked
        (asked[0], ReplicaScanReply(rid + 999, (), None)),  # no such scan
        (asked[0], ReplicaScanReply(rid, ((inside[1], v), (inside[0], v)), None)),  # order
        (asked[0], ReplicaScanReply(rid, ((inside[0], v), (inside[0], v)), None)),  # twice
        (asked[0], ReplicaScanReply(rid, tuple((k, v) for k in inside), None)),  # > limit
        # Keys inside the range, in order, but of another bucket or kind.
        (asked[0], ReplicaScanReply(rid, ((keys_up_to(scan.end, 1, "c")[0], v),), None)),
        (asked[0], ReplicaScanReply(rid, ((keys_up_to(scan.end, 1, "b", SET)[0], v),), None)),
        (asked[0], ReplicaScanReply(rid, ((keys_up_to(scan.end, 1, DEFAULT_BUCKET)[0], v),),
                                    None)),
        (asked[0], ReplicaScanReply(rid, ((inside[1], v),), position(inside[0]))),  # behind
        (asked[0], ReplicaScanReply(rid, (), START)),  # reached nothing
        (asked[0], ReplicaScanReply(rid, (), (scan.end + 1, b"")) if scan.end < MAX_TOKEN
         else ReplicaScanReply(rid, (), (0, b""))),  # past the range
    ]
    outside = next(k for k in (internal_key("b", KV, b"o%d" % i) for i in range(500))
                   if key_token(k) > scan.end)
    bad.append((asked[0], ReplicaScanReply(rid, ((outside, v),), None)))
    for src, reply in bad:
        assert coord.receive(src, reply, NOW) == [], reply
    assert coord.listing.refused == len(bad) - 2  # the stranger's and the unknown id's
    # Honest replies are still taken; a second reply of one node is not.
    honest = ReplicaScanReply(rid, ((inside[0], v),), None)
    assert coord.receive(asked[0], honest, NOW) == []
    assert coord.receive(asked[0], honest, NOW) == []
    answer = coord.receive(asked[1], honest, NOW)
    assert any(isinstance(e, Send) for e in answer)  # the walk went on: settled


# --- the replica side -------------------------------------------------------------------------


def test_a_replica_scan_sends_outlined_states_of_its_bucket_and_how_far_it_read() -> None:
    host = FakeHost("a")
    coord = Coordinator(host, 7)
    keys = sorted((internal_key("b", KV, b"k%d" % i) for i in range(30)), key=position)
    noise = [internal_key("z", KV, b"k%d" % i) for i in range(30)]
    big = written(b"x" * 1000)
    for key in keys + noise:
        host.store.put_record(key_token(key), key, Record(big))
    (effect,) = coord.receive("x", ReplicaScan(9, START, MAX_TOKEN, "b", KV, 1000), NOW)
    assert isinstance(effect, Send) and effect.dst == "x"
    reply = effect.msg
    assert isinstance(reply, ReplicaScanReply) and reply.req_id == 9 and reply.reached is None
    assert [k for k, _ in reply.entries] == keys
    for _, state in reply.entries:
        (sibling,) = state.siblings
        assert sibling.value == b"" and sibling.content_type == ""
        assert state.context == big.context and sibling.dot == big.siblings[0].dot
    (effect,) = coord.receive("x", ReplicaScan(10, position(keys[4]), MAX_TOKEN, "b", KV, 3),
                              NOW)
    assert [k for k, _ in effect.msg.entries] == keys[5:8]
    assert effect.msg.reached == position(keys[7])


def test_a_replica_reply_stops_growing_past_its_byte_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import coordinator.replica as replica

    host = FakeHost("a")
    coord = Coordinator(host, 7)
    keys = sorted((internal_key("b", KV, b"k%d" % i) for i in range(20)), key=position)
    for key in keys:
        host.store.put_record(key_token(key), key, Record(written()))
    monkeypatch.setattr(replica, "REPLY_BYTES", 1000)
    (effect,) = coord.receive("x", ReplicaScan(9, START, MAX_TOKEN, "b", KV, 1000), NOW)
    sent = [k for k, _ in effect.msg.entries]
    assert 1 < len(sent) < len(keys) and sent == keys[:len(sent)]
    assert effect.msg.reached == position(sent[-1])


def test_the_store_scan_is_bounded_resumable_and_skips_damaged_records() -> None:
    store = FakeHost("a").store
    keys = sorted((internal_key("b", KV, b"k%d" % i) for i in range(50)), key=position)
    for key in keys:
        store.put_record(key_token(key), key, Record(written()))
    every = lambda key: True  # noqa: E731
    found, reached = store.scan_matching(START, MAX_TOKEN, every, 1000, 10)
    assert [k for _, k, _ in found] == keys[:10] and reached == position(keys[9])
    found, reached = store.scan_matching(reached, MAX_TOKEN, every, 4, 1000)
    assert [k for _, k, _ in found] == keys[10:14] and reached == position(keys[13])
    # (t, b"") is before every key of token t: the key at t itself is included.
    t = key_token(keys[20])
    found, _ = store.scan_matching((t, b""), t, every, 1000, 1000)
    assert [k for _, k, _ in found] == [keys[20]]
    found, reached = store.scan_matching(position(keys[20]), t, every, 1000, 1000)
    assert found == [] and reached is None
    # Nothing accepted: still bounded by the budget, still says how far it read.
    found, reached = store.scan_matching(START, MAX_TOKEN, lambda k: False, 5, 7)
    assert found == [] and reached == position(keys[6])
    store.engine.put("data", data_key(*position(keys[0])), b"\xc1garbage")
    found, reached = store.scan_matching(START, MAX_TOKEN, every, 1000, 1000)
    assert [k for _, k, _ in found] == keys[1:] and reached is None
    with pytest.raises(ValueError):
        store.scan_matching((10, b""), 5, every, 1, 1)


# --- the messages -----------------------------------------------------------------------------


STATE = written()
GOOD = [
    ReplicaScan(1, START, MAX_TOKEN, "b", KV, 1),
    ReplicaScan(2**64 - 1, (5, b"k" * 1091), 5, "default", COUNTER, MAX_SCAN_ENTRIES),
    ReplicaScanReply(3, (), None),
    ReplicaScanReply(4, ((b"k", outline(STATE)), (b"k2", written(None))), (7, b"")),
    ReplicaScanReply(5, ((b"k", STATE),), (MAX_TOKEN, b"k")),
]


@pytest.mark.parametrize("msg", GOOD)
def test_listing_messages_round_trip_through_the_wire(msg: object) -> None:
    frame = wire.encode(msg)  # type: ignore[arg-type]
    assert wire.decode(frame) == msg
    assert wire.encode(wire.decode(frame)) == frame


WIRE_STATE = to_wire(STATE)


@pytest.mark.parametrize("fields", [
    [14, 1, 0, b"", 5, "b", "kv"],  # too short
    [14, 1, 0, b"", 5, "b", "kv", 10, 0],  # too long
    [14, -1, 0, b"", 5, "b", "kv", 10],
    [14, True, 0, b"", 5, "b", "kv", 10],
    [14, 1, -1, b"", 5, "b", "kv", 10],
    [14, 1, 1.5, b"", 5, "b", "kv", 10],
    [14, 1, 6, b"", 5, "b", "kv", 10],  # ends before it starts
    [14, 1, 0, b"x" * 1092, 5, "b", "kv", 10],
    [14, 1, 0, "k", 5, "b", "kv", 10],
    [14, 1, 0, b"", 5, "bad bucket", "kv", 10],
    [14, 1, 0, b"", 5, "b", "meta", 10],
    [14, 1, 0, b"", 5, "b", "kv", 0],
    [14, 1, 0, b"", 5, "b", "kv", MAX_SCAN_ENTRIES + 1],
    [15, 1, [[b"", WIRE_STATE]], None],
    [15, 1, [[b"k" * 1092, WIRE_STATE]], None],
    [15, 1, [[b"k", [[], []]]], None],
    [15, 1, [[b"k", WIRE_STATE, 1]], None],
    [15, 1, [[b"k", WIRE_STATE]] * (MAX_SCAN_ENTRIES + 1), None],
    [15, 1, [], [1]],
    [15, 1, [], [1, "k"]],
    [15, 1, [], [-1, b"k"]],
    [15, 1, [], 5],
    [15, 1, (), None, None],
])
def test_malformed_listing_frames_are_refused(fields: list[object]) -> None:
    import msgpack

    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb(fields, use_bin_type=True))


def test_outline_keeps_liveness_tombstones_and_expiry() -> None:
    ttl = written(b"v", expires=NOW_MS + 10)
    gone = written(None, actor="d", base=ttl)
    for state in (STATE, ttl, gone, written(b"")):
        shaped = outline(state)
        assert shaped.context == state.context
        assert [(s.dot, s.value is None, s.expires_at_ms, s.timestamp_ms)
                for s in shaped.siblings] == [
            (s.dot, s.value is None, s.expires_at_ms, s.timestamp_ms) for s in state.siblings]
        assert bool(shaped.live(NOW_MS)) == bool(state.live(NOW_MS))
        assert bool(shaped.live(NOW_MS + 20)) == bool(state.live(NOW_MS + 20))
        assert outline(shaped) is shaped  # already outlined: nothing rebuilt
