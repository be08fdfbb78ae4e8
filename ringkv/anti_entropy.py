"""Merkle-tree anti-entropy between the replicas of each token range (issue 5).

The node calls `tick(now)` on every tick once it has joined and hands every message of
this subsystem to `receive`; both return effects like the node's own handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ringkv.effects import Effect
from ringkv.wire import Message

if TYPE_CHECKING:
    from ringkv.node import Node


class AntiEntropy:
    MESSAGE_TYPES: frozenset[int] = frozenset()

    def __init__(self, node: Node) -> None:
        self.node = node

    def tick(self, now: float) -> list[Effect]:
        return []

    def receive(self, src: str, msg: Message, now: float) -> list[Effect]:
        return []
