"""What a node's subsystems see of the node that hosts them (pure).

Job: name, as a `typing.Protocol`, the part of a node that range transfers
(`ringkv.core.transfer`) and anti-entropy (`ringkv.core.anti_entropy`) read and call,
so that they depend on this small interface rather than on `ringkv.core.node`, which
builds them. `Node` satisfies it structurally; a test can hand them anything else that
does.

Invariants:
- Only what those subsystems use is named here; adding a member widens what every host
  must provide, so a subsystem that needs more of the node says so here first.
- The rings, the replication factor and the membership are read afresh at every use:
  the node replaces its ring objects when membership changes, and subsystems compare
  them by identity to notice it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from random import Random

    from coordinator.effects import Effect
    from gossip.membership import Membership
    from ring.ring import Ring
    from ringkv.core.config import NodeConfig
    from storage.store import KeyStore
    from storage.versions import Versions


class NodeHost(Protocol):
    """The node as its transfers and anti-entropy see it."""

    @property
    def id(self) -> str:
        """This node's id."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def store(self) -> KeyStore:
        """The node's records and metadata (subsystems may set its change listener)."""

    @property
    def ring(self) -> Ring:
        """The current ring: who owns what now."""

    @property
    def pending(self) -> Ring:
        """The ring once every membership change in progress completes."""

    @property
    def n(self) -> int:
        """Replicas per key."""

    @property
    def members(self) -> Membership: ...

    @property
    def rng(self) -> Random:
        """The node's own seeded rng (never the global one)."""

    @property
    def resolve(self) -> Callable[[bytes, Versions], Versions]:
        """How a key's merged versions are reduced (last-write-wins keeps one sibling)."""

    def new_id(self) -> int:
        """A request id unused by this node in this life."""

    def is_up(self, node_id: str, now: float) -> bool:
        """Whether the failure detector holds `node_id` up at `now`."""

    def set_own_status(self, status: str, now: float) -> list[Effect]:
        """Change this node's membership status, spread it; the effects of doing so."""
