"""Failure detection: a member that has been silent too long is suspected down.

This is the simplest detector that makes sloppy quorum work: every message from a
peer counts as a heartbeat, and a peer silent for `timeout` seconds is down until it is
heard from again. It takes `now` from the caller and never reads a clock. A
phi-accrual or SWIM indirect-probe detector can replace it behind the same three
methods (`heard`, `is_up`, `silence`).
"""

from __future__ import annotations


class FailureDetector:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._last_heard: dict[str, float] = {}

    def heard(self, node_id: str, now: float) -> bool:
        """Record a sign of life; True when the node was down before it."""
        was_down = not self.is_up(node_id, now)
        self._last_heard[node_id] = now
        return was_down

    def watch(self, node_id: str, now: float) -> None:
        """Start watching a member, presuming it up until `timeout` of silence."""
        self._last_heard.setdefault(node_id, now)

    def forget(self, node_id: str) -> None:
        self._last_heard.pop(node_id, None)

    def is_up(self, node_id: str, now: float) -> bool:
        last = self._last_heard.get(node_id)
        return last is not None and now - last < self.timeout

    def silence(self, node_id: str, now: float) -> float | None:
        last = self._last_heard.get(node_id)
        return None if last is None else now - last
