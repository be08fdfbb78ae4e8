"""`DeadlineQueue`: one deadline per key, earliest first, memory bounded by keys."""

from __future__ import annotations

from storage.deadlines import SLACK, DeadlineQueue


def test_rescheduling_a_key_replaces_its_deadline() -> None:
    q: DeadlineQueue[str] = DeadlineQueue()
    for i in range(5000):
        q.set("k", 100.0 + i)
    assert q.scheduled() == 1
    assert len(q) <= 2 + SLACK
    assert q.pop_due(5000.0) is None
    assert q.pop_due(5099.0) == "k"
    assert q.pop_due(1e9) is None and q.scheduled() == 0


def test_due_keys_come_out_earliest_first_ties_in_set_order() -> None:
    q: DeadlineQueue[str] = DeadlineQueue()
    q.set("b", 5.0)
    q.set("a", 5.0)
    q.set("c", 1.0)
    q.set("d", 9.0)
    q.discard("d")
    out = []
    while (k := q.pop_due(10.0)) is not None:
        out.append(k)
    assert out == ["c", "b", "a"]


def test_many_keys_moved_many_times_stay_bounded() -> None:
    q: DeadlineQueue[int] = DeadlineQueue()
    for round_ in range(20):
        for key in range(100):
            q.set(key, float(round_ * 1000 + key))
    assert q.scheduled() == 100
    assert len(q) <= 2 * 100 + SLACK
    assert [q.pop_due(1e9) for _ in range(100)] == list(range(100))
