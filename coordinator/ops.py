"""Requests in flight: the entries of the op table and whom each one answers.

The op table maps a request id to the write, read, key listing or forwarded write
waiting for answers under it. An entry leaves the table when its request is complete
(every target answered) or its timer fires, whichever comes first; answers that arrive
later find nothing and are dropped. Hint deliveries are not in this table: `coordinator.hints`
keeps its own, so an ack is routed by the table that holds its id. Neither are the
scans of a listing: each has an id of its own, which `coordinator.listing` maps to its
`ListOp` while the scan is awaited (the op's own id is the one its timer carries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.effects import Effect, Reply, Send
from coordinator.listing_messages import Position
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


@dataclass(slots=True)
class ListScan:
    """One ReplicaScan of a listing: the range ``(after, end]`` asked of `nodes`.

    `replies` holds each asked node's checked answer: its entries and the position it
    reached (the range's end when it read it all), until R of them are in.
    """

    after: Position
    end: int
    nodes: tuple[str, ...]
    limit: int
    replies: dict[str, tuple[tuple[tuple[bytes, Versions], ...], Position]] = field(
        default_factory=dict)


@dataclass(slots=True)
class ListOp:
    """A page of a key listing (`coordinator.listing`).

    Every key up to `frontier` is settled: the live ones are in `keys` (user keys, in
    order; `last` is the position of the last one). `queue` holds the ids of the scans
    in flight, in ring order, each the ring's next stretch after the one before it;
    `planned` is where the next one starts (`coordinator.listing.END` once the walk
    reached the end of the ring).
    """

    req_id: int
    bucket: str
    kind: str
    limit: int
    r: int
    reply_to: ReplyTo
    start: Position
    frontier: Position
    planned: Position
    keys: list[bytes] = field(default_factory=list)
    last: Position | None = None
    queue: list[int] = field(default_factory=list)
    scans: dict[int, ListScan] = field(default_factory=dict)
    issued: int = 0  # scans sent for this page, continuations included
    width: int = 1  # how many scans may be in flight at once: grows while pages are short
    blocked: int | None = None  # up primaries where the walk stopped short of R


OpTable = dict[int, WriteOp | ReadOp | ForwardOp | ListOp]
