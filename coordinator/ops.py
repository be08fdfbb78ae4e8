"""Requests in flight: the entries of the op table and whom each one answers.

The op table maps a request id to the write, read or forwarded write waiting for
answers under it. An entry leaves the table when its request is complete (every target
answered) or its timer fires, whichever comes first; answers that arrive later find
nothing and are dropped. Hint deliveries are not in this table: `coordinator.hints`
keeps its own, so an ack is routed by the table that holds its id.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.effects import Effect, Reply, Send
from coordinator.messages import ForwardReply
from coordinator.quorum import ReadQuorum, WriteQuorum
from coordinator.requests import ClientResponse
from storage.versions import Context, Versions


@dataclass(slots=True)
class ReplyTo:
    client_id: int | None = None  # a local client
    node: str | None = None  # or a node that forwarded the request
    node_req: int = 0

    def answer(self, response: ClientResponse, durable: bool = False) -> Effect:
        if self.node is not None:
            return Send(self.node, ForwardReply(self.node_req, response), durable)
        assert self.client_id is not None
        return Reply(self.client_id, response, durable)


@dataclass(slots=True)
class WriteOp:
    key: bytes
    quorum: WriteQuorum
    client_context: Context
    reply_to: ReplyTo
    state: Versions  # what the replicas were sent; hinted to those that never acked


@dataclass(slots=True)
class ReadOp:
    key: bytes
    quorum: ReadQuorum
    reply_to: ReplyTo
    repaired: bool = False


@dataclass(slots=True)
class ForwardOp:
    reply_to: ReplyTo
    replica: str  # the node coordinating it: the only one whose reply is taken


OpTable = dict[int, WriteOp | ReadOp | ForwardOp]
