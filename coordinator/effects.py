"""What the pure node asks its driver (the asyncio runtime or the simulation) to do.

An effect marked `durable` may only be carried out once every write the node staged in
its engine so far is committed (group commit): replicas acknowledge only what is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from coordinator.requests import ClientResponse


class Message(Protocol):
    """What `Send` carries: a message with a stable wire type id (`ringkv.core.wire`)."""

    TYPE: ClassVar[int]


@dataclass(frozen=True, slots=True)
class Send:
    dst: str  # a node id, or "seed:host:port" before the seed's id is known
    msg: Message
    durable: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    client_id: int
    response: ClientResponse
    durable: bool = False


@dataclass(frozen=True, slots=True)
class SetTimer:
    at: float
    key: int
    durable: bool = False


Effect = Send | Reply | SetTimer
