"""What request coordination asks of the node it runs in, and what every request
derives from it: its quorum size, its deadline and its targets.

The coordinator holds no membership, rings or clock of its own. It reads the node's
current state through `Host` at every call (rings are rebuilt and n/r/w learned from a
join reply while it runs), and it is handed `now` like the node is.

Invariants: the host's `new_id` is the one source of request ids of the node (ring
transfers draw from it too), so an id names one request, whatever table holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from coordinator.quorum import Target, choose_targets
from ring.ring import Ring
from storage.store import KeyStore
from storage.versions import Versions


class Settings(Protocol):
    @property
    def request_timeout_ms(self) -> int: ...

    @property
    def hint_replay_batch(self) -> int: ...

    @property
    def max_siblings(self) -> int: ...


class Host(Protocol):
    """The node as the coordinator sees it."""

    @property
    def id(self) -> str: ...

    @property
    def config(self) -> Settings: ...

    @property
    def store(self) -> KeyStore: ...

    @property
    def ring(self) -> Ring: ...

    @property
    def pending(self) -> Ring:
        """The ring once the ranges in transit have moved (`ring` when none are)."""

    @property
    def n(self) -> int: ...

    @property
    def r(self) -> int: ...

    @property
    def w(self) -> int: ...

    @property
    def joined(self) -> bool: ...

    @property
    def resolve(self) -> Callable[[bytes, Versions], Versions]:
        """Applied to every state the node forms for a key (last-write-wins keeps one
        sibling, in a bucket whose conflict mode is `lww`)."""

    def max_siblings_for(self, key: bytes) -> int:
        """The sibling bound of a value write to `key` (its bucket's, or the node's)."""

    def is_up(self, node: str, now: float) -> bool: ...

    def is_departing(self, node: str) -> bool:
        """True if `node` is leaving the cluster or has left it."""

    def new_id(self) -> int: ...


@dataclass(slots=True)
class Stats:
    """Counters the runtime exports as metrics; plain ints, no clock."""

    read_repairs: int = 0
    hints_delivered: int = 0
    hints_stored: int = 0
    forwarded: int = 0
    stale_replies: int = 0


def quorum_size(host: Host, asked: int | None, default: int) -> int | str:
    """The quorum a request asked for (or the default), or why it is out of range."""
    value = default if asked is None else asked
    if not 1 <= value <= host.n:
        return f"quorum {value} out of range 1..{host.n}"
    return value


def deadline(host: Host, timeout_ms: int | None, now: float) -> float:
    ms = host.config.request_timeout_ms if timeout_ms is None else timeout_ms
    return now + ms / 1000.0


def targets(host: Host, token: int, now: float) -> list[Target]:
    """The key's sloppy-quorum targets in the current ring (`choose_targets`)."""
    ring = host.ring
    return choose_targets(
        ring.preference_list(token, host.n),
        lambda: ring.extended_list(token),
        lambda node: host.is_up(node, now),
    )
