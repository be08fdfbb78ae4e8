"""The actors this node coordinates writes with: `(node id, generation, epoch)`.

Invariants:
- Dot uniqueness (rule 5 of `storage.versions`): a node coordinates a write for a key
  with the actor stored in its local record for that key if that actor was created in
  this process life, or else with a fresh epoch. Every start draws a new generation
  (an incarnation), so no actor of an earlier life is ever reused: a crash between a
  write's fan-out and its local commit leaves replicas holding a dot the node has
  forgotten, and a disk loss forgets every dot; neither can be issued again.
- Within a life, epochs only grow: a fresh actor is never one handed out before.
"""

from __future__ import annotations

from storage.record import Record
from storage.versions import Actor


class Actors:
    __slots__ = ("_epoch", "generation", "node_id")

    def __init__(self, node_id: str, generation: int) -> None:
        self.node_id = node_id
        self.generation = generation  # drawn by the node at every start
        self._epoch = 0

    def fresh(self) -> Actor:
        """An actor never used before, in this life or any other."""
        self._epoch += 1
        return (self.node_id, self.generation, self._epoch)

    def own(self, record: Record | None) -> Actor | None:
        """This node's actor for a key, if it was created in this process life."""
        if record is None or record.local_actor is None:
            return None
        return record.local_actor if record.local_actor[1] == self.generation else None
