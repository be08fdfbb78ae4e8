"""Range transfers: a node fetches the ranges the pending ring gives it (pure).

See `ring.transition` for the rule: a node remembers the *held* ring under which its
data is complete, and fetches from previous owners every range the pending ring gives
it that the held ring did not. When nothing is left to fetch, the held ring becomes the
pending ring; a joiner then turns itself `up`.

The fetch is a pull, page by page (`RangeFetch`/`RangeBatch`), with a bounded number
of pages in flight, so a transfer never floods either side. Progress (the parts of the
ring fetched so far, and the cursor inside each unfinished part) is kept in node
metadata, staged after the records it covers: after a crash of the fetcher the sync
resumes where it stopped; after a crash of the source the page times out and is asked
of the next source.

A leaving node does not push: it asks every node that inherits one of its ranges
(`SyncAsk`, with a fresh request id as transfer id, and the pending ring's fingerprint)
and waits until each says (`SyncDone`, echoing both) that it holds the pending ring,
then turns itself `left`. Writes keep reaching both old and new owners meanwhile
(`ring.transition.write_extras`). A leaver withdraws (back to `up`) rather than leave
when another leave is in flight with a smaller node id, or when the members staying
would be fewer than N: two leaves asked for in the same instant on two nodes (each
before it heard of the other) both pass the checks of `ringkv.core.cluster`, and this
is where all but one of them stop. Every node picks the same one, with no messages.

Transfers see their node only through `ringkv.core.host.NodeHost` (its id, store, rings,
membership, failure detector and own status), never the node module that builds them.

Invariants:
- The held ring advances only when every gained range has been fetched completely.
- A page's records are merged (never overwritten) before its cursor is recorded.
- A leaver turns `left` only on a `SyncDone` from each heir it asked, for the transfer
  id and fingerprint it asked about; any other notice is counted and changes nothing.
- Of leaves in flight at once, only the one with the smallest node id goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordinator.effects import Effect, Send
from gossip.membership import JOINING, LEAVING, LEFT, UP
from ring.ring import Ring
from ring.token import TokenRange, key_token
from ring.transition import TokenSet, fingerprint, gains
from ringkv.core.host import NodeHost
from ringkv.core.transfer_wire import RangeBatch, RangeBusy, RangeFetch, SyncAsk, SyncDone
from ringkv.core.wire import Message
from storage.keys import data_key
from storage.versions import Versions

PAGE_KEYS = 256  # records per page
PAGE_BYTES = 1 << 20  # a page stops growing past this many value bytes
IN_FLIGHT = 8  # pages in flight per fetching node
PAGE_TIMEOUT = 5.0  # seconds before a page is asked again, of the next source
SYNC_ASK_EVERY = 1.0  # seconds between a leaver's questions to each heir not yet done


@dataclass(slots=True)
class _Piece:
    start: int
    end: int
    sources: tuple[str, ...]
    after: bytes | None = None
    tries: int = 0


@dataclass(slots=True)
class _Fetch:
    piece: _Piece
    source: str
    deadline: float


@dataclass(slots=True)
class TransferStats:
    keys_received: int = 0
    bytes_received: int = 0
    keys_sent: int = 0
    bytes_sent: int = 0
    ranges_fetched: int = 0
    syncs_completed: int = 0
    sync_notices_refused: int = 0  # SyncDone not from an asked heir, or not as asked


@dataclass(slots=True)
class _Sync:
    target: Ring
    queue: list[_Piece] = field(default_factory=list)
    total: int = 0


def _record_bytes(key: bytes, versions: Versions) -> int:
    """What a transferred record counts for in the byte metrics: key and values."""
    return len(key) + sum(len(s.value or b"") for s in versions.siblings)


class Transfers:
    MESSAGE_TYPES = frozenset({RangeFetch.TYPE, RangeBatch.TYPE, SyncDone.TYPE,
                               RangeBusy.TYPE, SyncAsk.TYPE})

    def __init__(self, node: NodeHost) -> None:
        self.node = node
        self.stats = TransferStats()
        held = node.store.get_meta("held_ring")
        self.held = Ring(_token_map(held)) if isinstance(held, dict) else None
        progress = node.store.get_meta("sync_progress")
        self._done = TokenSet()
        self._cursors: dict[tuple[int, int], bytes] = {}
        if isinstance(progress, dict):
            self._done = TokenSet([(int(lo), int(hi)) for lo, hi in progress.get("done", [])])
            self._cursors = {(s, e): a for s, e, a in progress.get("cursors", [])}
        self._sync: _Sync | None = None
        self._fetches: dict[int, _Fetch] = {}
        self._not_before = 0.0
        # While leaving: the question (pending fingerprint, transfer id) put to the heirs,
        # the heirs that answered it, and when to ask those that did not again.
        self._ask: tuple[int, int] | None = None
        self._synced: set[str] = set()
        self._next_ask = 0.0
        # As an heir: the latest question of each leaving node, answered once it holds.
        self._asked: dict[str, tuple[int, int]] = {}
        # Fingerprints of the held and pending rings, computed when either changes
        # (`hold`, `ring_changed`) rather than on every tick that compares them.
        self._held_fp = fingerprint(self.held.token_map()) if self.held is not None else 0
        self._pending_fp = fingerprint(node.pending.token_map())
        self._heirs_of: frozenset[str] | None = None  # while leaving; reset on ring changes

    # --- the held ring ------------------------------------------------------------

    def hold(self, ring: Ring) -> None:
        """Declare the local data complete for `ring` (a new cluster, an old data dir)."""
        self.held = ring
        self._held_fp = fingerprint(ring.token_map())
        self._done = TokenSet()
        self._cursors.clear()
        self.node.store.put_meta("held_ring", {k: list(v) for k, v in ring.token_map().items()})
        self.node.store.put_meta("sync_progress", None)

    def _save_progress(self) -> None:
        self.node.store.put_meta("sync_progress", {
            "done": [list(iv) for iv in self._done.intervals()],
            "cursors": [[s, e, a] for (s, e), a in sorted(self._cursors.items())],
        })

    def delay(self, until: float) -> None:
        """Start no fetch before `until` (a joiner lets the cluster learn it first)."""
        self._not_before = until

    def ring_changed(self, now: float) -> list[Effect]:
        """Recompute what to fetch after any change of the current or pending ring."""
        node = self.node
        self._fetches.clear()
        self._sync = None
        self._heirs_of = None
        self._pending_fp = fingerprint(node.pending.token_map())
        if self.held is None:
            self.hold(Ring())  # a joiner, just admitted: it holds nothing yet
        held = self.held
        assert held is not None
        target = node.pending
        if self._pending_fp == self._held_fp:
            return []
        pieces = []
        for g in gains(node.id, held, target, node.ring, node.n):
            for s, e in self._done.missing(g.start, g.end):
                pieces.append(_Piece(s, e, g.sources, self._cursors.get((s, e))))
        if not pieces:
            return self._complete(target, now)
        self._sync = _Sync(target, pieces, len(pieces))
        return []

    def _complete(self, target: Ring, now: float) -> list[Effect]:
        self.hold(target)
        self.stats.syncs_completed += 1
        me = self.node.members.get(self.node.id)
        if me is not None and me.status == JOINING:
            return self.node.set_own_status(UP, now)
        return []

    # --- periodic work --------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        sync = self._sync
        if sync is not None:
            for req_id, fetch in list(self._fetches.items()):
                if now > fetch.deadline:
                    del self._fetches[req_id]
                    fetch.piece.tries += 1
                    sync.queue.append(fetch.piece)
        effects = self._pump(now)
        effects.extend(self._leave_progress(now))
        return effects

    def _pump(self, now: float) -> list[Effect]:
        """Start fetches until `IN_FLIGHT` are out or no source is reachable."""
        sync = self._sync
        effects: list[Effect] = []
        if sync is None or now < self._not_before:
            return effects
        for _ in range(len(sync.queue)):
            if len(self._fetches) >= IN_FLIGHT:
                break
            piece = sync.queue.pop(0)
            source = self._source(piece, now)
            if source is None:
                sync.queue.append(piece)  # its sources are down: try the others
                continue
            effects.append(self._fetch(piece, source, now))
        return effects

    def _source(self, piece: _Piece, now: float) -> str | None:
        node = self.node
        usable = []
        for src in piece.sources:
            member = node.members.get(src)
            if src != node.id and member is not None and member.status != LEFT \
                    and node.is_up(src, now):
                usable.append(src)
        return usable[piece.tries % len(usable)] if usable else None

    def _fetch(self, piece: _Piece, source: str, now: float) -> Effect:
        req_id = self.node.new_id()
        self._fetches[req_id] = _Fetch(piece, source, now + PAGE_TIMEOUT)
        return Send(source, RangeFetch(req_id, piece.start, piece.end, piece.after, PAGE_KEYS))

    # --- messages -------------------------------------------------------------------

    def receive(self, src: str, msg: Message, now: float) -> list[Effect]:
        match msg:
            case RangeFetch(req_id, start, end, after, limit):
                if self._still_fetching(start, end):
                    return [Send(src, RangeBusy(req_id))]
                return [self._serve(src, req_id, start, end, after, limit)]
            case RangeBusy(req_id):
                return self._on_busy(src, req_id)
            case RangeBatch(req_id, items, next_after):
                return self._on_batch(src, req_id, items, next_after, now)
            case SyncAsk(fp, transfer_id):
                return self._on_sync_ask(src, fp, transfer_id)
            case SyncDone(fp, transfer_id):
                self._on_sync_done(src, fp, transfer_id)
        return []

    def _serve(self, src: str, req_id: int, start: int, end: int, after: bytes | None,
               limit: int) -> Effect:
        page = self.node.store.scan_range(start, end, after, max(1, limit))
        items = []
        size = 0
        for _, key, record in page:
            items.append((key, record.versions))
            size += _record_bytes(key, record.versions)
            if size >= PAGE_BYTES:
                break
        self.stats.keys_sent += len(items)
        self.stats.bytes_sent += size
        exhausted = len(items) == len(page) and len(page) < max(1, limit)
        if exhausted or not items:
            return Send(src, RangeBatch(req_id, tuple(items), None))
        token, key, _ = page[len(items) - 1]
        return Send(src, RangeBatch(req_id, tuple(items), data_key(token, key)))

    def _still_fetching(self, start: int, end: int) -> bool:
        """True if part of ``(start, end]`` is among the ranges this node still fetches.

        A node in the current ring may be fetching ranges a removal gave it; serving one
        of those would hand over an incomplete range as if it were whole.
        """
        sync = self._sync
        if sync is None:
            return False
        fetching = TokenSet()
        for piece in [*sync.queue, *(f.piece for f in self._fetches.values())]:
            fetching.add(piece.start, piece.end)
        free = sum(TokenRange(s, e).size() for s, e in fetching.missing(start, end))
        return free < TokenRange(start, end).size()

    def _on_busy(self, src: str, req_id: int) -> list[Effect]:
        fetch = self._fetches.get(req_id)
        if fetch is None or fetch.source != src or self._sync is None:
            return []
        del self._fetches[req_id]
        fetch.piece.tries += 1  # the next source in turn: this one does not hold it yet
        self._sync.queue.append(fetch.piece)
        return []

    def _on_batch(self, src: str, req_id: int, items: Any, next_after: bytes | None,
                  now: float) -> list[Effect]:
        fetch = self._fetches.get(req_id)
        sync = self._sync
        if fetch is None or fetch.source != src or sync is None:
            return []  # an answer to a fetch given up on, or to an earlier sync
        del self._fetches[req_id]
        node = self.node
        for key, versions in items:
            node.store.merge_record(key_token(key), key, versions, node.resolve)
            self.stats.keys_received += 1
            self.stats.bytes_received += _record_bytes(key, versions)
        piece = fetch.piece
        if next_after is not None:
            piece.after = next_after
            self._cursors[(piece.start, piece.end)] = next_after
            self._save_progress()
            return [self._fetch(piece, src, now)]
        self._cursors.pop((piece.start, piece.end), None)
        self._done.add(piece.start, piece.end)
        self.stats.ranges_fetched += 1
        self._save_progress()
        if not sync.queue and not self._fetches:
            self._sync = None
            return self._complete(sync.target, now)
        return self._pump(now)

    # --- leaving ----------------------------------------------------------------------

    def _heirs(self) -> frozenset[str]:
        """Nodes that inherit a range of this (leaving) node, under the current rings."""
        if self._heirs_of is None:
            node = self.node
            self._heirs_of = frozenset(
                other for other in node.pending.nodes
                if other != node.id and gains(other, node.ring, node.pending, node.ring, node.n))
        return self._heirs_of

    def waiting_for(self) -> list[str]:
        """While leaving: the heirs that have not yet said they hold their new ranges."""
        node = self.node
        me = node.members.get(node.id)
        if me is None or me.status != LEAVING:
            return []
        asked = self._ask is not None and self._ask[0] == self._pending_fp
        return sorted(self._heirs() - self._synced) if asked else sorted(self._heirs())

    def _question(self) -> tuple[int, int]:
        """The question for the heirs of the current pending ring; a new transfer id
        (and no answers yet) whenever that ring changes. Request ids start at a random
        point in every life and draw nothing from the rng, so asking leaves the node's
        random sequence (and a simulation's trace) as it was."""
        if self._ask is None or self._ask[0] != self._pending_fp:
            self._ask = (self._pending_fp, self.node.new_id())
            self._synced = set()
        return self._ask

    def _on_sync_ask(self, src: str, fp: int, transfer_id: int) -> list[Effect]:
        member = self.node.members.get(src)
        if member is None or member.status != LEAVING or src == self.node.id:
            return []
        self._asked[src] = (fp, transfer_id)
        return self._answers()

    def _answers(self) -> list[Effect]:
        """As an heir: answer each leaving node's question once this node holds the ring
        it names, and forget questions of nodes no longer leaving."""
        if not self._asked or self._sync is not None or self.held is None:
            return []
        effects: list[Effect] = []
        for leaver in sorted(self._asked):
            member = self.node.members.get(leaver)
            fp, transfer_id = self._asked[leaver]
            if member is None or member.status != LEAVING:
                del self._asked[leaver]
            elif fp == self._held_fp:
                del self._asked[leaver]
                effects.append(Send(leaver, SyncDone(fp, transfer_id)))
        return effects

    def _on_sync_done(self, src: str, fp: int, transfer_id: int) -> None:
        me = self.node.members.get(self.node.id)
        if me is None or me.status != LEAVING or self._ask != (fp, transfer_id) \
                or fp != self._pending_fp or src not in self._heirs():
            self.stats.sync_notices_refused += 1
            return
        self._synced.add(src)

    def _rival(self) -> str | None:
        """While leaving: why this leave must stop, or None to go on.

        Two leaves asked for at once on two nodes both pass the checks made when they
        start; every node settles them the same way: the smallest id goes on.
        """
        node = self.node
        staying = 0
        for m in node.members.members():
            if m.node_id == node.id:
                continue
            if m.status == LEAVING and m.node_id < node.id:
                return f"{m.node_id} is leaving"
            staying += m.status in (UP, JOINING)
        if staying < node.n:
            return f"only {staying} members would stay, fewer than n={node.n}"
        return None

    def _leave_progress(self, now: float) -> list[Effect]:
        node = self.node
        effects = self._answers()
        me = node.members.get(node.id)
        if me is None or me.status != LEAVING:
            return effects
        if self._rival() is not None:
            effects.extend(node.set_own_status(UP, now))  # withdrawn: it still holds all
            return effects
        waiting = self.waiting_for()
        if not waiting:
            effects.extend(node.set_own_status(LEFT, now))
        elif now >= self._next_ask:
            self._next_ask = now + SYNC_ASK_EVERY
            fp, transfer_id = self._question()
            effects.extend(Send(heir, SyncAsk(fp, transfer_id)) for heir in waiting)
        return effects

    def busy(self) -> bool:
        """True while ranges this node gained are still being fetched."""
        return self._sync is not None

    # --- a view for operators ---------------------------------------------------------

    def view(self) -> dict[str, object]:
        sync = self._sync
        out: dict[str, object] = {
            "syncing": sync is not None,
            "keys_received": self.stats.keys_received,
            "bytes_received": self.stats.bytes_received,
            "keys_sent": self.stats.keys_sent,
            "bytes_sent": self.stats.bytes_sent,
        }
        if sync is not None:
            out["ranges_total"] = sync.total
            out["ranges_left"] = len(sync.queue) + len(self._fetches)
            out["fetching_from"] = sorted({f.source for f in self._fetches.values()})
        waiting = self.waiting_for()
        if waiting:
            out["leave_waiting_for"] = waiting
        return out


def _token_map(doc: dict[Any, Any]) -> dict[str, tuple[int, ...]]:
    return {str(k): tuple(int(t) for t in v) for k, v in doc.items()}
