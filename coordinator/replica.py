"""The replica side of the data path: apply a ReplicaPut, answer a ReplicaGet.

Invariants:
- A replica merges what it receives; it never overwrites. Merge is commutative,
  associative and idempotent, so duplicated, reordered or repeated messages are safe.
- A put for a primary this node stands in for (`hint_for` another node) is kept as a
  hint, never as this node's own record.
- The ack of a put is durable: it leaves only once the put is on disk. A repair
  (`REPAIR_ID`) is not acked at all.
- A get is answered from the record merged with any hints held for the key, so a
  fallback answers with what it stands in for. The answer is packed: with no hints for
  the key, the stored record's own bytes, neither decoded nor encoded again.
- A scan (`coordinator.listing`) is answered from this node's own records, never its
  hints, outlined (`coordinator.listing_messages.outline`). One scan reads at most
  `SCAN_BUDGET` records and its reply stops growing once its states pass `REPLY_BYTES`
  (estimated from above), so a reply is at most that plus one state: a state fits a
  quarter frame (`storage.limits`), and values are not sent.
"""

from __future__ import annotations

from typing import Final

from coordinator.effects import Effect, Send
from coordinator.hints import Hints
from coordinator.host import Host
from coordinator.listing_messages import ReplicaScan, ReplicaScanReply, outline
from coordinator.messages import REPAIR_ID, ReplicaGet, ReplicaGetReply, ReplicaPut, ReplicaPutAck
from ring.token import key_token
from storage.namespace import belongs
from storage.versions import Versions

SCAN_BUDGET: Final = 4096  # records one scan reads, matching or not
REPLY_BYTES: Final = 1 << 20  # a scan reply stops growing past this (estimated) size


def _outline_bytes(key: bytes, state: Versions) -> int:
    """An upper bound, give or take a few bytes, on the encoded size of an outlined
    entry: each context entry or sibling is its actor's id and at most four 9-byte
    integers, plus headers."""
    size = len(key) + 16
    for actor in state.context.vector:
        size += len(actor[0]) + 40
    for actor, _ in state.context.cloud:
        size += len(actor[0]) + 40
    for sibling in state.siblings:
        size += len(sibling.actor[0]) + 56
    return size


class Replica:
    def __init__(self, host: Host, hints: Hints) -> None:
        self._host = host
        self._hints = hints

    def on_put(self, src: str, msg: ReplicaPut, now: float) -> list[Effect]:
        host = self._host
        token = key_token(msg.key)
        if msg.hint_for is not None and msg.hint_for != host.id:
            self._hints.keep(token, msg.key, msg.hint_for, msg.versions)
        else:
            host.store.merge_record(token, msg.key, msg.versions, host.resolve)
        if msg.req_id == REPAIR_ID:
            return []
        return [Send(src, ReplicaPutAck(msg.req_id), durable=True)]

    def on_get(self, src: str, msg: ReplicaGet, now: float) -> list[Effect]:
        packed = self._host.store.read_packed(key_token(msg.key), msg.key)
        return [Send(src, ReplicaGetReply(msg.req_id, packed))]

    def on_scan(self, src: str, msg: ReplicaScan, now: float) -> list[Effect]:
        bucket, kind = msg.bucket, msg.kind
        found, reached = self._host.store.scan_matching(
            msg.after, msg.end, lambda key: belongs(key, bucket, kind), msg.limit,
            SCAN_BUDGET)
        entries: list[tuple[bytes, Versions]] = []
        size = 0
        for token, key, record in found:
            state = outline(record.versions)
            entries.append((key, state))
            size += _outline_bytes(key, state)
            if size > REPLY_BYTES and len(entries) < len(found):
                reached = (token, key)  # read on past it, but sends no further
                break
        return [Send(src, ReplicaScanReply(msg.req_id, tuple(entries), reached))]
