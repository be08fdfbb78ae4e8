"""Read coordination: from a client's read to its answer, and the repair that follows.

A read asks every sloppy-quorum target of the key (`coordinator.host.targets`) and
answers once R of them replied: the merged state's live siblings (or NotFound), with a
staleness receipt naming the replicas that answered and those whose answer lacked
something the merged state has.

Invariants:
- Read repair runs once per read, after every target replied or at the deadline
  (with whatever replies came): each stale replica is sent the merged state as a
  fire-and-forget ReplicaPut (`REPAIR_ID`), to its primary's hint if it stands in
  for one.
- A read that timed out without R replies is answered QuorumFailed with the count.
- One ReplicaGet object goes to every target, so a driver that encodes a message once
  per object (the runtime does) encodes it once per read.
- Replies arrive packed; `ReadQuorum` decodes each distinct one once, and when all are
  the same bytes the answer skips merge and staleness (`coordinator.quorum`).
"""

from __future__ import annotations

from coordinator.effects import Effect, Send, SetTimer
from coordinator.host import Host, Stats, deadline, quorum_size, targets
from coordinator.messages import REPAIR_ID, ReplicaGet, ReplicaGetReply, ReplicaPut
from coordinator.ops import OpTable, ReadOp, ReplyTo
from coordinator.quorum import ReadQuorum
from coordinator.requests import (
    ClientResponse,
    NotFound,
    QuorumFailed,
    ReadOk,
    ReadRequest,
    Rejected,
)
from ring.token import key_token


class Reads:
    def __init__(self, host: Host, ops: OpTable, stats: Stats) -> None:
        self._host = host
        self._ops = ops
        self._stats = stats

    def start(self, req: ReadRequest, reply_to: ReplyTo, now: float) -> list[Effect]:
        host = self._host
        r = quorum_size(host, req.r, host.r)
        if isinstance(r, str):
            return [reply_to.answer(Rejected(r))]
        chosen = targets(host, key_token(req.key), now)
        if len(chosen) < r:
            return [reply_to.answer(QuorumFailed(0, r, "too few replicas reachable"))]
        req_id = host.new_id()
        self._ops[req_id] = ReadOp(req.key, ReadQuorum(r, tuple(chosen)), reply_to)
        effects: list[Effect] = [SetTimer(deadline(host, req.timeout_ms, now), req_id)]
        get = ReplicaGet(req_id, req.key)
        effects.extend(Send(t.node, get) for t in chosen)
        return effects

    def on_reply(self, src: str, msg: ReplicaGetReply, now: float) -> list[Effect]:
        op = self._ops.get(msg.req_id)
        if not isinstance(op, ReadOp):
            return []
        effects: list[Effect] = []
        if op.quorum.reply(src, msg.versions):
            effects.append(op.reply_to.answer(self._response(op, now)))
        if op.quorum.complete():
            del self._ops[msg.req_id]
            effects.extend(self._repair(op))
        return effects

    def timed_out(self, op: ReadOp) -> list[Effect]:
        effects: list[Effect] = []
        if not op.quorum.answered:
            op.quorum.answered = True
            effects.append(op.reply_to.answer(QuorumFailed(len(op.quorum.replies),
                                                           op.quorum.required)))
        if op.quorum.replies:
            effects.extend(self._repair(op))
        return effects

    def _response(self, op: ReadOp, now: float) -> ClientResponse:
        merged = self._host.resolve(op.key, op.quorum.merged())
        stale = tuple(op.quorum.stale(merged))
        replied = tuple(sorted(op.quorum.replies))
        self._stats.stale_replies += len(stale)
        live = merged.live(int(now * 1000))
        if not live:
            return NotFound(merged.context if merged.context else None, replied, stale)
        return ReadOk(tuple(live), merged.context, replied, stale)

    def _repair(self, op: ReadOp) -> list[Effect]:
        if op.repaired:
            return []
        op.repaired = True
        merged = op.quorum.merged()
        effects: list[Effect] = []
        for target in op.quorum.repairs():
            self._stats.read_repairs += 1
            effects.append(Send(target.node, ReplicaPut(REPAIR_ID, op.key, merged,
                                                        target.hint_for)))
        return effects
