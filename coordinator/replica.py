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
"""

from __future__ import annotations

from coordinator.effects import Effect, Send
from coordinator.hints import Hints
from coordinator.host import Host
from coordinator.messages import REPAIR_ID, ReplicaGet, ReplicaGetReply, ReplicaPut, ReplicaPutAck
from ring.token import key_token


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
