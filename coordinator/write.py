"""Write coordination: from a client's (or a forwarder's) write to its quorum answer.

A write goes to the key's sloppy-quorum targets (`coordinator.host.targets`). The
coordinator forms the new state with its actor for the key (`coordinator.actors`),
stores it (or, standing in for a down primary, keeps it as a hint), sends it to every
other target and answers once W of them acknowledged it durably. While a range is in
transit its pending owner is a target too and must acknowledge as well (W + pending).
At the deadline, every target that did not acknowledge gets the write by hint.

Invariants:
- Writes are coordinated by a replica of the key (requests that reach another node are
  forwarded), so a key's context holds about N actors however many writes it sees.
- A forwarded write is coordinated once: its (sender, id) is remembered for
  `FORWARD_MEMORY` seconds and a duplicate frame is dropped (coordinating it again
  would add a sibling). The memory holds at most `FORWARD_MEMORY_MAX` ids, oldest
  evicted first, so a flood of distinct ids costs a fixed amount of memory; an id
  evicted early only loses duplicate suppression for a frame that old.
- A data-type update (`req.op`: a counter increment, a set edit, bucket properties)
  forms its state with `op.apply` over the same base and actor a value write would
  use, and travels, hints and merges exactly like one; an update past its type's
  bounds is `LimitExceeded` (a 413) and changes nothing.
- Siblings are bounded: a value write whose new state would hold more than the key's
  bucket's `max_siblings` versions (tombstones included) is answered `TooManySiblings`
  and changes nothing (nothing stored or hinted, no fan-out); one whose context covers
  every sibling leaves a single version and always works.
- A write never leaves a state the store's own validators refuse or a frame cannot
  carry: one whose new state's context, or the context handed back, exceeds the
  write bounds of `storage.limits` is `Rejected` (a 400), and one whose encoded state
  exceeds `MAX_RECORD_BYTES` is `RecordTooLarge` (a 413); either changes nothing.
- While the local store is full (`KeyStore.full`, set by the driver when a commit
  fails for lack of space) a write coordinated here is answered `StorageFull` (a 507)
  and changes nothing; other replicas' puts still reach this node and fail only here.
- The coordinator's own ack is durable like any replica's: its quorum counts itself
  only once its local store has committed the write.
"""

from __future__ import annotations

from coordinator.actors import Actors
from coordinator.effects import Effect, Send, SetTimer
from coordinator.hints import Hints
from coordinator.host import Host, Stats, deadline, quorum_size, targets
from coordinator.messages import ForwardReply, ForwardWrite, ReplicaPut, ReplicaPutAck
from coordinator.ops import ForwardOp, OpTable, ReplyTo, WriteOp
from coordinator.quorum import Target, WriteQuorum
from coordinator.requests import (
    LimitExceeded,
    QuorumFailed,
    RecordTooLarge,
    Rejected,
    StorageFull,
    TooManySiblings,
    WriteOk,
    WriteRefused,
    WriteRequest,
)
from ring.token import key_token
from ring.transition import write_extras
from storage.crdt import OverLimit
from storage.limits import MAX_RECORD_BYTES, context_problem, record_too_large
from storage.record import Record
from storage.versions import Actor, Context, Versions, update

FORWARD_MEMORY = 30.0  # seconds a forwarded write's id is remembered, to drop duplicates
# Ids remembered at most (~100 bytes each): ten times a busy node's forwards per 30 s.
FORWARD_MEMORY_MAX = 1 << 16
# The forwarder waits a little longer than the coordinator so that the coordinator's
# own 503 (with its ack count) arrives first.
FORWARD_GRACE = 0.25


