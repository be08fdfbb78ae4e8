"""The request coordinator of one node: its op table, and the routing of client requests,
data-path messages, timers and ticks to the writes, reads, key listings, hints and
replica side.

The node hands it

    client_request(client_id, request, now) -> effects
    receive(src, message, now)              -> effects   (a data-path message)
    timer(key, now)                         -> effects
    tick(now)                               -> effects

(`handlers()` gives the node the message handlers by type id for its dispatch table).

Invariants:
- Every request id comes from the host's `new_id` and names one entry of one table:
  the op table (writes, reads, listings, forwarded writes), the hint deliveries in
  flight, or the scans of listings in flight (`coordinator.listing`). A ReplicaPutAck
  is a hint ack when its id names a delivery and a write ack otherwise.
- An op leaves the op table when it is complete or its timer fires; a timer whose op
  is gone does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordinator.actors import Actors
from coordinator.effects import Effect, Message, Reply
from coordinator.hints import Hints
from coordinator.host import Host, Stats
from coordinator.listing import Listing
from coordinator.listing_messages import ReplicaScan, ReplicaScanReply
from coordinator.messages import (
    ForwardReply,
    ForwardWrite,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutAck,
)
from coordinator.ops import ForwardOp, ListOp, OpTable, ReadOp, ReplyTo, WriteOp
from coordinator.read import Reads
from coordinator.replica import Replica
from coordinator.requests import ClientRequest, ListRequest, QuorumFailed, ReadRequest
from coordinator.write import Writes

Handler = Callable[[str, Any, float], list[Effect]]


class Coordinator:
    def __init__(self, host: Host, generation: int) -> None:
        self._host = host
        self.stats = Stats()
        self._ops: OpTable = {}
        self.hints = Hints(host, self.stats)
        self.writes = Writes(host, self._ops, Actors(host.id, generation), self.hints,
                             self.stats)
        self.reads = Reads(host, self._ops, self.stats)
        self.listing = Listing(host, self._ops)
        self.replica = Replica(host, self.hints)
        self._handlers: dict[int, Handler] = {
            ReplicaPut.TYPE: self.replica.on_put,
            ReplicaPutAck.TYPE: self._on_put_ack,
            ReplicaGet.TYPE: self.replica.on_get,
            ReplicaGetReply.TYPE: self.reads.on_reply,
            ForwardWrite.TYPE: self.writes.on_forward,
            ForwardReply.TYPE: self.writes.on_forward_reply,
            ReplicaScan.TYPE: self.replica.on_scan,
            ReplicaScanReply.TYPE: self.listing.on_reply,
        }

    def handlers(self) -> dict[int, Handler]:
        """The handler of each data-path message, by type id."""
        return dict(self._handlers)

    def in_flight(self) -> int:
        """Requests awaiting answers: ops and hint deliveries."""
        return len(self._ops) + len(self.hints.in_flight)

    def client_request(self, client_id: int, req: ClientRequest, now: float) -> list[Effect]:
        if not self._host.joined or not self._host.ring.nodes:
            return [Reply(client_id, QuorumFailed(0, 1, "node has not joined a cluster"))]
        reply_to = ReplyTo(client_id=client_id)
        if isinstance(req, ReadRequest):
            return self.reads.start(req, reply_to, now)
        if isinstance(req, ListRequest):
            return self.listing.start(req, reply_to, now)
        return self.writes.start(req, reply_to, now, forwarded=False)

    def receive(self, src: str, msg: Message, now: float) -> list[Effect]:
        handler = self._handlers.get(msg.TYPE)
        return handler(src, msg, now) if handler is not None else []

    def _on_put_ack(self, src: str, msg: ReplicaPutAck, now: float) -> list[Effect]:
        if self.hints.acked(src, msg.req_id):
            return []
        return self.writes.acked(src, msg.req_id)

    def timer(self, key: int, now: float) -> list[Effect]:
        op = self._ops.pop(key, None)
        if isinstance(op, WriteOp):
            return self.writes.timed_out(op)
        if isinstance(op, ReadOp):
            return self.reads.timed_out(op)
        if isinstance(op, ForwardOp):
            return self.writes.forward_timed_out(op)
        if isinstance(op, ListOp):
            return self.listing.timed_out(op)
        return []

    def tick(self, now: float) -> list[Effect]:
        effects = self.hints.replay(now)
        self.writes.forget_forwards(now)
        return effects
