"""The durability gate: which effects may leave now, and which wait for a group commit.

Job: the one statement of the group-commit rule for every driver of a node (the asyncio
runtime, the simulation, the in-memory test network). The node stages writes in its
engine and returns effects; an effect marked `durable` (a replica's acknowledgement, a
coordinator's answer to a write) must not be carried out before every write staged
before it is on disk. The gate is pure bookkeeping: it never commits and never waits.
A driver uses it in three steps:

- `admit(effect)` for each effect, in order: True means carry it out now, False that the
  gate holds it;
- `start()` after a batch of effects (and after each commit): when no batch is in flight
  and the engine has staged writes, it seals them (`engine.seal()`) and returns the
  batch for the driver to commit (in a worker thread, or after a simulated latency);
- `committed()` once the driver has committed that batch: the effects released by it,
  for the driver to carry out.

Invariants:
- An effect marked durable leaves the gate only after every write staged before it was
  admitted is committed: held while writes are staged (for the next batch, which holds
  them) or while a batch is in flight (for that batch, which holds every earlier write).
- Released effects keep the order in which they were admitted; effects held for the
  batch in flight are released before those held for the batch after it.
- At most one batch is in flight; `committed` releases exactly the effects held for it.
- Effects not marked durable are never held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coordinator.effects import Effect
    from storage.engine import Batch, Engine


class DurabilityGate:
    __slots__ = ("engine", "batch", "_staged", "_inflight")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.batch: Batch | None = None  # sealed, its commit not yet reported done
        self._staged: list[Effect] = []  # waiting for writes not yet sealed
        self._inflight: list[Effect] = []  # waiting for `batch`

    def admit(self, effect: Effect) -> bool:
        """True: carry `effect` out now. False: it is held until `committed` releases it."""
        if not effect.durable:
            return True
        if self.engine.has_staged():
            # Writes staged before it are not sealed yet: it waits for the next batch.
            self._staged.append(effect)
            return False
        if self.batch is not None:
            # Every earlier write is in the batch in flight (or committed before it).
            self._inflight.append(effect)
            return False
        return True

    def start(self) -> Batch | None:
        """Seal the staged writes into a batch to commit, if none is in flight and there
        are some; the effects held for them now wait for that batch. None otherwise."""
        if self.batch is not None or not self.engine.has_staged():
            return None
        self.batch = self.engine.seal()
        self._inflight, self._staged = self._staged, []
        return self.batch

    def committed(self) -> list[Effect]:
        """The driver committed the batch in flight: the effects it releases, in order."""
        assert self.batch is not None, "no batch in flight"
        released, self._inflight, self.batch = self._inflight, [], None
        return released

    def holding(self) -> int:
        """How many effects wait for a commit."""
        return len(self._staged) + len(self._inflight)