class Writes:
    def __init__(self, host: Host, ops: OpTable, actors: Actors, hints: Hints,
                 stats: Stats) -> None:
        self._host = host
        self._ops = ops
        self._actors = actors
        self._hints = hints
        self._stats = stats
        self._seen_forwards: dict[tuple[str, int], float] = {}

    def start(self, req: WriteRequest, reply_to: ReplyTo, now: float,
              forwarded: bool) -> list[Effect]:
        host = self._host
        w = quorum_size(host, req.w, host.w)
        if isinstance(w, str):
            return [reply_to.answer(Rejected(w))]
        token = key_token(req.key)
        chosen = targets(host, token, now)
        if len(chosen) < w:
            return [reply_to.answer(QuorumFailed(0, w, "too few replicas reachable"))]
        until = deadline(host, req.timeout_ms, now)
        mine = next((t for t in chosen if t.node == host.id), None)
        if mine is None and not forwarded:
            # Coordinate on a replica, which holds a stable actor for the key.
            return self._forward(req, w, chosen[0].node, reply_to, until, now)
        formed = self._form(token, req, mine, now)
        if not isinstance(formed, tuple):
            return [reply_to.answer(formed)]
        state, client_ctx = formed
        self._hints.hint_uncovered(token, req.key, chosen, state)
        required = w + self._add_pending_owners(token, req.key, chosen, state, now)
        req_id = host.new_id()
        quorum = WriteQuorum(required, tuple(chosen))
        self._ops[req_id] = WriteOp(req.key, quorum, client_ctx, reply_to, state)
        effects: list[Effect] = [SetTimer(until, req_id)]
        # One message object for every primary target: the runtime encodes a message
        # fanned out to several nodes once.
        put = ReplicaPut(req_id, req.key, state, None)
        for t in chosen:
            if t.node == host.id:
                effects.append(Send(host.id, ReplicaPutAck(req_id), durable=True))
            elif t.hint_for is None:
                effects.append(Send(t.node, put))
            else:
                effects.append(Send(t.node, ReplicaPut(req_id, req.key, state, t.hint_for)))
        return effects

    def _forward(self, req: WriteRequest, w: int, replica: str, reply_to: ReplyTo,
                 until: float, now: float) -> list[Effect]:
        fwd = self._host.new_id()
        self._ops[fwd] = ForwardOp(reply_to, replica)
        self._stats.forwarded += 1
        ms = max(1, int((until - now) * 1000))
        fwd_req = WriteRequest(req.key, req.value, req.content_type, req.context, w,
                               req.ttl, ms, req.op)
        return [Send(replica, ForwardWrite(fwd, fwd_req)), SetTimer(until + FORWARD_GRACE, fwd)]

    def _form(self, token: int, req: WriteRequest, mine: Target | None,
              now: float) -> tuple[Versions, Context] | WriteRefused:
        """The write's new state and client context, stored here (or hinted).

        A state with more siblings than `max_siblings`, or past the bounds of
        `storage.limits`, is refused before anything is stored or hinted.
        """
        host = self._host
        if host.store.full is not None:
            return StorageFull(host.store.full)
        now_ms = int(now * 1000)
        expires = now_ms + req.ttl * 1000 if req.ttl else None
        if mine is not None and mine.hint_for is None:
            record = host.store.get_record(token, req.key)
            actor = self._actors.own(record)
            base = record.versions if record else None
            if actor is None:
                actor = self._actors.fresh()
            formed = _apply(req, base, actor, now_ms, expires)
            if isinstance(formed, LimitExceeded):
                return formed
            state, client_ctx = formed
            state = host.resolve(req.key, state)
            # Counters and sets keep one sibling per entry: their bound is their own.
            limit = host.max_siblings_for(req.key)
            if req.op is None and len(state.siblings) > limit:
                return TooManySiblings(len(state.siblings), limit)
            refused = _refusal(state, client_ctx)
            if refused is not None:
                return refused
            host.store.put_record(token, req.key, Record(state, actor))
            return state, client_ctx
        # A fallback (or a node outside the list) holds no stable actor for the key.
        # With no base it holds the new version only, so the sibling bound cannot bite.
        formed = _apply(req, None, self._actors.fresh(), now_ms, expires)
        if isinstance(formed, LimitExceeded):
            return formed
        state, client_ctx = formed
        refused = _refusal(state, client_ctx)
        if refused is not None:
            return refused
        if mine is not None and mine.hint_for is not None:
            self._hints.keep(token, req.key, mine.hint_for, state)
        return state, client_ctx

    def _add_pending_owners(self, token: int, key: bytes, chosen: list[Target],
                            state: Versions, now: float) -> int:
        """Add the pending owners of a range in transit to `chosen`; how many were added.

        A range in transit: its pending owner gets every write too, and must
        acknowledge it (Cassandra's W + pending), unless it is down: then a hint.
        """
        host = self._host
        added = 0
        for extra in write_extras(host.ring, host.pending, token, host.n):
            if any(t.node == extra for t in chosen):
                continue
            if host.is_up(extra, now):
                chosen.append(Target(extra, None))
                added += 1
            elif extra != host.id:
                self._hints.keep(token, key, extra, state)
        return added

    def acked(self, src: str, req_id: int) -> list[Effect]:
        op = self._ops.get(req_id)
        if not isinstance(op, WriteOp):
            return []
        effects: list[Effect] = []
        if op.quorum.ack(src):
            effects.append(op.reply_to.answer(WriteOk(op.client_context, op.quorum.acks)))
        if op.quorum.done():
            del self._ops[req_id]
        return effects

    def timed_out(self, op: WriteOp) -> list[Effect]:
        self._hints.hint_unacked(key_token(op.key), op.key, op.quorum, op.state)
        if op.quorum.answered:
            return []
        return [op.reply_to.answer(QuorumFailed(op.quorum.acks, op.quorum.required))]

    # --- forwarded writes ---------------------------------------------------------------

    def on_forward(self, src: str, msg: ForwardWrite, now: float) -> list[Effect]:
        key = (src, msg.req_id)
        if key in self._seen_forwards:
            return []  # a duplicated frame: coordinating it again adds a sibling
        seen = self._seen_forwards
        seen[key] = now + FORWARD_MEMORY
        while len(seen) > FORWARD_MEMORY_MAX:
            del seen[next(iter(seen))]  # insertion order: the oldest first
        reply_to = ReplyTo(node=src, node_req=msg.req_id)
        if not self._host.joined:
            return [reply_to.answer(QuorumFailed(0, msg.request.w or self._host.w,
                                                 "node has not joined"))]
        return self.start(msg.request, reply_to, now, forwarded=True)

    def on_forward_reply(self, src: str, msg: ForwardReply, now: float) -> list[Effect]:
        op = self._ops.get(msg.req_id)
        # Only the node the write went to may answer it: another member guessing the id
        # must not tell the client a write succeeded that never happened.
        if isinstance(op, ForwardOp) and src == op.replica:
            del self._ops[msg.req_id]
            return [op.reply_to.answer(msg.response)]
        return []

    def forward_timed_out(self, op: ForwardOp) -> list[Effect]:
        return [op.reply_to.answer(QuorumFailed(0, self._host.w, "coordinator did not answer"))]

    def forget_forwards(self, now: float) -> None:
        """Forget forwarded ids older than `FORWARD_MEMORY`.

        Ids are inserted in order of expiry while `now` grows, so the expired ones are
        a prefix of the dict: this stops at the first live one. (A clock stepped back
        only delays pruning; `FORWARD_MEMORY_MAX` still bounds the count.)
        """
        seen = self._seen_forwards
        while seen:
            first = next(iter(seen))
            if seen[first] > now:
                return
            del seen[first]


def _apply(req: WriteRequest, base: Versions | None, actor: Actor, now_ms: int,
           expires: int | None) -> tuple[Versions, Context] | LimitExceeded:
    """The state `req` forms over `base`: a value written, or a data-type update."""
    if req.op is None:
        return update(base, req.context, actor, req.value, req.content_type, now_ms,
                      expires)
    formed = req.op.apply(base, actor, now_ms)
    if isinstance(formed, OverLimit):
        return LimitExceeded(formed.what, formed.size, formed.limit)
    return formed


def _refusal(state: Versions, client_ctx: Context) -> Rejected | RecordTooLarge | None:
    """Why a write's outcome may not be kept (`storage.limits`), or None."""
    problem = context_problem(state.context) or context_problem(client_ctx)
    if problem is not None:
        return Rejected(problem)
    size = record_too_large(state)
    if size is not None:
        return RecordTooLarge(size, MAX_RECORD_BYTES)
    return None
