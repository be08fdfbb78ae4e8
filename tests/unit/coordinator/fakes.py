"""A hand-driven host for `coordinator.coordinator.Coordinator`: no node, no network.

`FakeHost` is the smallest thing `coordinator.host.Host` describes: a five-node ring,
a memory store, failure detection and departures as plain sets the test sets, and a
counter for request ids. A test feeds a coordinator requests, messages, timers and
ticks by hand and asserts on the effects it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.coordinator import Coordinator
from coordinator.effects import Effect, Reply, Send, SetTimer
from coordinator.messages import ReplicaPut
from coordinator.quorum import Target
from ring.allocation import allocate_tokens, initial_tokens
from ring.ring import Ring
from ring.token import key_token
from storage.memory import MemoryEngine
from storage.store import KeyStore
from storage.versions import Versions

NODES = ("a", "b", "c", "d", "e")
NOW = 1000.0
TIMEOUT_MS = 1000


def ring_of(nodes: tuple[str, ...] = NODES) -> Ring:
    members: dict[str, tuple[int, ...]] = {}
    for node in nodes:
        members[node] = (allocate_tokens(members, node, 8, replicas=3) if members
                         else initial_tokens(node, 8))
    return Ring(members)


RING = ring_of()


def primaries(key: bytes, ring: Ring = RING) -> list[str]:
    return ring.preference_list(key_token(key), 3)


def fallbacks(key: bytes, ring: Ring = RING) -> list[str]:
    first = primaries(key, ring)
    return [x for x in ring.extended_list(key_token(key)) if x not in first]


@dataclass(frozen=True)
class Settings:
    request_timeout_ms: int = TIMEOUT_MS
    hint_replay_batch: int = 2
    max_siblings: int = 100


def _keep_all(key: bytes, versions: Versions) -> Versions:
    return versions


class FakeHost:
    def __init__(self, node_id: str, ring: Ring = RING, n: int = 3, r: int = 2,
                 w: int = 2) -> None:
        self.id = node_id
        self.config = Settings()
        self.store = KeyStore(MemoryEngine())
        self.ring = ring
        self.pending = ring
        self.n, self.r, self.w = n, r, w
        self.joined = True
        self.resolve = _keep_all
        self.max_siblings_for = lambda key: self.config.max_siblings
        self.down: set[str] = set()
        self.departing: set[str] = set()
        self._next_id = 100

    def is_up(self, node: str, now: float) -> bool:
        return node not in self.down

    def is_departing(self, node: str) -> bool:
        return node in self.departing

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id


def coordinator(node_id: str, generation: int = 7, **kw: object) -> tuple[Coordinator, FakeHost]:
    host = FakeHost(node_id, **kw)  # type: ignore[arg-type]
    return Coordinator(host, generation), host


def sends(effects: list[Effect]) -> list[Send]:
    return [e for e in effects if isinstance(e, Send)]


def replies(effects: list[Effect]) -> list[Reply]:
    return [e for e in effects if isinstance(e, Reply)]


def puts(effects: list[Effect]) -> list[tuple[str, ReplicaPut]]:
    """Every ReplicaPut sent, with its destination; nothing else may have been sent."""
    out = []
    for e in sends(effects):
        assert isinstance(e.msg, ReplicaPut), e
        out.append((e.dst, e.msg))
    return out


def timer_of(effects: list[Effect]) -> SetTimer:
    (timer,) = [e for e in effects if isinstance(e, SetTimer)]
    return timer


def targets_of(effects: list[Effect]) -> list[Target]:
    """The targets a write was sent to (the coordinator itself included)."""
    out = []
    for e in sends(effects):
        hint_for = getattr(e.msg, "hint_for", None)
        out.append(Target(e.dst, hint_for))
    return out
