"""Forwarded-write memory is bounded: a flood of distinct ids never outgrows the cap.

A coordinator remembers each forwarded write's (sender, id) to drop duplicate frames.
Ids from a flooding (or merely busy) forwarder are all distinct, so the memory must
evict the oldest entries at a fixed count rather than wait for them to age out.
"""

from __future__ import annotations

from coordinator import write as write_module
from coordinator.messages import ForwardWrite
from coordinator.requests import WriteRequest
from storage.versions import EMPTY_CONTEXT
from tests.unit.coordinator.fakes import NOW, coordinator, primaries, sends

KEY = b"k"


def test_a_flood_of_distinct_forwarded_ids_stays_under_the_cap(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(write_module, "FORWARD_MEMORY_MAX", 50, raising=False)
    coord, _ = coordinator(primaries(KEY)[0])
    req = WriteRequest(KEY, b"v", "text/plain", EMPTY_CONTEXT)
    for i in range(500):
        coord.receive("flooder", ForwardWrite(i, req), NOW)
    assert len(coord.writes._seen_forwards) <= 50
    # The newest ids are still remembered: a duplicate of the last one is dropped.
    assert coord.receive("flooder", ForwardWrite(499, req), NOW) == []
    # Pruning by age still works, and a forgotten id is coordinated again.
    coord.tick(NOW + write_module.FORWARD_MEMORY + 1)
    assert len(coord.writes._seen_forwards) == 0
    assert sends(coord.receive("flooder", ForwardWrite(499, req), NOW + 60))


def test_the_default_cap_is_finite() -> None:
    assert 0 < write_module.FORWARD_MEMORY_MAX <= 1 << 20
