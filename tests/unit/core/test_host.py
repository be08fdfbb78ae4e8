"""Transfers and anti-entropy need only the host interface (ringkv.core.host), not a
`Node`: both run here on a small stand-in host."""

from __future__ import annotations

import random

from antientropy.messages import AeNodes
from coordinator.effects import Effect, Send
from gossip.membership import Membership
from ring.ring import Ring
from ringkv.core.anti_entropy import AntiEntropy
from ringkv.core.config import fast_test_config
from ringkv.core.host import NodeHost
from ringkv.core.transfer import Transfers
from storage.memory import MemoryEngine
from storage.store import KeyStore
from storage.versions import lww_resolve

RING = Ring({"a": (1 << 60, 5 << 60), "b": (3 << 60, 7 << 60)})


class StandIn:
    def __init__(self, engine: MemoryEngine) -> None:
        self.id = "a"
        self.config = fast_test_config("a")
        self.store = KeyStore(engine)
        self.ring = RING
        self.pending = RING
        self.n = 2
        self.members = Membership()
        self.rng = random.Random(7)
        self.resolve = lambda key, state: lww_resolve(state)
        self.statuses: list[str] = []
        self._ids = 0

    def new_id(self) -> int:
        self._ids += 1
        return self._ids

    def is_up(self, node_id: str, now: float) -> bool:
        return True

    def set_own_status(self, status: str, now: float) -> list[Effect]:
        self.statuses.append(status)
        return []


def test_transfers_keep_their_held_ring_in_the_hosts_store() -> None:
    engine = MemoryEngine()
    host: NodeHost = StandIn(engine)
    transfers = Transfers(host)
    assert transfers.held is None
    transfers.hold(RING)
    assert transfers.ring_changed(0.0) == []  # held is pending: nothing to fetch
    again = Transfers(StandIn(engine))  # a restart reads it back
    assert again.held is not None and again.held.token_map() == RING.token_map()


def test_anti_entropy_exchanges_with_the_peers_its_host_names() -> None:
    host = StandIn(MemoryEngine())
    ae = AntiEntropy(host)
    assert ae.tick(0.0) == []  # trees are built; first exchanges are spread out
    interval = host.config.anti_entropy_interval
    sent = ae.tick(interval + 0.001)
    assert [type(e.msg) for e in sent if isinstance(e, Send)] == [AeNodes]
    assert [e.dst for e in sent if isinstance(e, Send)] == ["b"]
