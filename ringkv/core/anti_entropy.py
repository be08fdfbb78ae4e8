"""Merkle-tree anti-entropy between the replicas of each token range (issue 5).

The node calls `tick(now)` on every tick once it has joined and hands every message of
this subsystem to `receive`; both return effects like the node's own handlers. It sees
the node only through `ringkv.core.host.NodeHost`, never the node module that builds it.

Job:
- Keep one `RangeTree` per vnode arc this node replicates (`antientropy.ranges`), in
  step with every record change through `KeyStore.listener` (O(1) per write). Trees
  are not persisted: after a start (or a ring change that adds an arc) they are rebuilt
  from a paged scan, `BUILD_KEYS_PER_TICK` keys per tick, and take part in exchanges
  once built. Rebuilding is always right after a crash; a persisted tree would need a
  second write per key write and could disagree with the data after a torn commit.
- Every `anti_entropy_interval` seconds, start one exchange with each peer that shares
  a built range and is up (one in flight per peer): roots of up to `MAX_RANGES` ranges
  in one message, then only the children of differing nodes, then the keys of
  differing leaves, then only the versions of differing keys, merged on both sides
  with the node's resolver. An exchange that found differences is followed by another
  on the next tick, so repair speed follows the differences and cost stays bounded
  per message (`MAX_KEYS` keys).
- Expiry: every record with a live sibling that expires has one deadline, its earliest
  expiry, in a per-key queue (`storage.deadlines`: rewriting a key moves its deadline,
  so memory follows keys, not writes); once it expires locally the record is rewritten
  with its tombstone form (`storage.versions.expire`), which then converges like a
  delete.
- Tombstone compaction: a record holding only tombstones is reduced to its causal
  context (`storage.versions.compact`) once it has been dead here for
  `tombstone_grace` seconds and every other replica of its range has been seen with an
  equal range root since it died (so each holds the same tombstone). The context stays,
  so no late hint or returning replica can resurrect the key.

The responder side keeps no state: every message names its exchange (`xid`) and the
ranges and nodes it is about, so a lost message only ends an exchange early (the
initiator times out and starts again later).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING

from antientropy.merkle import LEAF_LEVEL, MASK, RangeTree, diff_keys, key_hash
from antientropy.messages import AeKeys, AeNodes, AePush, AePushReply, LeafKeys, RangeNodes
from antientropy.ranges import Range, replica_ranges, scan_ordered
from coordinator.effects import Effect, Send
from ring.token import key_token
from ringkv.core.host import NodeHost
from ringkv.core.wire import Message, encode
from storage.deadlines import DeadlineQueue
from storage.record import Record
from storage.versions import Versions, compact, expire, is_dead, next_expiry

if TYPE_CHECKING:
    from ring.ring import Ring

MAX_RANGES = 1024  # range roots per first message
MAX_NODES = 2048  # node hashes per message
MAX_KEYS = 512  # keys listed per AeKeys, and versions per AePush / AePushReply
MAX_PUSH_BYTES = 8 << 20  # value bytes per push or reply (frames are capped at 64 MiB)
MAX_LEAF_KEYS = 256  # keys listed per leaf (more: the leaf is marked truncated)
BUILD_KEYS_PER_TICK = 2000
EXPIRE_PER_TICK = 256
COMPACT_PER_TICK = 256
MIN_EXCHANGE_TIMEOUT = 5.0


@dataclass(slots=True)
class AntiEntropyStats:
    keys_repaired: int = 0  # local records changed by an exchange
    exchanges: int = 0  # exchanges started
    bytes_sent: int = 0  # encoded size of every anti-entropy message sent
    messages_sent: int = 0
    keys_listed: int = 0  # (key, hash) pairs sent for differing leaves
    keys_sent: int = 0  # versions sent in pushes and replies
    expired: int = 0  # records whose expired siblings became tombstones
    tombstones_compacted: int = 0  # dead records reduced to their causal context


class AntiEntropy:
    MESSAGE_TYPES: frozenset[int] = frozenset(
        m.TYPE for m in (AeNodes, AeKeys, AePush, AePushReply))

    def __init__(self, node: NodeHost) -> None:
        self.node = node
        self.stats = AntiEntropyStats()
        self.trees: dict[Range, RangeTree] = {}
        self.peers_of: dict[Range, tuple[str, ...]] = {}
        self._ends: list[int] = []
        self._by_end: list[RangeTree] = []
        self._ring: Ring | None = None
        self._n = 0
        self._building: list[RangeTree] = []
        self._next: dict[str, float] = {}
        self._inflight: dict[str, tuple[int, float]] = {}
        self._offset: dict[str, int] = {}
        # When each peer last drove an exchange of its own past the roots with us: while
        # it repairs, we do not start a second exchange over the same ranges with it.
        # Kept only for `_peers` (pruned to them when the ranges change), so peer ids
        # claimed in frames never grow it; the other per-peer maps are keyed by peers of
        # our own ranges only.
        self._peer_busy: dict[str, float] = {}
        self._peers: frozenset[str] = frozenset()  # every peer of a range we replicate
        self._xid = node.rng.getrandbits(48)
        self._now = 0.0
        # Range -> peer -> when that peer's root was last seen equal to ours.
        self.confirmed: dict[Range, dict[str, float]] = {}
        # (token, key) -> its earliest expiry (ms); one deadline per key.
        self._expiring: DeadlineQueue[tuple[int, bytes]] = DeadlineQueue()
        self.dead: dict[tuple[int, bytes], float] = {}  # dead record -> dead since
        # (token, key) -> when to look at a dead record again; one deadline per key.
        self._dead_due: DeadlineQueue[tuple[int, bytes]] = DeadlineQueue()
        self._shared: dict[str, list[RangeTree]] | None = None
        node.store.listener = self._on_change

    # --- ranges and trees ----------------------------------------------------------

    def _refresh_ranges(self) -> None:
        node = self.node
        if node.ring is self._ring and node.n == self._n:
            return
        self._ring, self._n = node.ring, node.n
        wanted = replica_ranges(node.ring, node.id, node.n)
        # A tree depends only on its range and the data, so it survives ring changes
        # that keep its range; new ranges start a build, gone ones are dropped.
        self.trees = {r: self.trees.get(r) or RangeTree(*r) for r in wanted}
        self.peers_of = wanted
        self._peers = frozenset(p for peers in wanted.values() for p in peers)
        for gone in [p for p in self._peer_busy if p not in self._peers]:
            del self._peer_busy[gone]
        ordered = sorted(self.trees.values(), key=lambda t: t.end)
        self._ends = [t.end for t in ordered]
        self._by_end = ordered
        self._building = [t for t in ordered if not t.ready]
        self.confirmed = {r: self.confirmed.get(r, {}) for r in wanted}
        self._shared = None

    def tree_of(self, token: int) -> RangeTree | None:
        if not self._ends:
            return None
        i = bisect_left(self._ends, token)
        tree = self._by_end[i % len(self._by_end)]
        return tree if tree.contains(token) else None

    def _on_change(self, token: int, key: bytes, old: Versions | None,
                   new: Versions | None) -> None:
        tree = self.tree_of(token)
        if tree is None:
            return
        if tree.scanned(token, key):
            tree.apply(token, (key_hash(key, new) - key_hash(key, old)) & MASK)
        self._index(token, key, new)

    def _index(self, token: int, key: bytes, versions: Versions | None) -> None:
        exp = None if versions is None else next_expiry(versions)
        if exp is not None:
            self._expiring.set((token, key), exp)
        else:
            self._expiring.discard((token, key))
        if versions is not None and is_dead(versions):
            self.dead[(token, key)] = self._now  # (re)starts the grace period
            self._dead_due.set((token, key), self._now + self.node.config.tombstone_grace)
        else:
            self.dead.pop((token, key), None)
            self._dead_due.discard((token, key))

    def _build(self) -> None:
        budget = BUILD_KEYS_PER_TICK
        while self._building and budget > 0:
            tree = self._building[0]
            count = 0
            for token, key, record in scan_ordered(self.node.store, tree, tree.start,
                                                   tree.end, tree.cursor, budget):
                tree.apply(token, key_hash(key, record.versions))
                tree.cursor = (tree.offset(token), key)
                self._index(token, key, record.versions)
                count += 1
            budget -= count
            if budget > 0:  # the scan ended before the budget: the range is complete
                tree.ready = True
                tree.cursor = None
                self._building.pop(0)
                self._shared = None

    # --- the periodic work ---------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        self._now = now
        self._refresh_ranges()
        self._build()
        self._expire(now)
        self._compact(now)
        return self._start_exchanges(now)

    def _expire(self, now: float) -> None:
        now_ms = int(now * 1000)
        store = self.node.store
        for _ in range(EXPIRE_PER_TICK):
            due = self._expiring.pop_due(now_ms)
            if due is None:
                return
            token, key = due
            record = store.get_record(token, key)
            if record is None:
                continue
            expired = expire(record.versions, now_ms)
            if expired is not record.versions:
                store.put_record(token, key, Record(expired, record.local_actor))
                self.stats.expired += 1

    def _compact(self, now: float) -> None:
        due = self._dead_due
        retry = now + self.node.config.anti_entropy_interval
        for _ in range(COMPACT_PER_TICK):
            entry = due.pop_due(now)
            if entry is None:
                return
            token, key = entry
            since = self.dead.get((token, key))
            if since is None:
                continue  # no longer dead (its deadline is normally dropped with it)
            tree = self.tree_of(token)
            if tree is None:
                continue
            seen = self.confirmed.get(tree.range, {})
            if not all(seen.get(p, -1.0) > since for p in self.peers_of[tree.range]):
                due.set((token, key), retry)  # not every replica yet
                continue
            record = self.node.store.get_record(token, key)
            if record is None or not is_dead(record.versions):
                continue
            self.node.store.put_record(token, key,
                                       Record(compact(record.versions), record.local_actor))
            self.stats.tombstones_compacted += 1

    def _start_exchanges(self, now: float) -> list[Effect]:
        node = self.node
        interval = node.config.anti_entropy_interval
        timeout = max(MIN_EXCHANGE_TIMEOUT, 2 * interval)
        shared = self._shared
        if shared is None:
            shared = {}
            for r, peers in self.peers_of.items():
                tree = self.trees[r]
                if tree.ready:
                    for p in peers:
                        shared.setdefault(p, []).append(tree)
            self._shared = shared
        effects: list[Effect] = []
        for peer in sorted(shared):
            busy = self._inflight.get(peer)
            if busy is not None and busy[1] > now:
                continue
            if peer not in self._next:
                # Spread the first exchanges over one interval.
                self._next[peer] = now + node.rng.uniform(0.0, interval)
            if now < self._next[peer] or not node.is_up(peer, now):
                continue
            if now - self._peer_busy.get(peer, -interval) < interval:
                continue
            trees = shared[peer]
            first = self._offset.get(peer, 0) % len(trees)
            chosen = (trees[first:] + trees[:first])[:MAX_RANGES]
            self._offset[peer] = first + len(chosen)
            self._xid += 1
            self._inflight[peer] = (self._xid, now + timeout)
            self._next[peer] = now + interval
            self.stats.exchanges += 1
            ranges = tuple((t.start, t.end, ((0, t.root),)) for t in chosen)
            effects.append(self._send(peer, AeNodes(self._xid, 0, ranges)))
        return effects

    def _send(self, peer: str, msg: Message) -> Send:
        self.stats.bytes_sent += len(encode(msg))
        self.stats.messages_sent += 1
        return Send(peer, msg)

    def _end(self, peer: str, xid: int, found: bool) -> None:
        """The exchange `xid` with `peer` is over (if this node started it)."""
        busy = self._inflight.get(peer)
        if busy is not None and busy[0] == xid:
            del self._inflight[peer]
            if found:
                self._next[peer] = self._now  # differences left: go on next tick

    # --- messages ------------------------------------------------------------------

    def receive(self, src: str, msg: Message, now: float) -> list[Effect]:
        self._now = now
        self._refresh_ranges()
        mine = self._inflight.get(src)
        if (mine is None or mine[0] != getattr(msg, "xid", None)) and \
                not (isinstance(msg, AeNodes) and msg.level == 0) and src in self._peers:
            self._peer_busy[src] = now
        match msg:
            case AeNodes(xid, level, items):
                if not items:
                    self._end(src, xid, found=False)
                    return []
                return self._on_nodes(src, xid, level, items, now)
            case AeKeys(xid, leaves):
                return self._on_keys(src, xid, leaves)
            case AePush(xid, pushed, want):
                return self._on_push(src, xid, pushed, want)
            case AePushReply(xid, pushed):
                self._merge(src, pushed)
                self._end(src, xid, found=True)
        return []

    def _on_nodes(self, src: str, xid: int, level: int, ranges: tuple[RangeNodes, ...],
                  now: float) -> list[Effect]:
        children: list[RangeNodes] = []
        count = 0
        leaves: list[LeafKeys] = []
        listed = 0
        for start, end, nodes in ranges:
            tree = self.trees.get((start, end))
            if tree is None or not tree.ready or src not in self.peers_of[(start, end)]:
                continue
            below: list[tuple[int, int]] = []
            for index, theirs in nodes:
                if tree.node_hash(level, index) == theirs:
                    if level == 0:
                        self.confirmed[(start, end)][src] = now
                elif level < LEAF_LEVEL:
                    if count + len(below) < MAX_NODES:
                        below.extend(tree.children(level, index))
                elif listed < MAX_KEYS:
                    keys, truncated = self._leaf_keys(tree, index)
                    listed += len(keys)
                    leaves.append((start, end, index, b"", truncated, tuple(keys)))
            if below:
                children.append((start, end, tuple(below)))
                count += len(below)
        if leaves:
            self.stats.keys_listed += listed
            return [self._send(src, AeKeys(xid, tuple(leaves)))]
        if not children:
            self._end(src, xid, found=False)
            return [self._send(src, AeNodes(xid, level, ()))]
        return [self._send(src, AeNodes(xid, level + 1, tuple(children)))]

    def _leaf_keys(self, tree: RangeTree, leaf: int,
                   after: bytes = b"") -> tuple[list[tuple[bytes, int]], bool]:
        """Up to MAX_LEAF_KEYS (key, hash) of a leaf after the key `after`; truncated?"""
        bounds = tree.leaf_bounds(leaf)
        if bounds is None:
            return [], False
        cursor = (tree.offset(key_token(after)), after) if after else None
        rows = list(scan_ordered(self.node.store, tree, bounds[0], bounds[1], cursor,
                                 MAX_LEAF_KEYS + 1))
        truncated = len(rows) > MAX_LEAF_KEYS
        return [(k, key_hash(k, rec.versions)) for _, k, rec in rows[:MAX_LEAF_KEYS]], truncated

    def _on_keys(self, src: str, xid: int, leaves: tuple[LeafKeys, ...]) -> list[Effect]:
        send: list[bytes] = []
        want: list[bytes] = []
        more: list[LeafKeys] = []
        for start, end, index, after, truncated, keys in leaves:
            tree = self.trees.get((start, end))
            if tree is None or not tree.ready or src not in self.peers_of[(start, end)]:
                continue

            theirs = dict(keys)
            listed, mine_truncated = self._leaf_keys(tree, index, after)
            mine = dict(listed)
            # Either list may stop short of the leaf's end: compare only the window
            # both cover, up to the smaller of the two last keys listed.
            ends = []
            if truncated and keys:
                ends.append(max(_pos(tree, k) for k in theirs))
            if mine_truncated and listed:
                ends.append(max(_pos(tree, k) for k, _ in listed))
            if ends:
                last = min(ends)
                mine = {k: h for k, h in mine.items() if _pos(tree, k) <= last}
                theirs = {k: h for k, h in theirs.items() if _pos(tree, k) <= last}
            s, w = diff_keys(mine, theirs)
            send.extend(s)
            want.extend(w)
            if not s and not w and ends:
                # The window agrees but the leaf goes on: list what follows it, so a
                # leaf bigger than one message is walked to its end across messages.
                rest, rest_truncated = self._leaf_keys(tree, index, min(ends)[1])
                more.append((start, end, index, min(ends)[1], rest_truncated, tuple(rest)))
        if not send and not want and more:
            self.stats.keys_listed += sum(len(leaf[5]) for leaf in more)
            return [self._send(src, AeKeys(xid, tuple(more)))]
        send, want = send[:MAX_KEYS], want[:MAX_KEYS]
        if not send and not want:
            self._end(src, xid, found=False)
            return [self._send(src, AeNodes(xid, LEAF_LEVEL, ()))]
        items = []
        store = self.node.store
        for key in send:
            record = store.get_record(key_token(key), key)
            if record is not None:
                items.append((key, record.versions))
        items = _bounded(items)
        self.stats.keys_sent += len(items)
        return [self._send(src, AePush(xid, tuple(items), tuple(want)))]

    def _on_push(self, src: str, xid: int, pushed: tuple[tuple[bytes, Versions], ...],
                 want: tuple[bytes, ...]) -> list[Effect]:
        store = self.node.store
        back: list[tuple[bytes, Versions]] = []
        for key, versions in self._merge(src, pushed):
            back.append((key, versions))
        for key in want:
            token = key_token(key)
            tree = self.tree_of(token)
            if tree is None or src not in self.peers_of[tree.range]:
                continue
            record = store.get_record(token, key)
            if record is not None:
                back.append((key, record.versions))
        self._end(src, xid, found=True)
        back = _bounded(back)  # the rest is found again by the next exchange
        self.stats.keys_sent += len(back)
        return [self._send(src, AePushReply(xid, tuple(back)))]

    def _merge(self, src: str,
               pushed: tuple[tuple[bytes, Versions], ...]) -> list[tuple[bytes, Versions]]:
        """Merge received versions; the merged state of every key the sender lacks.

        Only keys of ranges this node and `src` both replicate: rings can disagree for a
        while during membership changes, and a node never takes keys it does not own.
        """
        store = self.node.store
        resolve = self.node.resolve
        newer: list[tuple[bytes, Versions]] = []
        for key, versions in pushed:
            token = key_token(key)
            tree = self.tree_of(token)
            if tree is None or src not in self.peers_of[tree.range]:
                continue
            if store.merge_record(token, key, versions, resolve):
                self.stats.keys_repaired += 1
            record = store.get_record(token, key)
            if record is not None and not record.versions.same_as(versions):
                newer.append((key, record.versions))
        return newer


def _bounded(items: list[tuple[bytes, Versions]]) -> list[tuple[bytes, Versions]]:
    """A prefix of `items` holding at most MAX_PUSH_BYTES of values (at least one)."""
    total = 0
    for i, (_, versions) in enumerate(items):
        total += sum(len(sib.value or b"") for sib in versions.siblings)
        if total > MAX_PUSH_BYTES and i > 0:
            return items[:i]
    return items


def _pos(tree: RangeTree, key: bytes) -> tuple[int, bytes]:
    """A key's place in its tree's order: offset of its token, then the key."""
    return (tree.offset(key_token(key)), key)
