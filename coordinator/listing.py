"""Key listing, the coordinator side: from a ListRequest to the ListOk of one page.

A page is a coverage query over the ring, like Cassandra's token-range paging, never a
full scan held in memory. Keys are listed in (token, stored key) order; a cursor is a
position in that order (`coordinator.listing_messages`), which no membership change
alters, so following the cursor lists each key once while nodes join, leave or fail.

How a page is walked:

- From the page's start the coordinator cuts the ring into *stretches*: runs of
  consecutive vnode arcs that R up primaries of the current ring share (the first arc's
  up primaries, narrowed arc by arc while R of them remain: Cassandra merges ranges the
  same way). Tokens are walked linearly from 0 to 2**64-1, so the arc that wraps is two
  stretches, the last and the first.
- Each stretch is asked of those nodes with a ReplicaScan. A replica reads its own data
  table (`storage.store.KeyStore.scan_matching`), at most `SCAN_BUDGET` records and
  `limit` matches of the (bucket, kind), and answers their outlined states and the
  position it reached (`coordinator.replica`).
- From R replies only what lies at or below the least reached position is certain. The
  states of each key there are merged (`storage.versions.merge`), resolved as a read
  resolves them (`Host.resolve`), and the key is listed when a sibling is live at `now`:
  a key deleted on one replica and live on another is listed only if the merge says so.
  What lies beyond is asked again (a continuation of the same stretch), so a stretch is
  finished only once R replicas read it to its end.
- Scans run `width` at a time, ring order kept: a stretch is settled only after every
  stretch before it. `width` starts at 1 and doubles (to `IN_FLIGHT`) while the page
  is short, so a page that one scan fills costs one scan, and an empty bucket of a
  small ring is walked whole in one request.
- The page ends when it holds `limit` keys (cursor: the last key's position), when the
  walk reached the end of the ring (cursor None), or, with the keys settled so far and
  the position settled as cursor, when it sent `MAX_SCANS` scans, met a stretch with
  fewer than R up primaries, or reached its deadline. A page that settled nothing is
  answered QuorumFailed instead (the next page of a client that follows a cursor
  meets the blocked stretch first, so a range short of R is never skipped).

Which replicas: the current ring's primaries, as reads ask them, skipping the nodes the
host says are down. A range moves in the current ring only once its new owner holds it:
the current ring is the members `up` or `leaving` (`ringkv.core.cluster.rebuild_rings`);
a joiner is `joining`, in the pending ring only, until `ringkv.core.transfer` fetched
every range it gains (`ring.transition.gains`), and only then turns itself `up`; a
leaver stays in the current ring as `leaving` until every heir answered `SyncDone` for
the pending ring, and only then turns `left`. The one exception is a removal
(`Cluster.remove_member`): the removed node is `left` at once and its heirs fetch its
ranges afterwards from the survivors, so until they have, a scan that asks an heir
rests on the other replicas asked, exactly as a read does in that window.

Hints are not scanned: a primary holds none for its own ranges, and a write that only
fallbacks hold is listed once hinted handoff delivered it to a primary.

Invariants:
- Every scan id names one `ListOp` in `_scans` while the scan is awaited; ids leave
  with their op, when it answers or its timer fires, so late replies find nothing.
- A reply is taken only from a node the scan asked, once per node, and only if it is
  well formed for that scan: at most `limit` entries, of the (bucket, kind) asked, in
  strictly increasing positions inside ``(after, end]``, and a reached position above
  `after`, at or above the last entry, inside the range. Anything else is dropped and
  counted in `refused`.
- `frontier` only grows, and the keys of a page are in strictly increasing positions,
  all at or below it.
- `Host.resolve` sees outlined states (values replaced by b""): it must decide on dots,
  timestamps and tombstones only, as last-write-wins does.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Final

from coordinator.effects import Effect, Send, SetTimer
from coordinator.host import Host, deadline, quorum_size
from coordinator.listing_messages import (
    LISTABLE_KINDS,
    MAX_SCAN_ENTRIES,
    Position,
    ReplicaScan,
    ReplicaScanReply,
)
from coordinator.ops import ListOp, ListScan, OpTable, ReplyTo
from coordinator.requests import ClientResponse, ListOk, ListRequest, QuorumFailed, Rejected
from ring.ring import Ring
from ring.token import MAX_TOKEN, TOKEN_SPACE, key_token
from storage.keys import MAX_KEY_LEN
from storage.namespace import belongs, is_bucket_name, split_internal_key
from storage.versions import Versions, merge

__all__ = ["END", "IN_FLIGHT", "MAX_SCANS", "START", "Listing", "past", "stretch"]

START: Final[Position] = (0, b"")  # before every key
END: Final[Position] = (TOKEN_SPACE, b"")  # past every key; never sent
IN_FLIGHT: Final = 8  # scans in flight per page, at most
# Scans per page, continuations included: a page's work is bounded whatever the ring
# (a 5-node ring of 256 vnodes is ~640 stretches, walked empty in three pages).
MAX_SCANS: Final = 256


def past(token: int) -> Position:
    """The position just past every key of `token` (END past the last token)."""
    return END if token == MAX_TOKEN else (token + 1, b"")


def _arc_end(tokens: list[int], token: int) -> int:
    """The last token of the vnode arc holding `token`, walking linearly."""
    i = bisect_left(tokens, token)
    return tokens[i] if i < len(tokens) else MAX_TOKEN


def stretch(ring: Ring, tokens: list[int], n: int, r: int, token: int, limit: int,
            is_up: Callable[[str], bool]) -> tuple[int, tuple[str, ...]] | int:
    """The stretch that starts at `token`: its last token (at most `limit`) and the up
    primaries every arc of it shares, at least `r` of them, in the first arc's
    preference order; or, when the first arc has fewer than `r` up primaries, how
    many it has. `tokens` are the ring's vnode tokens, sorted.
    """
    nodes = tuple(x for x in ring.preference_list(token, n) if is_up(x))
    if len(nodes) < r:
        return len(nodes)
    end = min(_arc_end(tokens, token), limit)
    while end < limit:
        following = ring.preference_list(end + 1, n)
        shared = tuple(x for x in nodes if x in following)
        if len(shared) < r:
            break
        nodes = shared
        end = min(_arc_end(tokens, end + 1), limit)
    return end, nodes


def _request_problem(req: ListRequest) -> str | None:
    if not is_bucket_name(req.bucket):
        return f"bad bucket name {req.bucket!r}"
    if req.kind not in LISTABLE_KINDS:
        return f"keys of kind {req.kind!r} cannot be listed"
    if not 1 <= req.limit <= MAX_SCAN_ENTRIES:
        return f"limit {req.limit} out of range 1..{MAX_SCAN_ENTRIES}"
    if req.after is not None:
        token, key = req.after
        if not 0 <= token <= MAX_TOKEN or len(key) > MAX_KEY_LEN:
            return "malformed cursor"
    return None


class Listing:
    """The pages of key listings this node coordinates (see the module docstring)."""

    def __init__(self, host: Host, ops: OpTable) -> None:
        self._host = host
        self._ops = ops
        self._scans: dict[int, ListOp] = {}
        self.refused = 0  # replies dropped as malformed for their scan
        self._ring: Ring | None = None
        self._tokens: list[int] = []

    def start(self, req: ListRequest, reply_to: ReplyTo, now: float) -> list[Effect]:
        host = self._host
        problem = _request_problem(req)
        if problem is not None:
            return [reply_to.answer(Rejected(problem))]
        r = quorum_size(host, req.r, host.r)
        if isinstance(r, str):
            return [reply_to.answer(Rejected(r))]
        start = START if req.after is None else req.after
        req_id = host.new_id()
        op = ListOp(req_id, req.bucket, req.kind, req.limit, r, reply_to, start, start,
                    start)
        self._ops[req_id] = op
        effects = self._step(op, now)
        if req_id in self._ops:
            effects.insert(0, SetTimer(deadline(host, req.timeout_ms, now), req_id))
        return effects

    def on_reply(self, src: str, msg: ReplicaScanReply, now: float) -> list[Effect]:
        op = self._scans.get(msg.req_id)
        if op is None:
            return []
        scan = op.scans[msg.req_id]
        if src not in scan.nodes or src in scan.replies or len(scan.replies) >= op.r:
            return []
        reached = self._checked(op, scan, msg)
        if reached is None:
            self.refused += 1
            return []
        scan.replies[src] = (msg.entries, reached)
        if len(scan.replies) < op.r or op.queue[0] != msg.req_id:
            return []  # a scan behind the first waits for those before it
        return self._step(op, now)

    def timed_out(self, op: ListOp) -> list[Effect]:
        """The page's deadline: answer with what is settled (see the module docstring)."""
        acks = len(op.scans[op.queue[0]].replies) if op.queue else 0
        return [self._finish(op, self._short(op, acks))]

    def in_flight(self) -> int:
        """Scans awaiting replies, over all pages."""
        return len(self._scans)

    # --- the walk ---------------------------------------------------------------------

    def _step(self, op: ListOp, now: float) -> list[Effect]:
        """Settle every scan at the head that R replicas answered, then send more scans
        or answer the page."""
        while op.queue:
            scan_id = op.queue[0]
            scan = op.scans[scan_id]
            if len(scan.replies) < op.r:
                break
            op.queue.pop(0)
            del op.scans[scan_id]
            del self._scans[scan_id]
            reached = self._settle(op, scan, now)
            if len(op.keys) >= op.limit:
                return [self._finish(op, ListOk(tuple(op.keys), op.last))]
            op.width = min(IN_FLIGHT, op.width * 2)
            if reached < past(scan.end):
                # The replicas read short of the stretch's end: the rest of it is asked
                # again before anything after it is settled.
                if op.issued >= MAX_SCANS:
                    self._drop_queue(op)
                    return [self._finish(op, self._short(op, 0))]
                sent = self._send(op, reached, scan.end, now, first=True)
                if sent is None:
                    break
                return sent + self._more(op, now)
        if op.frontier == END:
            return [self._finish(op, ListOk(tuple(op.keys), None))]
        effects = self._more(op, now)
        if not op.queue:
            return [self._finish(op, self._short(op, op.blocked or 0))]
        return effects

    def _more(self, op: ListOp, now: float) -> list[Effect]:
        """Scans of the next stretches, up to the page's width and budget."""
        effects: list[Effect] = []
        while (len(op.queue) < op.width and op.planned != END and op.blocked is None
               and op.issued < MAX_SCANS):
            sent = self._send(op, op.planned, MAX_TOKEN, now, first=False)
            if sent is None:
                break
            effects.extend(sent)
        return effects

    def _send(self, op: ListOp, after: Position, last: int, now: float,
              first: bool) -> list[Effect] | None:
        """A scan of the stretch after `after` (ending by token `last`), queued first
        (a continuation) or last; None when its first arc is short of R up primaries:
        the walk stops there, and scans queued after it are dropped."""
        host = self._host
        ring = host.ring
        if ring is not self._ring:
            self._ring = ring
            self._tokens = sorted({t for node in ring.nodes for t in ring.tokens_of(node)})
        found = stretch(ring, self._tokens, host.n, op.r, after[0], last,
                        lambda node: host.is_up(node, now))
        if isinstance(found, int):
            op.blocked = found
            if first:
                self._drop_queue(op)
            return None
        end, nodes = found
        scan_id = host.new_id()
        limit_keys = min(op.limit - len(op.keys), MAX_SCAN_ENTRIES)
        op.scans[scan_id] = ListScan(after, end, nodes, limit_keys)
        self._scans[scan_id] = op
        op.issued += 1
        if first:
            op.queue.insert(0, scan_id)
        else:
            op.queue.append(scan_id)
            op.planned = past(end)
        msg = ReplicaScan(scan_id, after, end, op.bucket, op.kind, limit_keys)
        return [Send(node, msg) for node in nodes]

    def _drop_queue(self, op: ListOp) -> None:
        for scan_id in op.queue:
            self._scans.pop(scan_id, None)
        op.queue.clear()
        op.scans.clear()

    def _settle(self, op: ListOp, scan: ListScan, now: float) -> Position:
        """Take the keys R replies make certain; the position settled."""
        replies = list(scan.replies.values())
        reached = min(r for _, r in replies)
        states: dict[bytes, Versions] = {}
        for entries, _ in replies:
            for key, state in entries:
                states[key] = merge(states[key], state) if key in states else state
        ordered = sorted((key_token(key), key) for key in states)
        now_ms = int(now * 1000)
        resolve = self._host.resolve
        for position in ordered:
            if position > reached:
                break
            key = position[1]
            if resolve(key, states[key]).live(now_ms):
                op.keys.append(split_internal_key(key)[2])
                op.last = position
                if len(op.keys) >= op.limit:
                    op.frontier = position
                    return position
        op.frontier = reached
        return reached

    def _checked(self, op: ListOp, scan: ListScan, msg: ReplicaScanReply) -> Position | None:
        """The reached position of a reply well formed for `scan`, or None."""
        if len(msg.entries) > scan.limit:
            return None
        previous = scan.after
        for key, _ in msg.entries:
            position = (key_token(key), key)
            if (position <= previous or position[0] > scan.end
                    or not belongs(key, op.bucket, op.kind)):
                return None
            previous = position
        reached = msg.reached
        if reached is None:
            return past(scan.end)
        if reached <= scan.after or reached < previous or reached[0] > scan.end:
            return None
        return reached

    def _short(self, op: ListOp, acks: int) -> ClientResponse:
        """The answer of a page that stops before it is full or the ring is walked."""
        if op.frontier > op.start:
            return ListOk(tuple(op.keys), op.frontier)
        return QuorumFailed(acks, op.r, "too few replicas answered for a range of the"
                            " ring" if op.blocked is None else "too few replicas reachable")

    def _finish(self, op: ListOp, response: ClientResponse) -> Effect:
        self._ops.pop(op.req_id, None)
        self._drop_queue(op)
        return op.reply_to.answer(response)
