"""The durability gate (ringkv.core.gate): a durable effect leaves only once every write
staged before it is committed, released effects keep their order, and at most one
batch is in flight."""

from __future__ import annotations

import random

import pytest

from coordinator.effects import Effect, SetTimer
from ringkv.core.gate import DurabilityGate
from storage.memory import MemoryEngine


class Disk:
    """A real engine, and a count of the writes staged and committed through it."""

    def __init__(self) -> None:
        self.engine = MemoryEngine()
        self.staged = 0
        self.committed = 0

    def write(self) -> None:
        self.staged += 1
        self.engine.put("data", b"k%08d" % self.staged, b"v")  # a new key each time

    def commit(self, gate: DurabilityGate) -> list[Effect]:
        batch = gate.batch
        assert batch is not None
        self.engine.commit(batch)
        self.committed += len(batch)
        return gate.committed()


def durable(key: int) -> SetTimer:
    return SetTimer(0.0, key, durable=True)


def plain(key: int) -> SetTimer:
    return SetTimer(0.0, key)


def test_effects_not_marked_durable_are_never_held() -> None:
    disk = Disk()
    gate = DurabilityGate(disk.engine)
    disk.write()
    assert gate.admit(plain(1))
    assert gate.start() is not None
    assert gate.admit(plain(2))  # a batch in flight changes nothing for them
    assert gate.holding() == 0


def test_a_durable_effect_passes_when_nothing_is_staged_or_in_flight() -> None:
    disk = Disk()
    gate = DurabilityGate(disk.engine)
    assert gate.admit(durable(1))
    assert gate.start() is None  # nothing to commit


def test_a_durable_effect_waits_for_the_batch_holding_earlier_writes() -> None:
    disk = Disk()
    gate = DurabilityGate(disk.engine)
    disk.write()
    assert not gate.admit(durable(1))
    assert not gate.admit(durable(2))
    batch = gate.start()
    assert batch is not None and len(batch) == 1
    assert not disk.engine.has_staged()
    assert gate.holding() == 2
    assert disk.commit(gate) == [durable(1), durable(2)]
    assert gate.holding() == 0 and gate.batch is None


def test_a_durable_effect_admitted_during_a_commit_waits_for_it() -> None:
    # Nothing new is staged, but the write it answers may be in the batch in flight.
    disk = Disk()
    gate = DurabilityGate(disk.engine)
    disk.write()
    assert gate.start() is not None
    assert not gate.admit(durable(1))
    assert disk.commit(gate) == [durable(1)]


def test_writes_staged_during_a_commit_hold_their_effects_for_the_next_batch() -> None:
    disk = Disk()
    gate = DurabilityGate(disk.engine)
    disk.write()
    assert not gate.admit(durable(1))
    assert gate.start() is not None
    assert not gate.admit(durable(2))  # held for the batch in flight
    disk.write()
    assert not gate.admit(durable(3))  # its write is not even sealed yet
    assert gate.start() is None  # one batch in flight at a time
    assert disk.commit(gate) == [durable(1), durable(2)]  # not 3: its write is staged
    assert gate.holding() == 1
    assert gate.start() is not None
    assert disk.commit(gate) == [durable(3)]


def test_committed_without_a_batch_in_flight_is_a_driver_bug() -> None:
    gate = DurabilityGate(MemoryEngine())
    with pytest.raises(AssertionError):
        gate.committed()


@pytest.mark.parametrize("seed", range(30))
def test_random_drivers_never_release_early_nor_reorder(seed: int) -> None:
    """Any interleaving of writes, effects, batch starts and commits: each durable
    effect is carried out only once every write staged before it is committed, and
    durable effects are carried out in the order they were admitted."""
    rng = random.Random(seed)
    disk = Disk()
    gate = DurabilityGate(disk.engine)
    needs: dict[int, int] = {}  # effect key -> writes staged when it was admitted
    carried: list[int] = []

    def carry_out(effect: Effect) -> None:
        assert isinstance(effect, SetTimer)
        assert disk.committed >= needs[effect.key], "released before its writes committed"
        carried.append(effect.key)

    for key in range(400):
        step = rng.random()
        if step < 0.3:
            disk.write()
        elif step < 0.6:
            needs[key] = disk.staged
            effect = durable(key)
            if gate.admit(effect):
                carry_out(effect)
        elif step < 0.8:
            gate.start()
        elif gate.batch is not None:
            for released in disk.commit(gate):
                carry_out(released)
    while gate.start() is not None or gate.batch is not None:
        for released in disk.commit(gate):
            carry_out(released)
    assert carried == sorted(needs), "durable effects left out of order, or not at all"
    assert disk.committed == disk.staged and gate.holding() == 0
